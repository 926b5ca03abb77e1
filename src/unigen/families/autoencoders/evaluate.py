"""Measurements and pictures of a trained autoencoder, on held-out (test split) images.

    psnr            10 log10(1 / MSE) per image on [0, 1] pixels, reconstructions clamped to [-1, 1], then averaged
    code stats      VQ: perplexity exp(H) of the code histogram and the fraction of codes used, on the test images
    fd              MNIST: Frechet distance between unigen.metrics.features' CNN features of the reconstructions (or
                    of samples) and of the test images; other datasets: fd_pixels on raw pixels
    vae_bounds      the VAE's -ELBO and -IWAE-K in nats per image and bits/dim, K from 1 up to model.iwae_k
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from unigen.families.autoencoders.gaussian import (bits_per_dim, iwae_bound, log_normal, log_standard_normal,
                                                   kl_standard_normal, reparameterize)
from unigen.families.autoencoders.losses import log_likelihood
from unigen.families.autoencoders.quantize import perplexity
from unigen.metrics import sample_quality as metrics
from unigen.metrics.features import ensure_feature_net, mnist_features
from unigen.plot import save_image_grid


@torch.no_grad()
def reconstruct(net: nn.Module, x: Tensor, batch: int = 250) -> Tensor:
    """net.decode(net.encode(x)) in batches, clamped to [-1, 1]."""
    return torch.cat([net.decode(net.encode(x[i:i + batch])).clamp(-1, 1) for i in range(0, len(x), batch)])


def psnr(x: Tensor, x_hat: Tensor) -> Tensor:
    """Per-image PSNR in dB (N,) of images in [-1, 1] (peak 1 on the [0, 1] scale)."""
    mse = ((x_hat.clamp(-1, 1) - x) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def frechet(x: Tensor, ref: Tensor) -> dict[str, float]:
    """{"fd": ...} on the MNIST feature net for (N, 1, 28, 28) images, else {"fd_pixels": ...}."""
    if tuple(x.shape[1:]) == (1, 28, 28):
        net = ensure_feature_net()
        return {"fd": float(metrics.frechet_distance_features(mnist_features(net, x), mnist_features(net, ref)))}
    return {"fd_pixels": float(metrics.frechet_distance_features(x.flatten(1).double(), ref.flatten(1).double()))}


def binarize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Stochastic binarisation of [-1, 1] images: b ~ Bernoulli((x + 1) / 2) (the dynamically binarised MNIST)."""
    return torch.bernoulli(((x + 1) / 2).clamp(0, 1), generator=generator)


def vae_inputs(x: Tensor, likelihood: str, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(target of p(x|z), encoder input in [-1, 1]): the 8-bit image twice, or its binarisation b and 2 b - 1."""
    if likelihood == "logistic":
        return x, x
    b = binarize(x, generator)
    return b, 2 * b - 1


@torch.no_grad()
def log_weights(net: nn.Module, target: Tensor, x_in: Tensor, K: int) -> tuple[Tensor, Tensor, Tensor]:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) with z_k ~ q(z|x), and log p(x|z_k), both (K, B); the
    closed-form KL (B,)."""
    mu, logvar = net.posterior(x_in)
    lw, lpx = [], []
    for _ in range(K):
        z = reparameterize(mu, logvar)
        lpx.append(log_likelihood(target, net.decoder_params(z), net.likelihood))
        lw.append(lpx[-1] + log_standard_normal(z) - log_normal(z, mu, logvar))
    return torch.stack(lw), torch.stack(lpx), kl_standard_normal(mu, logvar)


@torch.no_grad()
def vae_bounds(net: nn.Module, x: Tensor, K: int, seed: int = 0, batch: int = 250) -> dict[str, float]:
    """-ELBO (analytic KL, K-sample average of log p(x|z)) and -IWAE-k for k = 1, 8, ..., K, per image in nats and
    bits/dim with standard errors; binarisation (bernoulli) and z draws from `seed`."""
    g = torch.Generator().manual_seed(seed)
    ks = sorted({k for k in (1, 8, 64, K) if k <= K})
    elbo, iwae = [], {k: [] for k in ks}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(x), batch):
            target, x_in = vae_inputs(x[i:i + batch], net.likelihood, g)
            lw, lpx, kl = log_weights(net, target, x_in, K)
            elbo.append(lpx.mean(0) - kl)
            for k in ks:
                iwae[k].append(iwae_bound(lw[:k]))
    out = {**_nats_bits("nelbo", -torch.cat(elbo), net.dims)}
    for k in ks:
        out.update(_nats_bits(f"niwae_{k}", -torch.cat(iwae[k]), net.dims))
    out["bits_per_dim"], out["bits_per_dim_se"] = out[f"niwae_{K}_bits_per_dim"], out[f"niwae_{K}_bits_per_dim_se"]
    return {**out, "iwae_k": K, "n_eval": len(x)}


def _nats_bits(name: str, nll: Tensor, dims: int) -> dict[str, float]:
    nll = nll.double()
    se = float(nll.std() / math.sqrt(len(nll))) if len(nll) > 1 else 0.0
    return {f"{name}_nats": float(nll.mean()), f"{name}_bits_per_dim": float(bits_per_dim(nll.mean(), dims)),
            f"{name}_bits_per_dim_se": se / (dims * math.log(2))}


@torch.no_grad()
def code_statistics(net: nn.Module, x: Tensor, batch: int = 250) -> dict[str, float]:
    """Code perplexity and the fraction of the codebook used over all latent positions of x (the perplexity
    depends on how many positions are pooled: here every position of every image of x)."""
    k = torch.cat([net.codes(x[i:i + batch]) for i in range(0, len(x), batch)])
    ppl, used = perplexity(k, net.quantize.K)
    return {"code_perplexity": ppl, "code_usage": used, "codebook_size": net.quantize.K}


@torch.no_grad()
def prior_bits(prior: nn.Module, token_nll, batch: dict[str, Tensor], size: int = 250, seed: int = 0) -> dict:
    """-log p(codes) of the test images under the prior (AR: exact; masked: one-t NELBO per image), in nats per
    image and in bits per image dimension (the code stream's rate; the decoder is deterministic, so this is not a
    likelihood of the pixels), beside the uniform code distribution's h w log2 K bits."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nll = torch.cat([token_nll({k: v[i:i + size] for k, v in batch.items()}).double().sum(1)
                         for i in range(0, len(batch["x"]), size)])
    D, L = batch["x"][0].numel(), prior.grid[0] * prior.grid[1]
    return {"prior_nll_nats": float(nll.mean()), "code_bits_per_dim": float(nll.mean() / (D * math.log(2))),
            "code_bits_per_dim_se": float(nll.std() / math.sqrt(len(nll)) / (D * math.log(2))),
            "uniform_code_bits_per_dim": L * math.log2(prior.K) / D, "n_eval": len(nll)}


@torch.no_grad()
def pictures(net: nn.Module, x: Tensor, out_dir: Path, samples: Tensor | None = None) -> dict[str, str]:
    """reconstructions.png (pairs of rows: test images, their reconstructions) and samples.png when given."""
    out_dir = Path(out_dir)
    n = min(len(x), 10)
    x_hat = reconstruct(net, x)
    rows = [t for j in range(0, len(x) - len(x) % n, n) for t in (x[j:j + n], x_hat[j:j + n])]
    files = {"reconstructions": str(save_image_grid(torch.cat(rows), out_dir / "reconstructions.png", nrow=n))}
    if samples is not None:
        files["image"] = str(save_image_grid(samples.clamp(-1, 1), out_dir / "samples.png", nrow=10))
    return files
