"""Residual connection schemes around a sub-layer f (attention, MLP, GAU, ...), and DeepNorm's constants and init.

Notation:
    x_l        input of the residual block, f the sub-layer, LN a layer norm
    Post-LN    x_{l+1} = LN(x_l + f(x_l))                    Vaswani et al. 2017, Sec. 3.1
    Pre-LN     x_{l+1} = x_l + f(LN(x_l))                    Xiong et al. 2020, Sec. 3 (Figure 1)
    DeepNorm   x_{l+1} = LN(alpha x_l + f(x_l))              Wang et al. 2022 ("DeepNet"), Sec. 2, Figure 2
               with f's FFN, value and output projections initialised at scale beta (Figure 2)
N = encoder layers, M = decoder layers (a "layer" is one block of attention + FFN sub-layers, as in the paper).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from unigen.errors import UserError
from unigen.nn.activations import GLU, FeedForward
from unigen.nn.attention import Attention
from unigen.nn.init import xavier_
from unigen.nn.linear_attention import LinearAttention
from unigen.nn.norm import LayerNorm


def _norm_or_default(dim: int, norm: nn.Module | None) -> nn.Module:
    return LayerNorm(dim) if norm is None else norm


class PreNormResidual(nn.Module):
    """Pre-LN residual, Xiong et al. 2020 ("On Layer Normalization in the Transformer Architecture"): x + f(LN(x)).

    forward(x, *args, **kw) passes extra arguments to f. `norm` defaults to LayerNorm(dim).
    """

    def __init__(self, dim: int, fn: Callable[..., Tensor], norm: nn.Module | None = None):
        super().__init__()
        self.fn, self.norm = fn, _norm_or_default(dim, norm)

    def forward(self, x: Tensor, *args, **kw) -> Tensor:
        return x + self.fn(self.norm(x), *args, **kw)  # (B, T, C)


class PostNormResidual(nn.Module):
    """Post-LN residual, Vaswani et al. 2017, Sec. 3.1: LN(x + f(x))."""

    def __init__(self, dim: int, fn: Callable[..., Tensor], norm: nn.Module | None = None):
        super().__init__()
        self.fn, self.norm = fn, _norm_or_default(dim, norm)

    def forward(self, x: Tensor, *args, **kw) -> Tensor:
        return self.norm(x + self.fn(x, *args, **kw))  # (B, T, C)


class DeepNormResidual(nn.Module):
    """DeepNorm residual, Wang et al. 2022 ("DeepNet"), Sec. 2 and Figure 2: LN(alpha * x + f(x)).

    Take alpha from `deepnorm_constants` and initialise f with `deepnorm_init_(f, beta)`.
    """

    def __init__(self, dim: int, fn: Callable[..., Tensor], alpha: float, norm: nn.Module | None = None):
        super().__init__()
        if alpha <= 0:
            raise UserError(f"DeepNorm alpha must be positive; got {alpha}")
        self.fn, self.norm, self.alpha = fn, _norm_or_default(dim, norm), float(alpha)

    def forward(self, x: Tensor, *args, **kw) -> Tensor:
        return self.norm(self.alpha * x + self.fn(x, *args, **kw))  # (B, T, C)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.4g}"


DEEPNORM_ARCHS = ("encoder", "decoder", "encdec")


def deepnorm_constants(n_layers_enc: int, n_layers_dec: int, arch: str = "decoder",
                       part: str | None = None) -> tuple[float, float]:
    """DeepNorm (alpha, beta), Wang et al. 2022 ("DeepNet"), Figure 2 (the table of constants), N enc., M dec.:

        encoder-only           alpha = (2N)^(1/4)               beta = (8N)^(-1/4)
        decoder-only           alpha = (2M)^(1/4)               beta = (8M)^(-1/4)
        encoder-decoder, enc.  alpha = 0.81 (N^4 M)^(1/16)      beta = 0.87 (N^4 M)^(-1/16)
        encoder-decoder, dec.  alpha = (3M)^(1/4)               beta = (12M)^(-1/4)

    arch='encdec' needs part='encoder' or 'decoder' (the two stacks use different constants).
    """
    if arch not in DEEPNORM_ARCHS:
        raise UserError(f"unknown DeepNorm arch {arch!r}; choose one of {DEEPNORM_ARCHS}")
    N, M = n_layers_enc, n_layers_dec
    if arch in ("encoder", "encdec") and (not isinstance(N, int) or N <= 0):
        raise UserError(f"DeepNorm arch {arch!r} needs n_layers_enc >= 1; got {N!r}")
    if arch in ("decoder", "encdec") and (not isinstance(M, int) or M <= 0):
        raise UserError(f"DeepNorm arch {arch!r} needs n_layers_dec >= 1; got {M!r}")
    if arch == "encoder":
        return (2 * N) ** 0.25, (8 * N) ** -0.25
    if arch == "decoder":
        return (2 * M) ** 0.25, (8 * M) ** -0.25
    if part == "encoder":
        return 0.81 * (N ** 4 * M) ** (1 / 16), 0.87 * (N ** 4 * M) ** (-1 / 16)
    if part == "decoder":
        return (3 * M) ** 0.25, (12 * M) ** -0.25
    raise UserError(f"DeepNorm arch 'encdec' needs part='encoder' or part='decoder'; got {part!r}")


# Linear layers of other (non-unigen) modules recognised by name, as in the paper's pseudo-code
SCALED_NAMES = ("v_proj", "out_proj", "fc1", "fc2", "ffn", "mlp", "feed_forward", "to_v", "to_out")
UNSCALED_NAMES = ("q_proj", "k_proj", "to_q", "to_k")


def _xavier_rows_(linear: nn.Linear, blocks: list[tuple[int, float]]) -> None:
    """Xavier-normal init of consecutive row blocks of a fused projection, each as its own matrix: (rows, gain)."""
    start = 0
    for rows, g in blocks:
        xavier_(linear.weight.data[start:start + rows], gain=g)
        start += rows
    if linear.bias is not None:
        with torch.no_grad():
            linear.bias.zero_()


def deepnorm_init_(module: nn.Module, beta: float) -> nn.Module:
    """DeepNorm init, Wang et al. 2022 ("DeepNet"), Figure 2 pseudo-code: Xavier-normal with gain beta for the
    FFN, value and output projections, gain 1 for query and key projections; biases zero.

    Recognises unigen's Attention (fused qkv split into its q, k, v row blocks, each initialised as its own
    matrix; `proj` scaled), LinearAttention, FeedForward and GLU (all scaled), and other Linear layers whose
    qualified name contains one of SCALED_NAMES / UNSCALED_NAMES. Anything else is left alone. Returns module.
    """
    if beta <= 0:
        raise UserError(f"DeepNorm beta must be positive; got {beta}")
    done: set[int] = set()
    for name, m in module.named_modules():
        if id(m) in done:
            continue
        if isinstance(m, Attention):
            qd, kvd = m.n_heads * m.head_dim, m.n_kv_heads * m.head_dim
            _xavier_rows_(m.qkv, [(qd, 1.0), (kvd, 1.0), (kvd, beta)])
            _xavier_rows_(m.proj, [(m.dim, beta)])
        elif isinstance(m, LinearAttention):
            _xavier_rows_(m.qkv, [(m.dim, 1.0), (m.dim, 1.0), (m.dim, beta)])
            _xavier_rows_(m.out, [(m.dim, beta)])
        elif isinstance(m, GLU):
            half = m.w_in.out_features // 2
            _xavier_rows_(m.w_in, [(half, beta), (half, beta)])
            _xavier_rows_(m.w_out, [(m.w_out.out_features, beta)])
        elif isinstance(m, FeedForward):
            _xavier_rows_(m.w_in, [(m.w_in.out_features, beta)])
            _xavier_rows_(m.w_out, [(m.w_out.out_features, beta)])
        elif isinstance(m, nn.Linear):
            parts = name.split(".")
            if any(p in SCALED_NAMES for p in parts):
                _xavier_rows_(m, [(m.out_features, beta)])
            elif any(p in UNSCALED_NAMES for p in parts):
                _xavier_rows_(m, [(m.out_features, 1.0)])
            continue
        else:
            continue
        done.update(id(c) for c in m.modules())
    return module
