"""Normalisation layers and the adaLN modulation used by time-conditioned blocks.

Notation: x (..., C) are features over the last axis C; eps guards the division.
    LayerNorm  y = (x - mean(x)) / sqrt(var(x) + eps) * w + b         (Ba et al. 2016)
    RMSNorm    y = x / sqrt(mean(x^2) + eps) * w                       (Zhang & Sennrich 2019, eq. 4)
    modulate   y = x * (1 + scale) + shift                             (Peebles & Xie 2023, DiT adaLN)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unigen.errors import UserError


class LayerNorm(nn.LayerNorm):
    """Layer normalisation (Ba et al. 2016) over the last axis; torch's, with `bias` and `affine` switches.

    `affine=False` gives the parameter-free norm that DiT's adaLN blocks modulate instead.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, *, affine: bool = True):
        if dim <= 0:
            raise UserError(f"LayerNorm dim must be positive, got {dim}")
        super().__init__(dim, eps=eps, elementwise_affine=affine, bias=bias and affine)


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019, eq. 4): x / sqrt(mean(x^2) + eps) * w.

    Computed in float32 whatever the input dtype (also under autocast), then cast back to the input dtype,
    as Llama does; the weight is applied in float32 before the cast.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        if dim <= 0:
            raise UserError(f"RMSNorm dim must be positive, got {dim}")
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim))  # (C,)

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = F.rms_norm(x.float(), (self.dim,), self.weight.float(), self.eps)  # (..., C)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation (Peebles & Xie 2023, DiT sec. 3.2): x * (1 + scale) + shift.

    x is (B, T, C); shift and scale are (B, C) (one condition per sequence, broadcast over T) or (B, T, C)
    (one per token, e.g. one noise level per block); anything else must broadcast against x as is.
    """
    if shift.dim() == x.dim() - 1:
        shift = shift.unsqueeze(-2)  # (B, 1, C)
    if scale.dim() == x.dim() - 1:
        scale = scale.unsqueeze(-2)  # (B, 1, C)
    return x * (1 + scale) + shift  # (B, T, C)
