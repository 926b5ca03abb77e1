"""The model config of the autoencoder family and the networks built from it (the family's stable API).

    kind="kl"   LDM's KL-regularised autoencoder (Rombach et al. 2022, Sec. 3 and App. G; SD's AutoencoderKL in
                miniature): conv Encoder -> 1x1 quant_conv -> (mu, logvar) of a (latent_channels, H/f, W/f) latent,
                1x1 post_quant_conv -> conv Decoder; f = 2^(len(channels) - 1)
    kind="vq"   VQ-VAE (van den Oord et al. 2017) / VQGAN's first stage (Esser et al. 2021) in the same conv layout:
                Encoder -> 1x1 quant_conv -> nearest code of a `codebook_size` x `code_dim` codebook ->
                1x1 post_quant_conv -> Decoder (module names as diffusers' `VQModel`)
    kind="vae"  Kingma & Welling's VAE: MLP encoder -> (mu, logvar) of a `latent_dim` vector, MLP decoder -> the
                parameters of p(x|z) (discretised logistic on 8-bit pixels, or Bernoulli on binarised pixels)

    net = build_autoencoder(cfg.model, data_info)
    z = net.encode(x)              # KL: the posterior mean (B, C, h, w); VQ: the quantised latents; VAE: (B, d)
    x_hat = net.decode(z)          # images in [-1, 1] (B, C, H, W)
    net.latent_shape((C, H, W))    # (latent_channels, H / f, W / f); UserError when f does not divide H, W
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unigen.errors import UserError
from unigen.models.text import TEXT_SIZES, TextTransformer, text_config
from unigen.families.autoencoders.adversarial import PatchDiscriminator
from unigen.families.autoencoders.blocks import Decoder, Encoder
from unigen.families.autoencoders.gaussian import split_moments
from unigen.families.autoencoders.quantize import VectorQuantizer

KINDS = ("kl", "vq", "vae")
LIKELIHOODS = ("logistic", "bernoulli")


@dataclass
class AutoencoderConfig:
    kind: str = "kl"                            # kl | vq | vae
    # conv autoencoders (kl)
    channels: tuple[int, ...] = (32, 64, 64)    # width per level; f = 2^(len - 1) (LDM's ch * ch_mult)
    layers: int = 1                             # ResnetBlocks per encoder level (decoder: layers + 1)
    groups: int = 16                            # GroupNorm groups (must divide every width)
    attention: bool = True                      # self-attention in the mid blocks
    latent_channels: int = 4                    # channels of the latent z
    kl_weight: float = 1e-6                     # weight of the summed KL (LDM's kl_weight)
    rec_loss: str = "l1"                        # l1 | l2 reconstruction (kl: summed per image; vq: mean)
    # vector quantisation (vq)
    codebook_size: int = 512                    # K codes
    code_dim: int = 0                           # D of each code (0 = latent_channels; diffusers' vq_embed_dim)
    beta: float = 0.25                          # commitment weight
    ema: bool = False                           # EMA codebook (App. A.1) instead of the codebook loss
    codebook_decay: float = 0.99                # EMA decay gamma
    codebook_eps: float = 1e-5                  # Laplace smoothing of the EMA cluster sizes
    restart: float = 0.0                        # restart codes whose usage EMA (assignments per batch) < this (0 = off)
    # VQGAN (vq with disc_weight > 0)
    disc_weight: float = 0.0                    # weight of the adaptive-weighted GAN term (taming: 0.8; 0 = no GAN)
    disc_start: int = 0                         # step from which the discriminator trains and the GAN term is on
    disc_channels: int = 64                     # ndf of the patch discriminator
    disc_layers: int = 3                        # stride-2 layers of the patch discriminator
    perceptual_weight: float = 0.0              # weight of the perceptual term (MNIST: our feature CNN, see task.py)
    codebook_weight: float = 1.0                # weight of the codebook + commitment losses in VQGAN's objective
    # the VAE (vae)
    hidden: int = 512                           # width of the two hidden layers of encoder and decoder MLPs
    latent_dim: int = 32                        # dimension of z
    likelihood: str = "logistic"                # logistic (discretised, 8-bit pixels) | bernoulli (binarised)
    iwae_k: int = 64                            # importance samples K of the IWAE bound in eval


def check(m: AutoencoderConfig) -> None:
    """UserError for a value out of range."""
    if m.kind not in KINDS:
        raise UserError(f"model.kind={m.kind!r} is not one of: {', '.join(KINDS)}")
    if not m.channels or any(c < 1 for c in m.channels):
        raise UserError(f"model.channels must be positive widths, got {m.channels}")
    bad = [c for c in m.channels if m.groups < 1 or c % m.groups]
    if bad:
        raise UserError(f"model.groups={m.groups} must divide every width of model.channels={m.channels}")
    for name in ("layers", "latent_channels", "hidden", "latent_dim", "iwae_k", "codebook_size", "disc_channels",
                 "disc_layers"):
        if getattr(m, name) < 1:
            raise UserError(f"model.{name} must be >= 1, got {getattr(m, name)}")
    if m.kl_weight < 0:
        raise UserError(f"model.kl_weight must be >= 0, got {m.kl_weight}")
    if m.code_dim < 0 or m.beta < 0 or m.restart < 0 or m.codebook_eps < 0:
        raise UserError(f"model.code_dim, beta, restart and codebook_eps must be >= 0, got {m.code_dim}, {m.beta}, "
                        f"{m.restart}, {m.codebook_eps}")
    if min(m.disc_weight, m.disc_start, m.perceptual_weight, m.codebook_weight) < 0:
        raise UserError("model.disc_weight, disc_start, perceptual_weight and codebook_weight must be >= 0")
    if (m.disc_weight > 0 or m.perceptual_weight > 0) and m.kind != "vq":
        raise UserError(f"model.disc_weight / perceptual_weight are VQGAN terms: they need model.kind=vq, got {m.kind}")
    if not 0 <= m.codebook_decay < 1:
        raise UserError(f"model.codebook_decay must be in [0, 1), got {m.codebook_decay}")
    if m.rec_loss not in ("l1", "l2"):
        raise UserError(f"model.rec_loss={m.rec_loss!r} is not one of: l1, l2")
    if m.likelihood not in LIKELIHOODS:
        raise UserError(f"model.likelihood={m.likelihood!r} is not one of: {', '.join(LIKELIHOODS)}")


def _conv_latent_shape(f: int, c_latent: int, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(image_shape) != 3:
        raise UserError(f"a convolutional autoencoder needs images (C, H, W), got examples of shape {tuple(image_shape)}")
    _, H, W = image_shape
    if H % f or W % f:
        raise UserError(f"image size {H}x{W} is not divisible by the autoencoder's downsampling factor f={f} "
                        f"(len(model.channels) - 1 = {int(math.log2(f))} halvings); change data.image_size or "
                        "model.channels")
    return c_latent, H // f, W // f


class KLAutoencoder(nn.Module):
    """Rombach et al. 2022's KL-regularised autoencoder; module names as diffusers' `AutoencoderKL`."""

    def __init__(self, m: AutoencoderConfig, image_channels: int):
        super().__init__()
        c = m.latent_channels
        self.encoder = Encoder(image_channels, 2 * c, m.channels, m.layers, m.groups, m.attention)
        self.quant_conv = nn.Conv2d(2 * c, 2 * c, 1)
        self.post_quant_conv = nn.Conv2d(c, c, 1)
        self.decoder = Decoder(c, image_channels, m.channels, m.layers, m.groups, m.attention)
        self.factor = 2 ** (len(m.channels) - 1)
        self.latent_channels = c

    def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
        return _conv_latent_shape(self.factor, self.latent_channels, image_shape)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x) = N(mu, diag(e^logvar)): mu, logvar (B, latent_channels, H/f, W/f)."""
        self.latent_shape(tuple(x.shape[1:]))
        return split_moments(self.quant_conv(self.encoder(x)))

    def encode(self, x: Tensor) -> Tensor:
        """The posterior mean (what latent diffusion trains on, before its scale factor)."""
        return self.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


