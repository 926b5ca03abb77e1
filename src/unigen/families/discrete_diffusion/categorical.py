"""Categorical sampling for discrete samplers, in float64 (Zheng et al. 2024: low-precision Gumbel-max lowers the
effective temperature of masked diffusion samplers; LLaDA's `add_gumbel_noise` therefore works in float64).

Gumbel-max: argmax_v (l_v + g_v), g_v = -log(-log u_v), u ~ U(0, 1), draws v with probability softmax(l)_v.
"""
from __future__ import annotations

import torch
from torch import Tensor

from unigen.errors import UserError


def add_gumbel_noise(logits: Tensor, temperature: float, generator: torch.Generator | None = None) -> Tensor:
    """LLaDA's add_gumbel_noise (Nie et al. 2025, generate.py) in log space: float64 scores whose argmax samples
    softmax(logits / temperature); temperature 0 returns the logits unchanged (greedy).

    LLaDA returns exp(l) / (-log u)^T; its log, l - T log(-log u) = T (l / T + g), has the same argmax and cannot
    overflow.
    """
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float64, device=logits.device)
    return logits - temperature * torch.log(-torch.log(u))  # (..., V) float64


def sample_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one index per row of (unnormalised, non-negative) `probs` (..., V) by Gumbel-max in float64."""
    probs = probs.to(torch.float64)
    u = torch.rand(probs.shape, generator=generator, dtype=torch.float64, device=probs.device)
    return (probs / -torch.log(u)).argmax(dim=-1)  # (...) : p_v / E_v with E_v ~ Exp(1) is Gumbel-max on log p


def sample_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
    """Sample from softmax(logits / temperature) restricted to the top_k logits; temperature 0 is argmax."""
    if top_k is not None:
        if top_k <= 0:
            raise UserError(f"top_k must be positive, got {top_k}")
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return add_gumbel_noise(logits, temperature, generator).argmax(dim=-1)  # (...)
