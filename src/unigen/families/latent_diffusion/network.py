"""The latent-diffusion network: a frozen first-stage autoencoder, a text encoder tau(y) and a cross-attention UNet
eps(z_t, t, tau(y)) (Rombach et al. 2022, Sec. 3.2-3.3, Eq. 3), and `generate`: prompts -> latents -> images.

The autoencoder comes from a trained run of the autoencoders family (`model.autoencoder`, a run directory): its
config and weights are read when the model is built, checked against this run's data (same image shape, a
convolutional KL autoencoder), frozen, and kept in this run's weights as well. The diffusion model sees
scale_factor * z with z sampled from the posterior q(z|x) (LDM's `get_first_stage_encoding`); scale_factor is
`model.scale_factor`, or when that is 0, 1 / std of the first training batch's latents (LDM's `scale_by_std`), kept
in the `scale_factor` buffer (saved with the weights; computed on each process from its own first batch and then
equal everywhere, since buffers are broadcast from rank 0 before every step).

The diffusion math is continuous_diffusion's: the method's loss, `make_denoiser` with the schedule and
parameterization, its samplers and grids. The default is Stable Diffusion's: epsilon prediction on the
"scaled linear" DDPM schedule (betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2) sampled by DDIM on diffusers'
grid (leading spacing, steps_offset 1, set_alpha_to_one=False).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from unigen.config import Config
from unigen.data.shapes import WORDS, encode_words
from unigen.errors import UserError
from unigen.families.autoencoders.network import AutoencoderConfig, build_autoencoder
from unigen.families.continuous_diffusion.network import C_NOISE_SCALE, resolved, sigmas_for
from unigen.families.continuous_diffusion.precond import make_denoiser
from unigen.families.continuous_diffusion.samplers import SAMPLERS
from unigen.families.continuous_diffusion.schedules import get_schedule
from unigen.families.latent_diffusion.conditioning import std_scale_factor, text_guided
from unigen.io import read_json
from unigen.models.text_encoder import TextEncoder, TextEncoderConfig
from unigen.models.unet import UNet, unet_config
from unigen.task import unwrap as _unwrap
from unigen.train.checkpoint import load_run_weights


@dataclass
class LatentDiffusionConfig:
    autoencoder: str = "runs/shapes-kl"   # run directory of a trained KL autoencoder (relative to the working dir),
                                    # or "none": diffusion in pixel space (the paper's LDM-1 baseline, f = 1)
    scale_factor: float = 0.0       # latent scale; 0 = 1 / std of the first batch's latents (LDM's scale_by_std)
    method: str = "ddpm"            # ddpm | edm | fm: continuous_diffusion's training loss
    schedule: str = ""              # "" = the method's; ddpm: ddpm-scaled-linear (SD) | ddpm-linear | ddpm-cosine
    parameterization: str = ""      # "" = the method's (ddpm: eps)
    grid: str = "diffusers"         # sampling grid ("" = the schedule's, karras, logsnr, diffusers = SD's DDIM grid)
    sigma_data: float = 0.5         # edm only
    P_mean: float = -1.2            # edm only
    P_std: float = 1.2
    t_dist: str = "uniform"         # fm only
    width: int = 64                 # UNet base width
    mults: str = "1,2"              # UNet channel multipliers per level
    depth: int = 2                  # UNet residual blocks per level
    attn: str = "8,4"               # feature-map sides with a SpatialTransformer (the middle always has one)
    head_dim: int = 32              # attention head width
    text_dim: int = 64              # text encoder width (the UNet's context_dim)
    text_depth: int = 2             # text encoder blocks
    p_uncond: float = 0.1           # caption dropout for classifier-free guidance (LDM / SD: 10%)


def _ints(text: str, key: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"model.{key}={text!r} must be comma-separated integers") from None


def check(m: LatentDiffusionConfig) -> tuple[str, str]:
    """(schedule, parameterization) of the config; UserError for a value out of range."""
    if m.method not in ("ddpm", "edm", "fm"):
        raise UserError(f"model.method={m.method!r} is not one of: ddpm, edm, fm")
    if not 0 <= m.p_uncond < 1:
        raise UserError(f"model.p_uncond must be in [0, 1), got {m.p_uncond}")
    if m.scale_factor < 0 or m.sigma_data <= 0 or m.P_std <= 0:
        raise UserError("model.scale_factor must be >= 0 (0 = from the data), sigma_data and P_std > 0")
    if min(m.width, m.depth, m.head_dim, m.text_dim, m.text_depth) < 1:
        raise UserError("model.width, depth, head_dim, text_dim and text_depth must be >= 1")
    if m.method == "ddpm" and not m.schedule:             # Stable Diffusion's schedule, not the method's first
        m = dataclasses.replace(m, schedule="ddpm-scaled-linear")      # (ddpm-linear) as before
    return resolved(m)


class PixelSpace(nn.Module):
    """The identity first stage (f = 1): Rombach et al. 2022, Sec. 4.1's LDM-1, i.e. diffusion on the pixels."""

    def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(image_shape)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, torch.full_like(x, -math.inf)                       # a point mass: z = x

    def decode(self, z: Tensor) -> Tensor:
        return z


