"""Text conditioning of the UNet by cross-attention (Rombach et al. 2022, Sec. 3.3, Eq. 3 and Fig. 3).

Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V with Q = W_Q phi(z_t) from the feature map and K = W_K tau(y),
V = W_V tau(y) from the text encoder's token states tau(y) (the "context"). As in LDM's `SpatialTransformer`
(ldm/modules/attention.py) and diffusers' `Transformer2DModel`:

    x ─ GroupNorm ─ conv1x1 (proj_in) ─ [LN, self-attn, +] [LN, cross-attn(context), +] [LN, GEGLU MLP, +] x depth
      ─ conv1x1 (proj_out, zero-initialised) ─ + x

so a freshly built block is the identity (LDM's `zero_module(proj_out)`).

Notation:  B batch, C channels, H x W feature map, N = H*W query positions, S context tokens, E context width,
heads x d = C.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unigen.errors import UserError
from unigen.nn.activations import make_mlp


class CrossAttention(nn.Module):
    """Multi-head attention of queries x (B, N, C) over keys/values from `context` (B, S, E), or over x itself when
    `context` is None (Rombach et al. 2022, Eq. 3). q, k, v projections have no bias, the output one has."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if heads <= 0 or dim % heads:
            raise UserError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """mask (B, S) bool, True = a real context token (padding is False); None = attend to every token."""
        ctx = x if context is None else context
        B, N, C = x.shape
        split = lambda t: t.view(B, t.shape[1], self.heads, C // self.heads).transpose(1, 2)   # (B, h, *, d)
        q, k, v = split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx))
        attn_mask = None
        if mask is not None and context is not None:
            if mask.shape != ctx.shape[:2] or not bool(mask.any(1).all()):
                raise UserError(f"the context mask must be (B, S) = {tuple(ctx.shape[:2])} with a real token per row")
            attn_mask = mask[:, None, None, :]                                               # (B, 1, 1, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)                       # (B, h, N, d)
        return self.to_out(y.transpose(1, 2).reshape(B, N, C))                                   # (B, N, C)


class TransformerBlock(nn.Module):
    """LDM's BasicTransformerBlock: pre-LayerNorm self-attention, cross-attention to the context, GEGLU MLP (4C)."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn1 = CrossAttention(dim, heads)
        self.attn2 = CrossAttention(dim, heads, context_dim)
        self.ff = make_mlp("geglu", dim, 4 * dim, bias=True)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.attn1(self.norm1(x))                              # (B, N, C)
        x = x + self.attn2(self.norm2(x), context, mask)               # (B, N, C)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Rombach et al. 2022, Fig. 3 / LDM's SpatialTransformer: (B, C, H, W) attends to context (B, S, E)."""

    def __init__(self, ch: int, heads: int, context_dim: int, groups: int, depth: int = 1):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.proj_in = nn.Conv2d(ch, ch, 1)
        self.blocks = nn.ModuleList(TransformerBlock(ch, heads, context_dim) for _ in range(depth))
        self.proj_out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)      # (B, N, C)
        for block in self.blocks:
            h = block(h, context, mask)
        return x + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))
