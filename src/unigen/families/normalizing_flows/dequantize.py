"""Uniform dequantisation and bits per dimension (Theis et al. 2016, Sec. 3.1; Kingma & Dhariwal 2018, Sec. 5 and
openai/glow `model.py` `preprocess` / the `objective += -log(n_bins) * D` line).

A pixel with integer level k in {0, ..., n_bins - 1} becomes y = (k + u) / n_bins, u ~ U[0, 1)^D, so the cubes
[k/n_bins, (k+1)/n_bins) tile [0, 1)^D without gaps or overlap. For any density p on [0, 1)^D, Jensen's inequality
gives the discrete model P(k) = int_cube p(y) dy >= n_bins^-D exp(E_u log p(y)), so

    bits/dim = (-log p(y) + D log n_bins) / (D ln 2)    is an upper bound on -log2 P(k) / D.

The off-by-one of many ports (rosinality/glow-pytorch #17): scaling the levels by 1/(n_bins - 1) (ToTensor's /255)
and then adding U(0, 1/n_bins) noise puts the top level's cube past 1 and the cubes out of line with the
D log n_bins term. Here every scaling is by n_bins, and y stays inside [0, 1).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from unigen.errors import UserError


def reduce_bits(k8: Tensor, n_bits: int) -> Tensor:
    """8-bit levels 0..255 -> n_bits levels 0..2^n_bits - 1 (floor division, openai/glow's `x // 2**(8 - n_bits)`)."""
    if not 1 <= n_bits <= 8:
        raise UserError(f"n_bits must be in 1..8, got {n_bits}")
    return torch.div(k8.long(), 2 ** (8 - n_bits), rounding_mode="floor")


def dequantize(k: Tensor, n_bins: int, u: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """y = (k + u) / n_bins in [0, 1) with u ~ U[0, 1) (drawn from `generator` or torch's RNG unless given).

    In float32, k + u rounds to k + 1 for u within 2^-16 of 1 (at k = 255), which would put y = 1 on the cube's
    far boundary, outside [0, 1) (logit(1) = inf); y is kept at most 1 - 2^-24, the largest float32 below 1."""
    if u is None:
        u = torch.rand(k.shape, generator=generator, device=k.device)
    return ((k.float() + u) / n_bins).clamp(max=1 - 2 ** -24)


def quantize(y: Tensor, n_bins: int) -> Tensor:
    """The level of each dequantised value: floor(n_bins y), clamped to 0..n_bins - 1 (samples may leave [0, 1))."""
    return torch.floor(y * n_bins).clamp(0, n_bins - 1).long()


def bits_per_dim(log_p: Tensor, dims: int, n_bins: int) -> Tensor:
    """(-log p(y) + D log n_bins) / (D ln 2) from log p(y) in nats of dequantised y in [0, 1)^D (see the module
    docstring); same shape as log_p."""
    return (-log_p + dims * math.log(n_bins)) / (dims * math.log(2))
