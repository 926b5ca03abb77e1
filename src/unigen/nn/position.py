"""Position and noise-level encodings: sinusoidal, learned, rotary (1-D and 2-D axial).

Notation (Su et al. 2021, "RoFormer", eqs. 13-15): head_dim D holds D/2 rotary pairs; pair i rotates by the angle
m * theta_i at position m, theta_i = base^(-2i/D). Two layouts put the pair's two coordinates in different places:
    "half"        pair i = coordinates (i, i + D/2)    (GPT-NeoX, Hugging Face Llama)
    "interleaved" pair i = coordinates (2i, 2i + 1)    (RoFormer paper, Meta's original Llama)
Both give the same scores once the rows of the q/k projections are permuted (`half_to_interleaved`).
apply_rope: x * cos + rotate(x) * sin, where rotate maps each pair (a, b) to (-b, a).

Rotary angles travel as a `Rope` pair (cos, sin): a plain 2-tuple that also remembers its layout, so
`cos, sin = rope` works and `Attention` knows how to rotate; a bare (cos, sin) tuple means the "half" layout.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from unigen.errors import UserError

LAYOUTS = ("half", "interleaved")


def sinusoidal_embedding(x: Tensor, dim: int, max_period: float = 10000.0, *, cos_first: bool = True,
                         freq_shift: float = 0.0) -> Tensor:
    """Sinusoidal encoding (Vaswani et al. 2017, sec. 3.5; Ho et al. 2020, DDPM): [cos(x w_i), sin(x w_i)].

    w_i = max_period^(-i / (D/2 - freq_shift)), i = 0..D/2-1, D = `dim`. `x` (...) holds integer positions or
    real-valued noise levels; returns float32 (..., dim) (a zero column pads an odd dim). The two halves are
    concatenated, cos first (ADM/DiT) or sin first (`cos_first=False`, original DDPM); `freq_shift=1` gives
    diffusers' `downscale_freq_shift=1`. Vaswani's interleaved sin/cos is the same features permuted.
    """
    if dim <= 0:
        raise UserError(f"sinusoidal embedding dim must be positive, got {dim}")
    half = dim // 2
    if half == 0:
        return torch.zeros(*x.shape, dim, device=x.device)
    i = torch.arange(half, dtype=torch.float32, device=x.device)
    w = torch.exp(-math.log(max_period) * i / (half - freq_shift))  # (D/2,)
    angle = x.float()[..., None] * w  # (..., D/2)
    parts = [torch.cos(angle), torch.sin(angle)] if cos_first else [torch.sin(angle), torch.cos(angle)]
    if dim % 2:
        parts.append(torch.zeros_like(angle[..., :1]))
    return torch.cat(parts, dim=-1)  # (..., dim)


def _positions(positions: Tensor | int, max_len: int, device) -> Tensor:
    if isinstance(positions, int):
        positions = torch.arange(positions, device=device)
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= max_len):
        raise UserError(f"positions must lie in [0, {max_len}), got [{int(positions.min())}, {int(positions.max())}]")
    return positions


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal absolute positions (Vaswani et al. 2017, sec. 3.5) for positions 0..max_len-1.

    `embed(T or positions)` returns (T, dim) or (..., dim); `forward(x (B, T, C), positions=None)` returns
    x + embedding of positions (default 0..T-1).
    """

    def __init__(self, dim: int, max_len: int, max_period: float = 10000.0):
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", sinusoidal_embedding(torch.arange(max_len), dim, max_period), persistent=False)

    def embed(self, positions: Tensor | int) -> Tensor:
        return self.table[_positions(positions, self.max_len, self.table.device)]  # (..., dim)

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        pos = self.embed(x.shape[-2] if positions is None else positions)
        return x + pos.to(x.dtype)  # (B, T, C)


class LearnedPositions(nn.Module):
    """Learned absolute positions (Gehring et al. 2017; GPT, ViT): a (max_len, dim) table, init N(0, 0.02^2).

    Same interface as `SinusoidalPositions`.
    """

    def __init__(self, dim: int, max_len: int, init_std: float = 0.02):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len, dim) * init_std)  # (max_len, C)

    def embed(self, positions: Tensor | int) -> Tensor:
        return self.weight[_positions(positions, self.max_len, self.weight.device)]  # (..., dim)

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        return x + self.embed(x.shape[-2] if positions is None else positions)  # (B, T, C)


class Rope(tuple):
    """Rotary angles: the pair (cos, sin), each (..., T, head_dim), plus the `layout` they are laid out in."""

    layout: str

    def __new__(cls, cos: Tensor, sin: Tensor, layout: str = "half"):
        self = super().__new__(cls, (cos, sin))
        self.layout = layout
        return self


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise UserError(f"unknown rotary layout {layout!r}; choose one of {LAYOUTS}")
    return layout


def _spread(angle: Tensor, layout: str) -> Rope:
    """Angles per pair (..., D/2) -> Rope whose cos/sin are (..., D) in `layout`."""
    if layout == "half":
        full = torch.cat([angle, angle], dim=-1)  # (..., D)
    else:
        full = angle.repeat_interleave(2, dim=-1)  # (..., D)
    return Rope(full.cos(), full.sin(), layout)