def load_autoencoder(run_dir: str, image_shape: tuple[int, ...]) -> nn.Module:
    """The trained KL autoencoder of run `run_dir` (weights with its EMA laid over), frozen; a UserError when the
    run is missing, is not a KL autoencoder run, or was trained on images of another shape. "none": PixelSpace."""
    if run_dir == "none":
        return PixelSpace()
    path = Path(run_dir)
    if not (path / "config.json").exists():
        raise UserError(f"model.autoencoder={run_dir!r} is not a run directory (no config.json); train one first, "
                        f"e.g. `unigen train shapes-kl --out {run_dir}`")
    d = read_json(path / "config.json", "autoencoder run config")
    if not isinstance(d, dict) or d.get("task") != "autoencoders" or d.get("model", {}).get("kind") != "kl":
        raise UserError(f"model.autoencoder={run_dir!r} is not a KL autoencoder run (task 'autoencoders', kind 'kl')")
    ae_cfg = Config.from_dict(d, AutoencoderConfig, source=str(path / "config.json")).model
    info = read_json(path / "data_info.json", "autoencoder run data_info")
    ae_shape = tuple(info.get("shape", ())) if isinstance(info, dict) else ()
    if ae_shape != tuple(image_shape):
        raise UserError(f"model.autoencoder={run_dir!r} was trained on images of shape {ae_shape}, this run's data "
                        f"has shape {tuple(image_shape)}")
    ae = build_autoencoder(ae_cfg, {"shape": ae_shape})
    if not (path / "model.safetensors").exists():
        raise UserError(f"model.autoencoder={run_dir!r} has no trained weights yet (no model.safetensors)")
    load_run_weights(ae, path)
    return ae.eval().requires_grad_(False)


class TextUNet(nn.Module):
    """The trained part: text encoder tau and the UNet eps(z_t, c_noise, context) (what gets the EMA)."""

    def __init__(self, text: TextEncoder, unet: UNet):
        super().__init__()
        self.text, self.unet = text, unet


class LatentDiffusionNet(nn.Module):
    """First stage (frozen) + TextUNet. `forward(z_t, c_noise, context, context_mask)` is the UNet on latents with
    the schedule's noise label scaled as continuous_diffusion does (`C_NOISE_SCALE`)."""

    def __init__(self, m: LatentDiffusionConfig, autoencoder: nn.Module, image_shape: tuple[int, ...], word_len: int):
        super().__init__()
        schedule_name, self.parameterization = check(m)
        self.config = m
        self.schedule = get_schedule(schedule_name)
        self.c_noise_scale = C_NOISE_SCALE[schedule_name]
        self.image_shape = tuple(image_shape)
        self.latent_shape = tuple(autoencoder.latent_shape(self.image_shape))
        self.autoencoder = autoencoder
        c, h, _ = self.latent_shape
        text = TextEncoder(TextEncoderConfig(vocab_size=len(WORDS), max_len=word_len, dim=m.text_dim,
                                             depth=m.text_depth, heads=max(1, m.text_dim // 32)))
        unet = UNet(unet_config("tiny", channels=c, image_size=h, base_width=m.width, mults=_ints(m.mults, "mults"),
                                num_res_blocks=m.depth, attn_resolutions=_ints(m.attn, "attn"),
                                head_dim=min(m.head_dim, m.width), norm_groups=min(32, m.width // 4) or 1,
                                context_dim=m.text_dim))
        self.model = TextUNet(text, unet)
        self.register_buffer("scale_factor", torch.tensor(float(m.scale_factor)))
        self.register_buffer("null_ids", torch.tensor(encode_words("", word_len)), persistent=False)

    def forward(self, z_t: Tensor, c_noise: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        return self.model.unet(z_t, c_noise * self.c_noise_scale, context=context, context_mask=context_mask)

    @torch.no_grad()
    def latents(self, x: Tensor) -> Tensor:
        """scale_factor * z, z ~ q(z|x) (sets scale_factor from these latents first if it is still 0)."""
        mu, logvar = (t.float() for t in self.autoencoder.posterior(x))   # float32 also under bf16 autocast
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)           # (B, c, h, w)
        if float(self.scale_factor) == 0:
            self.scale_factor.fill_(std_scale_factor(z))
        return z * self.scale_factor

    def decode(self, z: Tensor) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] of scaled latents."""
        return self.autoencoder.decode(z / self.scale_factor).clamp(-1, 1)


def unwrap(model: nn.Module) -> LatentDiffusionNet:
    return _unwrap(model, LatentDiffusionNet, "a latent diffusion model")


@torch.no_grad()
def generate(model: nn.Module, ids: Tensor, *, sampler: str, steps: int, guidance: float, generator: torch.Generator,
             batch_size: int = 500) -> Tensor:
    """Images (n, C, H, W) for word ids (n, S): z = sigma_0 noise, SAMPLERS[sampler] with text guidance on the
    model's grid, the result taken to the native latent scale (a grid ending above sigma = 0, as SD's DDIM, ends
    at x_native = x / sqrt(1 + sigma_last^2)), then decoded."""
    net = unwrap(model)
    sigmas = sigmas_for(net, steps)
    D = make_denoiser(net, net.parameterization, net.schedule, net.config.sigma_data)
    device = net.scale_factor.device
    c_null, m_null = net.model.text(net.null_ids[None].to(device))     # (1, S, E), (1, S)
    out = []
    for i in range(0, len(ids), batch_size):
        c, mask = net.model.text(ids[i:i + batch_size].to(device))
        x = torch.randn((len(c), *net.latent_shape), generator=generator, device=device)
        x = x if math.isinf(sigmas[0]) else float(sigmas[0]) * x
        z = SAMPLERS[sampler](text_guided(D, c, mask, c_null, m_null, guidance), x, sigmas, generator=generator)
        z = z * net.schedule.scale(sigmas[-1].to(z.dtype)) if sigmas[-1] > 0 else z
        out.append(net.decode(z).cpu())
    return torch.cat(out)
