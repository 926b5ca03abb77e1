"""Training losses for continuous diffusion and flow matching: pure functions returning a per-example loss (B,).

Each loss draws its noise (and noise levels) from torch's global RNG unless a `generator` is given, and returns
the squared error averaged over the non-batch dimensions, one value per example; the caller takes `.mean()`.
Conditioning: pass labels `y` and `p_uncond` > 0 to replace a random fraction of them by the null id
`num_classes` (label dropout for classifier-free guidance, Ho & Salimans 2022, Alg. 1).

Notation
    x0          clean data (B, ...)
    eps         standard normal noise, same shape
    sigma       EDM noise level; x = x0 + sigma eps (scale-free), x_native = s x
    t           the schedule's time (DDPM index, continuous t, or flow time)
    alpha_bar   DDPM cumulative product; SNR = alpha_bar / (1 - alpha_bar) = 1 / sigma^2
    lambda      loss weight (EDM Eq. 8)
    D           a denoiser D(x, sigma, **cond) (see precond.py); `net` is a raw network net(x_in, c_noise, **cond)
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from unigen.families.continuous_diffusion.precond import append_dims
from unigen.families.continuous_diffusion.schedules import VE, ContinuousVP, DiscreteVP, SubVP
from unigen.errors import UserError


def _randn(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def _rand(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


def _per_example(sq: Tensor) -> Tensor:
    return sq.flatten(1).mean(1)                                      # (B,)


def drop_labels(y: Tensor, p_uncond: float, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """Ho & Salimans 2022, Alg. 1 line 3: with probability p_uncond replace a label by the null id `num_classes`."""
    if not 0 <= p_uncond <= 1:
        raise UserError(f"p_uncond must be in [0, 1], got {p_uncond}")
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p_uncond   # (B,)
    return torch.where(drop, torch.full_like(y, num_classes), y)


def _cond(y: Tensor | None, p_uncond: float, num_classes: int | None, generator) -> dict:
    if y is None:
        return {}
    if p_uncond > 0:
        if num_classes is None:
            raise UserError("label dropout (p_uncond > 0) needs num_classes to know the null label id")
        y = drop_labels(y, p_uncond, num_classes, generator)
    return {"y": y}


def edm_weight(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM Table 1: lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def edm_loss(D: Callable[..., Tensor], x0: Tensor, *, P_mean: float = -1.2, P_std: float = 1.2,
             sigma_data: float = 0.5, y: Tensor | None = None, p_uncond: float = 0.0,
             num_classes: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Karras et al. 2022, Eq. 8, Table 1: lambda(sigma) ||D(x0 + sigma eps; sigma) - x0||^2 with
    ln sigma ~ N(P_mean, P_std^2)."""
    B = x0.shape[0]
    sigma = (_randn((B,), x0, generator) * P_std + P_mean).exp()     # (B,)
    n = _randn(x0.shape, x0, generator) * append_dims(sigma, x0)     # (B, ...)
    D_x = D(x0 + n, sigma, **_cond(y, p_uncond, num_classes, generator))
    return edm_weight(sigma, sigma_data) * _per_example((D_x - x0) ** 2)


def min_snr_weight(snr: Tensor, gamma: float, target: str) -> Tensor:
    """Hang et al. 2023, Eq. 9 and Sec. 3.4: min(SNR, gamma) in x0 units, divided by SNR for eps and SNR + 1 for v."""
    clipped = snr.clamp(max=gamma)
    return {"x0": clipped, "eps": clipped / snr, "v": clipped / (snr + 1)}[target]