class VQAutoencoder(nn.Module):
    """The VQ-VAE / VQGAN autoencoder; module names as diffusers' `VQModel` (whose `encode` stops before the
    quantiser: our `encode_continuous`)."""

    def __init__(self, m: AutoencoderConfig, image_channels: int):
        super().__init__()
        c, d = m.latent_channels, m.code_dim or m.latent_channels
        self.encoder = Encoder(image_channels, c, m.channels, m.layers, m.groups, m.attention)
        self.quant_conv = nn.Conv2d(c, d, 1)
        self.quantize = VectorQuantizer(m.codebook_size, d, ema=m.ema)
        self.post_quant_conv = nn.Conv2d(d, c, 1)
        self.decoder = Decoder(c, image_channels, m.channels, m.layers, m.groups, m.attention)
        self.factor = 2 ** (len(m.channels) - 1)
        self.code_dim = d
        if m.disc_weight > 0:               # VQGAN: trained by its own objective, not part of the autoencoder
            self.discriminator = PatchDiscriminator(image_channels, m.disc_channels, m.disc_layers)

    def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
        return _conv_latent_shape(self.factor, self.code_dim, image_shape)

    def encode_continuous(self, x: Tensor) -> Tensor:
        """z_e (B, D, H/f, W/f) before quantisation."""
        self.latent_shape(tuple(x.shape[1:]))
        return self.quant_conv(self.encoder(x))

    def codes(self, x: Tensor) -> Tensor:
        """Code indices (B, H/f, W/f)."""
        return self.quantize.quantize(self.encode_continuous(x))[1]

    def encode(self, x: Tensor) -> Tensor:
        """The quantised latents z_q = e[k] (B, D, H/f, W/f)."""
        return self.quantize.quantize(self.encode_continuous(x))[0]

    def decode(self, z_q: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    def decode_codes(self, k: Tensor) -> Tensor:
        return self.decode(self.quantize.lookup(k))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, d_out))


