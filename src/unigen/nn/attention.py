"""Multi-head attention with grouped-query heads, QK-norm, rotary angles, additive biases and a KV cache.

Notation (Vaswani et al. 2017, eq. 1): Attention(Q, K, V) = softmax(Q K^T / sqrt(D) + bias) V, per head.
    B batch, T queries, S keys (S = cached + T with a cache), C = dim, H query heads, H_kv key/value heads, D = C / H.
Masks are bool, True = may attend, broadcastable to (B, H, T, S). A query row with no allowed key returns zeros.
Grouped-query attention (Ainslie et al. 2023): query head h reads key/value head h // (H / H_kv).
QK-norm (Dehghani et al. 2023, ViT-22B sec. 2): RMSNorm over D on q and k, before the rotary embedding.

KV cache protocol (inference only, under torch.no_grad):
    cache = KVCache(batch_size, max_len)          # one per layer; buffers are allocated on first use
    attn(x_prompt, cache=cache)                   # writes k/v at [0, T), length -> T
    attn(x_next, cache=cache)                     # attends to [0, length + T), then length += T
    cache.commit = False                          # "peek": attend to cache + this call, keep length unchanged
    attn(x_block, cache=cache)                    # ... any number of times (block diffusion denoising steps)
    cache.commit = True; attn(x_block_final, cache=cache)   # the committing call overwrites the same slots
`is_causal=True` with a cache aligns the causal mask bottom-right: query i sees keys <= length + i.

Kernel choice (measured in BENCHMARKS.md): torch's fused CPU attention is the fastest in float32 and at inference,
but its bf16 backward is 2.5-5x slower than two bf16 matmuls and a softmax for up to 256 keys, so reduced-precision
training on the CPU with S <= MATMUL_ATTN_MAX_KEYS takes `attention_matmul`, the same function written out.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unigen.errors import UserError
from unigen.nn.norm import RMSNorm
from unigen.nn.position import apply_rope


# ----------------------------------------------------------------------------------------------- masks
def causal_mask(T: int, S: int | None = None, device=None) -> Tensor:
    """Causal mask (Vaswani et al. 2017, sec. 3.2.3), bottom-right aligned: query i sees keys j <= i + (S - T)."""
    S = T if S is None else S
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(S, device=device)[None, :]
    return j <= i + (S - T)  # (T, S)


def padding_mask(pad: Tensor) -> Tensor:
    """Key padding mask: `pad` (B, S) is True at padding tokens; returns (B, 1, 1, S), True = may attend."""
    if pad.dim() != 2:
        raise UserError(f"padding mask expects (B, S), got shape {tuple(pad.shape)}")
    return ~pad.bool()[:, None, None, :]  # (B, 1, 1, S)


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of bool masks with broadcasting; None entries are skipped; all None gives None."""
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out


# ----------------------------------------------------------------------------------------------- kernels
MATMUL_ATTN_MAX_KEYS = 256  # above this the fused kernel's O(S) memory wins over the S x S score matrix (bf16)


def attention_matmul(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, bias: Tensor | None = None, *,
                     dropout_p: float = 0.0) -> Tensor:
    """softmax(Q K^T / sqrt(D) + bias, masked) V (Vaswani et al. 2017, eq. 1) as explicit matmuls.

    q (B, H, T, D); k, v (B, H_kv, S, D) with query head h reading key/value head h // (H / H_kv); mask bool
    (True = may attend) and bias float, each broadcastable to (B, H, T, S). A row with no allowed key returns
    zeros, as the fused kernel does.
    """
    H, Hkv = q.shape[1], k.shape[1]
    if Hkv != H:
        k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)  # (B, H, S, D)
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    p = torch.softmax(scores, dim=-1)  # (B, H, T, S)
    if mask is not None:
        dead = ~mask.any(dim=-1, keepdim=True)  # rows with no allowed key: softmax gave NaN
        if bool(dead.any()):
            p = p.masked_fill(dead, 0.0)
    if dropout_p > 0:
        p = F.dropout(p, dropout_p)
    return torch.matmul(p, v)  # (B, H, T, D)


def _use_matmul(q: Tensor, k: Tensor) -> bool:
    """Reduced-precision training on the CPU over few keys: see the module docstring."""
    return (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and torch.is_grad_enabled()
            and (q.requires_grad or k.requires_grad) and k.shape[2] <= MATMUL_ATTN_MAX_KEYS)


