"""Activations and the transformer MLPs: the plain two-layer MLP and the GLU family.

Notation (Shazeer 2020, "GLU Variants Improve Transformer", eqs. 5-6): for input x,
    FFN(x)        = act(x W1 + b1) W2 + b2
    FFN_GLU(x)    = (act(x W) * (x V)) W2        with act = sigmoid (GLU), relu (ReGLU), gelu (GEGLU), silu (SwiGLU)
W and V are fused into one input projection `w_in` whose first half of output rows is W (the gated, activated
branch, Llama's `gate_proj`) and whose second half is V (Llama's `up_proj`); W2 is `w_out` (Llama's `down_proj`).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unigen.errors import UserError

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,                                    # exact, with erf
    "gelu_tanh": partial(F.gelu, approximate="tanh"),  # Hendrycks & Gimpel 2016 tanh approximation
    "silu": F.silu,
    "swish": F.silu,
    "sigmoid": torch.sigmoid,
}

GLU_VARIANTS: dict[str, Callable[[Tensor], Tensor]] = {
    "glu": torch.sigmoid,
    "reglu": F.relu,
    "geglu": F.gelu,
    "swiglu": F.silu,
}


def _lookup(name: str, table: dict, what: str) -> Callable[[Tensor], Tensor]:
    if name not in table:
        raise UserError(f"unknown {what} {name!r}; choose one of {sorted(table)}")
    return table[name]


class GLU(nn.Module):
    """Gated linear unit MLP (Shazeer 2020, eq. 6): (act(x W) * (x V)) W2, with W and V fused in `w_in`.

    `activation` is a key of GLU_VARIANTS ("swiglu", "geglu", "reglu", "glu") or of ACTIVATIONS (used as the gate).
    """

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int, activation: str = "swiglu", *,
                 bias: bool = False, dropout: float = 0.0):
        super().__init__()
        table = GLU_VARIANTS if activation in GLU_VARIANTS else ACTIVATIONS
        self.act = _lookup(activation, table, "GLU activation")
        self.activation = activation
        self.w_in = nn.Linear(dim_in, 2 * dim_hidden, bias=bias)  # rows: [W ; V]
        self.w_out = nn.Linear(dim_hidden, dim_out, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.w_in(x).chunk(2, dim=-1)  # (..., H), (..., H)
        return self.dropout(self.w_out(self.act(gate) * value))  # (..., C_out)


class FeedForward(nn.Module):
    """Position-wise feed-forward network (Vaswani et al. 2017, eq. 2): act(x W1 + b1) W2 + b2."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu", bias: bool = True, *,
                 dim_out: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.act = _lookup(activation, ACTIVATIONS, "activation")
        self.activation = activation
        self.w_in = nn.Linear(dim, hidden, bias=bias)
        self.w_out = nn.Linear(hidden, dim_out or dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.w_out(self.act(self.w_in(x))))  # (..., C_out)


def make_mlp(kind: str, dim: int, hidden: int, *, bias: bool | None = None, dropout: float = 0.0) -> nn.Module:
    """The transformer MLP named `kind`: a GLU variant (bias off by default) or a plain activation (bias on)."""
    if kind in GLU_VARIANTS:
        return GLU(dim, hidden, dim, kind, bias=bool(bias), dropout=dropout)
    if kind in ACTIVATIONS:
        return FeedForward(dim, hidden, kind, bias=True if bias is None else bias, dropout=dropout)
    raise UserError(f"unknown mlp kind {kind!r}; choose one of {sorted(GLU_VARIANTS) + sorted(ACTIVATIONS)}")
