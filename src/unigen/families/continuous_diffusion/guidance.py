"""Classifier-free guidance as a denoiser wrapper (Ho & Salimans 2022).

Ho & Salimans, Eq. 6: eps_tilde = (1 + w) eps(z, c) - w eps(z). With scale = 1 + w, and because at fixed (x, sigma)
the denoiser D = x - sigma eps is affine in eps, the same rule holds for D:
    D_guided = D_uncond + scale (D_cond - D_uncond)
scale = 1 is the conditional model, scale = 0 the unconditional one. The unconditional model is the same network
given the null label `null_id` (= num_classes), learned through label dropout (losses.drop_labels).

Notation
    D_cond, D_uncond    D(x; sigma, y) and D(x; sigma, null)
    scale               guidance scale (1 + w in Ho & Salimans' notation)
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Denoiser = Callable[..., Tensor]


def cfg_combine(D_cond: Tensor, D_uncond: Tensor, scale: float) -> Tensor:
    """Ho & Salimans 2022, Eq. 6 in D-space: D_uncond + scale (D_cond - D_uncond)."""
    return D_uncond + scale * (D_cond - D_uncond)


def guided(D: Denoiser, y: Tensor, null_id: int, scale: float) -> Denoiser:
    """Ho & Salimans 2022, Eq. 6: a denoiser D_guided(x, sigma) for labels y (B,), one batched call of D for both
    branches (x and sigma doubled, labels [y, null]). scale = 1 calls D once with y only."""
    if scale == 1:
        return lambda x, sigma: D(x, sigma, y=y)

    def D_guided(x: Tensor, sigma: Tensor) -> Tensor:
        y_both = torch.cat([y, torch.full_like(y, null_id)])          # (2B,)
        D_both = D(torch.cat([x, x]), torch.cat([sigma, sigma]), y=y_both)   # (2B, ...)
        D_cond, D_uncond = D_both.chunk(2)
        return cfg_combine(D_cond, D_uncond, scale)

    return D_guided