# ----------------------------------------------------------------------------------------------- KV cache
class KVCache:
    """Keys and values of one attention layer for a batch: (B, H_kv, max_len, D) buffers and a length.

    Buffers are allocated on the first `update`, with that call's dtype and device. `commit` (default True)
    decides whether an update advances `length`; with `commit=False` the call's k/v are written after the
    committed prefix and attended to, but the next call overwrites them ("peek" mode, see the module doc).
    """

    def __init__(self, batch_size: int, max_len: int):
        if batch_size <= 0 or max_len <= 0:
            raise UserError(f"KVCache needs positive batch_size and max_len, got {batch_size}, {max_len}")
        self.batch_size, self.max_len = batch_size, max_len
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0
        self.commit = True

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, H_kv, T, D) at [length, length + T); return all keys and values (B, H_kv, length + T, D)."""
        B, _, T, _ = k.shape
        if B != self.batch_size:
            raise UserError(f"KV cache holds batch size {self.batch_size}, got {B}")
        end = self.length + T
        if end > self.max_len:
            raise UserError(f"KV cache overflow: {self.length} cached + {T} new > max_len {self.max_len}")
        if self.k is None:
            shape = (B, k.shape[1], self.max_len, k.shape[3])
            self.k = k.new_zeros(shape)  # (B, H_kv, max_len, D)
            self.v = v.new_zeros(shape)  # (B, H_kv, max_len, D)
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        if self.commit:
            self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reset(self) -> None:
        """Forget everything cached (buffers are kept)."""
        self.length = 0


@contextlib.contextmanager
def peeking(caches: Iterable[KVCache]) -> Iterator[None]:
    """Within the block, calls attend to cache + current input without committing it (then restores `commit`)."""
    caches = list(caches)
    before = [c.commit for c in caches]
    for c in caches:
        c.commit = False
    try:
        yield
    finally:
        for c, b in zip(caches, before):
            c.commit = b


# ----------------------------------------------------------------------------------------------- attention
class Attention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017, sec. 3.2) through torch's scaled_dot_product_attention.

    `qkv` is one fused projection whose output rows are [q (H*D) ; k (H_kv*D) ; v (H_kv*D)]; `proj` maps the
    concatenated heads back to `dim`. `n_kv_heads < n_heads` gives grouped-query attention.
    """

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int | None = None, *, qk_norm: bool = False,
                 bias: bool = False, dropout: float = 0.0):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_heads <= 0 or dim % n_heads:
            raise UserError(f"dim {dim} is not divisible by n_heads {n_heads}")
        if n_kv_heads <= 0 or n_heads % n_kv_heads:
            raise UserError(f"n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads}")
        self.dim, self.n_heads, self.n_kv_heads = dim, n_heads, n_kv_heads
        self.head_dim = dim // n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=bias)
        self.proj = nn.Linear(n_heads * self.head_dim, dim, bias=bias)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, *, mask: Tensor | None = None, is_causal: bool = False, rope=None,
                attn_bias: Tensor | None = None, cache: KVCache | None = None,
                positions: Tensor | None = None) -> Tensor:
        """x (B, T, C) -> (B, T, C).

        mask: bool, True = may attend, broadcastable to (B, H, T, S). is_causal: add a bottom-right causal mask.
        rope: a (cos, sin) pair (`position.Rope`, or a plain tuple meaning the "half" layout) for this call's
        tokens, or a `RotaryEmbedding` module evaluated at `positions` (default: cache.length + arange(T)).
        attn_bias: float, added to the scores, broadcastable to (B, H, T, S) (ALiBi, T5 relative bias).
        cache: a `KVCache`; this call's k/v are appended (or only peeked, see `KVCache.commit`).
        """
        if mask is not None and mask.dtype != torch.bool:
            raise UserError(f"attention mask must be bool (True = may attend), got {mask.dtype} (floats: attn_bias)")
        B, T, C = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
        v = v.view(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        offset = cache.length if cache is not None else 0
        if rope is not None:
            if isinstance(rope, nn.Module):
                pos = positions if positions is not None else torch.arange(offset, offset + T, device=x.device)
                rope = rope(pos)
            cos, sin = rope
            layout = getattr(rope, "layout", "half")
            q, k = apply_rope(q, cos, sin, layout), apply_rope(k, cos, sin, layout)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H_kv, S, D)
        dropout_p = self.dropout if self.training else 0.0
        matmul = _use_matmul(q, k)
        # without a cache S == T, and SDPA's own (top-left aligned) causal flag is exact and fastest
        sdpa_causal = is_causal and mask is None and attn_bias is None and cache is None and not matmul
        if is_causal and not sdpa_causal:
            mask = combine_masks(mask, causal_mask(T, k.shape[2], device=x.device))
        if matmul:
            y = attention_matmul(q, k, v, mask, attn_bias, dropout_p=dropout_p)  # (B, H, T, D)
        else:
            if attn_bias is not None:
                bias = attn_bias.to(q.dtype)
                mask = bias if mask is None else torch.where(mask, bias, float("-inf"))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=sdpa_causal, dropout_p=dropout_p,
                                               enable_gqa=Hkv != H)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, H * D)  # (B, T, H*D)
        return self.resid_dropout(self.proj(y))  # (B, T, C)
