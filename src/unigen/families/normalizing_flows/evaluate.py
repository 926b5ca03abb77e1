"""Measurements and pictures of a trained flow: bits/dim on held-out images, KL to the exact toy2d density, samples
at several temperatures, the data -> latent -> data picture and the learned density beside the true one.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from unigen.data.images import to_uint8
from unigen.data.toy2d import toy2d_log_density
from unigen.families.normalizing_flows.dequantize import bits_per_dim, dequantize, quantize, reduce_bits
from unigen.families.normalizing_flows.model import FlowModel
from unigen.plot import figure, save_image_grid
from unigen.train.progress import work_progress

TEMPERATURES = (0.5, 0.7, 1.0)


def dequantized(x: Tensor, n_bits: int, generator: torch.Generator | None = None) -> Tensor:
    """Images in [-1, 1] (unigen's convention, 8-bit levels) -> y = (k + u) / 2^n_bits in [0, 1)."""
    return dequantize(reduce_bits(to_uint8(x), n_bits), 2 ** n_bits, generator=generator)


def to_pixels(y: Tensor, n_bits: int) -> Tensor:
    """Model-space y in [0, 1) -> images in [-1, 1] on the n_bits grid (for pictures)."""
    n_bins = 2 ** n_bits
    return quantize(y, n_bins).float() / (n_bins - 1) * 2 - 1


def _mean_se(v: Tensor) -> tuple[float, float]:
    v = v.double()
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0


@torch.no_grad()
def image_bits_per_dim(net: FlowModel, x: Tensor, n_bits: int, batch: int = 500, seed: int = 0) -> dict:
    """Bits/dim of held-out images x (N, C, H, W) in [-1, 1]: one dequantisation draw per image from `seed`.
    `nll_nats` is the per-image upper bound on -log P(k) in nats; `log_likelihood_unit_cube_nats` the continuous
    log p(y) of y in [0, 1)^D, the unit NICE's paper reports (Table 2: 1980.50 on MNIST)."""
    g = torch.Generator().manual_seed(seed)
    n_bins, D = 2 ** n_bits, net.dims
    bar, parts = work_progress(len(x), "bits/dim", "image"), []
    for i in range(0, len(x), batch):
        parts.append(net.log_prob(dequantized(x[i:i + batch], n_bits, g)))
        bar.update(min(i + batch, len(x)))
    bar.close()
    log_p = torch.cat(parts)
    bpd, bpd_se = _mean_se(bits_per_dim(log_p, D, n_bins))
    return {"bits_per_dim": bpd, "bits_per_dim_se": bpd_se, "nll_nats": bpd * D * math.log(2),
            "log_likelihood_unit_cube_nats": float(log_p.double().mean()), "n_eval": len(x), "n_bits": n_bits,
            "uniform_bits_per_dim": float(n_bits)}


@torch.no_grad()
def toy_kl(net: FlowModel, x: Tensor, toy: str, has_density: bool) -> dict:
    """KL(p || q) = E_p[log p(x) - log q(x)] in nats on held-out samples x ~ p, with its standard error; the test
    NLL -E_p log q(x) and, where p is known, its entropy H(p) = -E_p log p (the best NLL any model can reach)."""
    log_q = net.log_prob(x)
    nll, nll_se = _mean_se(-log_q)
    out = {"nll": nll, "nll_se": nll_se, "n_eval": len(x)}
    if has_density:
        log_p = toy2d_log_density(toy, x).to(log_q.dtype)
        kl, kl_se = _mean_se(log_p - log_q)
        out.update(kl=kl, kl_se=kl_se, entropy=float(-log_p.double().mean()))
    return out


@torch.no_grad()
def temperature_pictures(net: FlowModel, n_bits: int, out_dir: Path, n: int = 50, seed: int = 0) -> list[Path]:
    """samples_T0.5.png, samples_T0.7.png, samples_T1.0.png: the same noise seed at each temperature."""
    paths = []
    for T in TEMPERATURES:
        y = net.sample(n, T, torch.Generator().manual_seed(seed))
        paths.append(save_image_grid(to_pixels(y, n_bits), Path(out_dir) / f"samples_T{T}.png", nrow=10))
    return paths


@torch.no_grad()
def reconstruction_picture(net: FlowModel, x: Tensor, n_bits: int, path: Path) -> float:
    """Three rows: test images, their latent z = f(x) (flattened latents shown in the image's shape, z / 3 clipped),
    and f^-1(z). Returns the largest |f^-1(f(y)) - y| on the dequantised inputs."""
    y = dequantized(x, n_bits, torch.Generator().manual_seed(0))
    z, _ = net(y)
    y_back = net.inverse(z)
    latent = (z / 3).clamp(-1, 1).view(len(x), *net.shape) if z[0].numel() == net.dims else None
    rows = [to_pixels(y, n_bits), *([latent] if latent is not None else []), to_pixels(y_back, n_bits)]
    save_image_grid(torch.cat(rows), path, nrow=len(x))
    return float((y_back - y).abs().max())


@torch.no_grad()
def density_picture(net: FlowModel, toy: str, has_density: bool, path: Path, lim: float = 3.5, n: int = 200) -> Path:
    """exp(log q) on an n x n grid over [-lim, lim]^2, beside the exact density where there is one."""
    ticks = torch.linspace(-lim, lim, n)
    yy, xx = torch.meshgrid(ticks.flip(0), ticks, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)                                 # (n^2, 2)
    panels = [net.log_prob(pts).exp().view(n, n)]
    if has_density:
        panels.append(toy2d_log_density(toy, pts).exp().view(n, n))
    top = max(float(p.max()) for p in panels)
    gap = torch.full((n, n // 20), float("nan"))
    img = torch.cat([t for p in panels for t in (p, gap)][:-1], 1)
    with figure(path, size=(5 * len(panels), 5)) as ax:
        ax.imshow(img.numpy(), cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        ax.set_title(f"{toy}: learned density" + (" | exact density" if has_density else ""))
        ax.axis("off")
    return Path(path)