def ddpm_loss(net: Callable[..., Tensor], x0: Tensor, schedule: DiscreteVP, *, target: str = "eps",
              min_snr_gamma: float | None = None, y: Tensor | None = None, p_uncond: float = 0.0,
              num_classes: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Ho et al. 2020, Eq. 14 (L_simple): ||eps - eps_theta(sqrt(a_t) x0 + sqrt(1 - a_t) eps, t)||^2, t ~ U{0..T-1}.

    `target` "x0" or "v" (v = sqrt(a_t) eps - sqrt(1 - a_t) x0, Salimans & Ho 2022) regresses that quantity
    instead; `min_snr_gamma` weights the squared error by Hang et al. 2023's min-SNR-gamma rule for the target.
    The network is called as net(x_t, t) with the integer level t as a float (DDPM's c_noise).
    """
    if not isinstance(schedule, DiscreteVP):
        raise UserError(f"ddpm_loss needs a discrete DDPM schedule, got {type(schedule).__name__}")
    if target not in ("eps", "x0", "v"):
        raise UserError(f"unknown DDPM target {target!r}; choose eps, x0 or v")
    B = x0.shape[0]
    t = torch.randint(0, schedule.T, (B,), generator=generator, device=x0.device)     # (B,)
    a = append_dims(schedule.alpha_bar.to(x0.device)[t].to(x0.dtype), x0)            # (B, 1, ..., 1)
    eps = _randn(x0.shape, x0, generator)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps                        # (B, ...)
    F = net(x_t, t.to(x0.dtype), **_cond(y, p_uncond, num_classes, generator))
    goal = {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[target]
    loss = _per_example((F - goal) ** 2)
    if min_snr_gamma is not None:
        loss = min_snr_weight((a / (1 - a)).flatten(), min_snr_gamma, target) * loss
    return loss


def flow_matching_loss(net: Callable[..., Tensor], x0: Tensor, *, t_dist: str = "uniform", loc: float = 0.0,
                       scale: float = 1.0, y: Tensor | None = None, p_uncond: float = 0.0,
                       num_classes: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Lipman et al. 2023, Eq. 23 / Liu et al. 2023, Eq. 1: ||v_theta(x_t, t) - (eps - x0)||^2, x_t = (1-t) x0 + t eps.

    t ~ U(0, 1) ("uniform") or t = sigmoid(u), u ~ N(loc, scale^2) ("logit-normal", Esser et al. 2024, Eq. 19).
    The network is called as net(x_t, t).
    """
    B = x0.shape[0]
    if t_dist == "uniform":
        t = _rand((B,), x0, generator)                                # (B,)
    elif t_dist == "logit-normal":
        t = torch.sigmoid(loc + scale * _randn((B,), x0, generator))  # (B,)
    else:
        raise UserError(f"unknown flow-matching time distribution {t_dist!r}; choose uniform or logit-normal")
    eps = _randn(x0.shape, x0, generator)
    tb = append_dims(t, x0)
    x_t = (1 - tb) * x0 + tb * eps                                    # (B, ...)
    v = net(x_t, t, **_cond(y, p_uncond, num_classes, generator))
    return _per_example((v - (eps - x0)) ** 2)


def dsm_loss(net: Callable[..., Tensor], x0: Tensor, schedule: ContinuousVP | SubVP | VE, *, eps_t: float = 1e-5,
             y: Tensor | None = None, p_uncond: float = 0.0, num_classes: int | None = None,
             generator: torch.Generator | None = None, parameterization: str = "score") -> Tensor:
    """Song et al. 2021, Eq. 7 with lambda(t) = sigma_n(t)^2: ||sigma_n s_theta(x_n, t) + eps||^2, t ~ U(eps_t, 1).

    In native variables x_n = s(t) (x0 + sigma(t) eps), whose conditional score is -eps / sigma_n, sigma_n = s sigma.
    The network is called as net(x_n, schedule.c_noise(sigma)) and outputs the score s_theta ("score") or
    sigma_n s_theta ("sigma-score", EDM's VE c_out = +sigma; the same loss, ||F + eps||^2).
    """
    if parameterization not in ("score", "sigma-score"):
        raise UserError(f"dsm_loss trains a score or sigma-score network, got {parameterization!r}")
    if not isinstance(schedule, (ContinuousVP, SubVP, VE)):
        raise UserError(f"dsm_loss needs the continuous VP, sub-VP or VE schedule, got {type(schedule).__name__}")
    B = x0.shape[0]
    t = eps_t + (1 - eps_t) * _rand((B,), x0, generator)             # (B,)
    sigma = schedule.sigma(t)                                         # (B,)
    sig = append_dims(sigma, x0)
    s = schedule.scale(sig)                                           # (B, 1, ..., 1)
    eps = _randn(x0.shape, x0, generator)
    F = net(s * (x0 + sig * eps), schedule.c_noise(sigma), **_cond(y, p_uncond, num_classes, generator))
    sigma_score = F if parameterization == "sigma-score" else s * sig * F
    return _per_example((sigma_score + eps) ** 2)