class VAE(nn.Module):
    """Kingma & Welling's VAE with MLP encoder q(z|x) and decoder p(x|z) over flattened images."""

    def __init__(self, m: AutoencoderConfig, image_shape: tuple[int, ...]):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.dims = math.prod(self.image_shape)
        self.likelihood = m.likelihood
        self.latent_dim = m.latent_dim
        self.encoder = _mlp(self.dims, m.hidden, 2 * m.latent_dim)
        self.decoder = _mlp(m.latent_dim, m.hidden, self.dims * (2 if m.likelihood == "logistic" else 1))

    def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int]:
        if tuple(image_shape) != self.image_shape:
            raise UserError(f"this VAE models images {self.image_shape}, got {tuple(image_shape)}")
        return (self.latent_dim,)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """mu, logvar (B, latent_dim) of q(z|x) for images x (B, C, H, W) in [-1, 1]."""
        self.latent_shape(tuple(x.shape[1:]))
        return split_moments(self.encoder(x.flatten(1)))

    def decoder_params(self, z: Tensor) -> Tensor:
        """logistic: (B, 2, C, H, W) mean and log-scale; bernoulli: (B, 1, C, H, W) logits."""
        return self.decoder(z).view(len(z), -1, *self.image_shape)

    def encode(self, x: Tensor) -> Tensor:
        return self.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """The mean of p(x|z) mapped to [-1, 1] (logistic: its location; Bernoulli: 2 sigmoid(logits) - 1)."""
        p = self.decoder_params(z)
        return p[:, 0].clamp(-1, 1) if self.likelihood == "logistic" else 2 * torch.sigmoid(p[:, 0]) - 1

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def build_autoencoder(m: AutoencoderConfig, data_info: dict) -> nn.Module:
    """The network of `m` for the dataset described by `data_info` (its "shape"); UserError for bad settings or an
    image size the downsampling factor does not divide."""
    check(m)
    shape = tuple(data_info["shape"])
    if m.kind == "vae":
        return VAE(m, shape)
    net = (VQAutoencoder if m.kind == "vq" else KLAutoencoder)(m, shape[0])
    net.latent_shape(shape)
    return net


