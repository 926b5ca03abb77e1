"""Noise schedules of discrete diffusion: total noise sigma(t), its rate dsigma/dt, and time sampling.

Notation (Lou et al. 2024, SEDD; Sahoo et al. 2024, MDLM):
    t in [0, 1]     diffusion time (0 = data, 1 = fully noised)
    sigma(t)        total noise, the integral of the rate; dsigma = d sigma / dt
    alpha_t         exp(-sigma(t)): the probability that a token is still clean at time t
    1 - alpha_t     the move chance: absorbing process -> masked, uniform process -> resampled
    w(t)            -alpha'_t / (1 - alpha_t) = dsigma / (e^sigma - 1): the weight of MDLM's continuous-time NELBO

A schedule is a function `noise(t) -> (sigma, dsigma)`; configure one with `functools.partial`
(e.g. `partial(geometric, sigma_min=1e-4, sigma_max=20.0)`). Registry: `SCHEDULES` at the bottom.

Under the log-linear schedule 1 - alpha_t = (1 - eps) t, so w(t) = 1/t exactly: the MDLM loss is the
cross-entropy on masked tokens weighted by 1/t. BD3-LM's linear schedule is log-linear with eps = 0
(alpha_t = 1 - t), and its clipped variant draws mask rates t ~ U[beta, omega] (Arriola et al. 2025).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from unigen.errors import UserError


def loglinear(t: Tensor, eps: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Log-linear schedule (SEDD, MDLM): sigma(t) = -log(1 - (1 - eps) t), so 1 - alpha_t = (1 - eps) t."""
    sigma = -torch.log1p(-(1 - eps) * t)
    dsigma = (1 - eps) / (1 - (1 - eps) * t)
    return sigma, dsigma


def geometric(t: Tensor, sigma_min: float = 1e-4, sigma_max: float = 20.0) -> tuple[Tensor, Tensor]:
    """Geometric schedule (SEDD, after Song & Ermon 2019): sigma(t) = sigma_min^(1-t) sigma_max^t."""
    if not 0 < sigma_min < sigma_max:
        raise UserError(f"geometric schedule needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    sigma = sigma_min ** (1 - t) * sigma_max ** t
    dsigma = sigma * math.log(sigma_max / sigma_min)
    return sigma, dsigma


def alpha(sigma: Tensor) -> Tensor:
    """alpha_t = exp(-sigma(t)): the probability that a token is untouched at time t (MDLM forward process)."""
    return torch.exp(-sigma)


def move_chance(sigma: Tensor) -> Tensor:
    """1 - alpha_t = 1 - exp(-sigma), computed with expm1 (MDLM: q(x_t = mask | x_0))."""
    return -torch.expm1(-sigma)


def esigm1(sigma: Tensor) -> Tensor:
    """e^sigma - 1 (in SEDD's score-entropy ratio 1/(e^sigma - 1)): expm1 below sigma = 0.5, exp above, like SEDD's
    code."""
    return torch.where(sigma < 0.5, torch.expm1(sigma), torch.exp(sigma) - 1)


def nelbo_weight(sigma: Tensor, dsigma: Tensor) -> Tensor:
    """MDLM continuous-time NELBO weight -alpha'_t / (1 - alpha_t) = dsigma / (e^sigma - 1) (1/t for `loglinear`)."""
    return dsigma / esigm1(sigma)


def sample_t(n: int, *, eps: float = 1e-3, antithetic: bool = True, generator: torch.Generator | None = None,
             device=None) -> Tensor:
    """t ~ U[eps, 1], n values; antithetic = MDLM's low-discrepancy sampler (from Kingma et al. 2021, VDM).

    Antithetic: one uniform u, then t_i = (u / n + i / n) mod 1, so the batch covers [0, 1) evenly.
    """
    if n <= 0:
        raise UserError(f"need a positive number of times, got {n}")
    u = torch.rand(n, generator=generator, device=device)  # (n,)
    if antithetic:
        u = (u / n + torch.arange(n, device=device) / n) % 1
    return (1 - eps) * u + eps  # (n,)


def sample_clipped_t(shape: tuple[int, ...], beta: float, omega: float, *, antithetic: bool = True,
                     generator: torch.Generator | None = None, device=None) -> Tensor:
    """Clipped mask rates t ~ U[beta, omega] (BD3-LM's clipped schedules), antithetic over all entries like bd3lms."""
    if not 0 < beta <= omega <= 1:
        raise UserError(f"clipped schedule needs 0 < beta <= omega <= 1, got beta={beta}, omega={omega}")
    n = math.prod(shape)
    u = torch.rand(n, generator=generator, device=device)  # (n,)
    if antithetic:
        u = (u / n + torch.arange(n, device=device) / n) % 1
    return (beta + (omega - beta) * u).view(shape)


SCHEDULES = {"loglinear": loglinear, "geometric": geometric}