def rotate(x: Tensor, layout: str = "half") -> Tensor:
    """RoFormer eq. 34's rotation partner: each rotary pair (a, b) of x (..., D) becomes (-b, a)."""
    if layout == "half":
        a, b = x.chunk(2, dim=-1)  # (..., D/2) each
        return torch.cat([-b, a], dim=-1)  # (..., D)
    a, b = x[..., 0::2], x[..., 1::2]  # (..., D/2) each
    return torch.stack([-b, a], dim=-1).flatten(-2)  # (..., D)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor, layout: str = "half") -> Tensor:
    """Rotary position embedding (Su et al. 2021, RoFormer eq. 34): x * cos + rotate(x) * sin.

    x (B, H, T, D); cos, sin broadcast against it, e.g. (T, D) or (B, 1, T, D). Computed in float32.
    """
    xf = x.float()
    return (xf * cos + rotate(xf, layout) * sin).to(x.dtype)  # (B, H, T, D)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021, RoFormer eq. 15): theta_i = base^(-2i/D), angle = m * theta_i.

    forward(positions (T,) or (B, T)) -> Rope (cos, sin), float32, shaped (T, D) or (B, 1, T, D) so that they
    broadcast against q, k of shape (B, H, T, D). Positions may be real-valued.
    """

    def __init__(self, head_dim: int, base: float = 10000.0, layout: str = "half"):
        super().__init__()
        if head_dim <= 0 or head_dim % 2:
            raise UserError(f"rotary head_dim must be a positive even number, got {head_dim}")
        self.head_dim, self.base, self.layout = head_dim, base, _check_layout(layout)
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> Rope:
        angle = positions.float()[..., None] * self.inv_freq  # (..., T, D/2)
        if angle.dim() >= 3:
            angle = angle.unsqueeze(-3)  # (B, 1, T, D/2)
        return _spread(angle, self.layout)


class AxialRotaryEmbedding2D(nn.Module):
    """2-D axial RoPE for image patches (Heo et al. 2024, "Rotary Position Embedding for ViT", RoPE-Axial).

    Of the D/2 rotary pairs, the first D/4 rotate with the row index y and the last D/4 with the column index x,
    each axis with frequencies theta_j = base^(-4j/D), j = 0..D/4-1 (1-D RoPE over D/2 channels per axis).
    forward(h, w, n_prefix=0) -> Rope (cos, sin) of shape (n_prefix + h*w, D): patches in row-major order after
    `n_prefix` unrotated tokens (CLS, registers) that get cos = 1, sin = 0.
    """

    def __init__(self, head_dim: int, base: float = 10000.0, layout: str = "half"):
        super().__init__()
        if head_dim <= 0 or head_dim % 4:
            raise UserError(f"2-D axial rotary head_dim must be a positive multiple of 4, got {head_dim}")
        self.head_dim, self.base, self.layout = head_dim, base, _check_layout(layout)
        quarter = head_dim // 4
        inv_freq = base ** (-torch.arange(quarter, dtype=torch.float32) / quarter)  # (D/4,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, h: int, w: int, n_prefix: int = 0) -> Rope:
        if h <= 0 or w <= 0 or n_prefix < 0:
            raise UserError(f"axial RoPE needs h, w > 0 and n_prefix >= 0, got h={h}, w={w}, n_prefix={n_prefix}")
        dev = self.inv_freq.device
        ys = torch.arange(h, device=dev, dtype=torch.float32).repeat_interleave(w)  # (h*w,)
        xs = torch.arange(w, device=dev, dtype=torch.float32).repeat(h)  # (h*w,)
        angle = torch.cat([ys[:, None] * self.inv_freq, xs[:, None] * self.inv_freq], dim=-1)  # (h*w, D/2)
        angle = torch.cat([angle.new_zeros(n_prefix, angle.shape[1]), angle])  # (n_prefix + h*w, D/2)
        return _spread(angle, self.layout)


def head_dim_permutation(head_dim: int, to: str) -> Tensor:
    """Index p with v_new = v_old[..., p], converting a (..., head_dim) vector between rotary layouts."""
    _check_layout(to)
    half = head_dim // 2
    if to == "interleaved":  # new 2i <- old i, new 2i+1 <- old i + D/2
        return torch.stack([torch.arange(half), torch.arange(half) + half], dim=-1).flatten()
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])  # new i <- old 2i, etc.


def _permute_rows(w: Tensor, n_heads: int, to: str) -> Tensor:
    if w.shape[0] % n_heads or (w.shape[0] // n_heads) % 2:
        raise UserError(f"{w.shape[0]} rows do not split into {n_heads} heads of even size")
    head_dim = w.shape[0] // n_heads
    p = head_dim_permutation(head_dim, to).to(w.device)
    return w.reshape(n_heads, head_dim, *w.shape[1:])[:, p].reshape(w.shape)


def half_to_interleaved(w: Tensor, n_heads: int) -> Tensor:
    """Permute the output rows of a q/k projection weight (H*D, C) or bias (H*D,) from "half" to "interleaved"."""
    return _permute_rows(w, n_heads, "interleaved")


def interleaved_to_half(w: Tensor, n_heads: int) -> Tensor:
    """Permute the output rows of a q/k projection weight (H*D, C) or bias (H*D,) from "interleaved" to "half"."""
    return _permute_rows(w, n_heads, "half")