# ---- the prior over the code grid (taming's second stage) -------------------------------------------------------

PRIORS = ("ar", "mask")


@dataclass
class PriorConfig:
    first_stage: str = ""           # run directory of a trained kind=vq run (mnist-vqgan / mnist-vqvae)
    prior: str = "ar"               # ar (taming: SOS/class token + raster-order codes) | mask (masked diffusion)
    size: str = "small"             # transformer size (unigen.models.text sizes: tiny | small | base | medium)
    class_cond: bool = False        # condition on the class label (its token replaces SOS)
    top_k: int = 100                # AR sampling: keep the k most likely codes (0 = all)
    temperature: float = 1.0        # sampling temperature


def check_prior(m: PriorConfig) -> None:
    if m.prior not in PRIORS:
        raise UserError(f"model.prior={m.prior!r} is not one of: {', '.join(PRIORS)}")
    if m.size not in TEXT_SIZES:
        raise UserError(f"model.size={m.size!r} is not one of: {', '.join(TEXT_SIZES)}")
    if m.top_k < 0 or m.temperature <= 0:
        raise UserError(f"model.top_k must be >= 0 and model.temperature > 0, got {m.top_k}, {m.temperature}")
    if not m.first_stage:
        raise UserError("model.first_stage is empty: train a VQ autoencoder first (unigen train mnist-vqgan --out RUN) "
                        "and pass --model.first_stage=RUN")


class CodePrior(nn.Module):
    """A transformer over the (frozen) first stage's code grid, in raster order after one conditioning token.

    Vocabulary: codes 0..K-1, the mask token K, conditioning tokens K+1.. (one SOS, or one per class). `logits`
    gives -inf to every non-code token, so samplers can only draw codes."""

    def __init__(self, m: PriorConfig, first_stage: VQAutoencoder, grid: tuple[int, int], num_classes: int):
        super().__init__()
        self.first_stage = first_stage.requires_grad_(False)
        self.K = first_stage.quantize.K
        self.mask_id, self.grid, self.prior = self.K, tuple(grid), m.prior
        self.n_cond = num_classes if m.class_cond else 1
        vocab = self.K + 1 + self.n_cond
        self.transformer = TextTransformer(text_config(m.size, vocab, causal=m.prior == "ar",
                                                       time_cond=m.prior == "mask", max_len=grid[0] * grid[1] + 1))

    def cond_tokens(self, y: Tensor | None, n: int) -> Tensor:
        """(n, 1) conditioning tokens: SOS, or the class token of each label."""
        if self.n_cond == 1 or y is None:
            return torch.full((n, 1), self.K + 1, dtype=torch.long)
        return (self.K + 1 + y.long()).view(n, 1)

    def logits(self, ids: Tensor, t: Tensor | None = None, cache=None) -> Tensor:
        out = self.transformer(ids, t, cache=cache) if cache is not None else self.transformer(ids, t)
        out = out.clone()
        out[..., self.K + 1:] = float("-inf")
        if self.prior == "mask":
            return out
        out[..., self.mask_id] = float("-inf")
        return out

    def forward(self, ids: Tensor, cache=None) -> Tensor:        # the causal-model protocol of sample_ar
        return self.logits(ids, None, cache)

    def new_cache(self, batch: int, max_len: int | None = None):
        return self.transformer.new_cache(batch, max_len)
