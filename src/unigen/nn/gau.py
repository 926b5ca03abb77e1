"""Gated attention unit (GAU) and FLASH mixed chunk attention (Hua et al. 2022, "Transformer Quality in
Linear Time", Sec. 2.2 and Sec. 3.2, and the paper's pseudo-code for GAU and FLASH).

Notation (paper -> code):
    X (T, d)                 x (B, T, dim)
    e = expansion * d        hidden width of U and V
    U = phi_u(X W_u)         u (B, T, e)        phi = SiLU (the paper's `act`)
    V = phi_v(X W_v)         v (B, T, e)
    Z = phi_z(X W_z)         z (B, T, s)        shared low-dimensional base, s = 128 in the paper
    Q, K = Z * gamma + beta  per-dimension scale and offset (cheap transforms of Z)
    A = relu^2(Q K^T / n + b)                 b: relative position bias (T5 buckets, one head)
    O = (U * A V) W_o        Sec. 2.2
    FLASH, chunk size C, G chunks (Sec. 3.2):
        quadratic (local)   relu^2(Q^quad_g K^quad_g^T / C + b) V_g           inside chunk g (causal inside g)
        linear (global)     non-causal: Q^lin_g sum_h K^lin_h^T V_h / T       all chunks
                            causal:     Q^lin_g sum_{h<g} K^lin_h^T V_h / C   previous chunks only
        O = (U * (quadratic + linear)) W_o

Scaling. The attention logits are Q K^T / n with n the length of the span attended over, as in the paper's
pseudo-code (`relu(qk / seq_len + bias) ** 2` for GAU, `/ chunk_size` for the FLASH quadratic part); relu^2 has
no softmax normaliser, and the paper controls the growth of the logits with the span length this way. We keep
it so that the paper's hyper-parameters carry over. A consequence (also in the paper): causal GAU output at t
ignores the tokens after t but not the total length T. The global linear term is divided by T (non-causal) or
C (causal), as in the paper's code. FLASH uses C = min(chunk_size, T), so a sequence no longer than one chunk
is exactly a GAU over its own length.

Positions: the paper's code uses both RoPE on Q, K (Su et al. 2021) and a relative position bias b; here b is a
one-head T5 bias (unigen.nn.relative_bias) and RoPE is on by default (`rope=False` drops it). In FLASH, RoPE
uses absolute positions over the whole sequence, so both the local and the global term see relative offsets.
Norms and residual connections are not inside these modules: unigen.nn.residual wraps them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unigen.errors import UserError
from unigen.nn.position import RotaryEmbedding, apply_rope
from unigen.nn.relative_bias import T5RelativeBias


def relu2_attention(q: Tensor, k: Tensor, v: Tensor, n: int, bias: Tensor | None = None, causal: bool = False,
                    key_mask: Tensor | None = None) -> Tensor:
    """GAU attention A V with A = relu^2(Q K^T / n + b), Hua et al. 2022, Sec. 2.2 and its GAU pseudo-code.

    q, k: (..., T, s), v: (..., T, e), bias: broadcastable to (..., T, T), key_mask: bool broadcastable to
    (..., T) with False for keys to drop (padding). Returns (..., T, e).
    """
    logits = torch.einsum("...is,...js->...ij", q, k) / n  # (..., T, T)
    if bias is not None:
        logits = logits + bias
    A = F.relu(logits).square()  # (..., T, T)
    if causal:
        T = q.shape[-2]
        A = A * torch.ones(T, T, dtype=torch.bool, device=A.device).tril()
    if key_mask is not None:
        A = A * key_mask.unsqueeze(-2)  # zero the columns of dropped keys
    return A @ v  # (..., T, e)


def chunk_linear_attention(q: Tensor, k: Tensor, v: Tensor, n: int, causal: bool = False) -> Tensor:
    """FLASH global term, Hua et al. 2022, Sec. 3.2: plain linear attention (no feature map) across chunks.

    Non-causal: Q_g sum_h K_h^T V_h / n (all chunks). Causal: Q_g sum_{h<g} K_h^T V_h / n, an exclusive prefix
    sum over chunks, so chunk g sees nothing of itself or later chunks (its own chunk is the quadratic part).
    q, k: (B, G, C, s), v: (B, G, C, e) -> (B, G, C, e). Padded keys must be zeroed by the caller.
    """
    kv = torch.einsum("bgcs,bgce->bgse", k, v) / n  # (B, G, s, e)
    if causal:
        kv = torch.cat([torch.zeros_like(kv[:, :1]), kv[:, :-1].cumsum(dim=1)], dim=1)  # (B, G, s, e)
    else:
        kv = kv.sum(dim=1, keepdim=True)  # (B, 1, s, e)
    return torch.einsum("bgcs,bgse->bgce", q, kv)  # (B, G, C, e)


class _GatedBase(nn.Module):
    """Shared parameters of GAU and FLASH: W_u, W_v, W_z in one projection, per-dim (gamma, beta), W_o, bias."""

    def __init__(self, dim: int, expansion: float, s: int, n_qk: int, num_buckets: int, max_distance: int,
                 bias: bool, rope: bool):
        super().__init__()
        e = int(expansion * dim)
        if dim <= 0 or s <= 0 or e <= 0:
            raise UserError(f"{type(self).__name__} needs positive dim, s and expansion; got dim={dim}, s={s}, "
                            f"expansion={expansion}")
        if rope and s % 2:
            raise UserError(f"{type(self).__name__} with rope=True needs an even s; got s={s}")
        self.dim, self.e, self.s = dim, e, s
        self.to_uvz = nn.Linear(dim, 2 * e + s, bias=bias)  # [W_u | W_v | W_z]
        # as in the paper's pseudo-code: gamma ~ N(0, 0.02^2), beta = 0, one row per derived tensor (q, k, ...)
        self.gamma = nn.Parameter(torch.randn(n_qk, s) * 0.02)
        self.beta = nn.Parameter(torch.zeros(n_qk, s))
        self.rel_bias = T5RelativeBias(1, num_buckets=num_buckets, max_distance=max_distance, bidirectional=True)
        self.out = nn.Linear(e, dim, bias=bias)  # W_o
        self.rotary = RotaryEmbedding(s) if rope else None

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        if x.dim() != 3 or x.shape[-1] != self.dim or x.shape[1] == 0:
            raise UserError(f"{type(self).__name__} expects (B, T >= 1, {self.dim}); got {tuple(x.shape)}")
        u, v, z = F.silu(self.to_uvz(x)).split([self.e, self.e, self.s], dim=-1)  # (B, T, e), (B, T, e), (B, T, s)
        base = z.unsqueeze(-2) * self.gamma + self.beta  # (B, T, n_qk, s)
        if self.rotary is not None:
            cos, sin = self.rotary(torch.arange(x.shape[1], device=x.device))  # (T, s) each
            base = apply_rope(base.transpose(1, 2), cos, sin).transpose(1, 2)  # (B, T, n_qk, s)
        return u, v, base.unbind(dim=-2)


class GAU(_GatedBase):
    """Gated attention unit, Hua et al. 2022, Sec. 2.2: one head, relu^2 attention, gated by U.

    forward(x: (B, T, dim), causal=False) -> (B, T, dim). Quadratic in T; see FLASH for the linear-time form.
    """

    def __init__(self, dim: int, expansion: float = 2, s: int = 128, num_buckets: int = 32,
                 max_distance: int = 128, bias: bool = True, rope: bool = True):
        super().__init__(dim, expansion, s, 2, num_buckets, max_distance, bias, rope)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        T = x.shape[1]
        u, v, (q, k) = self._project(x)  # (B, T, e), (B, T, e), (B, T, s) x2
        b = self.rel_bias(T)[0]  # (T, T)
        return self.out(u * relu2_attention(q, k, v, T, b, causal))  # (B, T, dim)


class FLASH(_GatedBase):
    """FLASH layer with mixed chunk attention, Hua et al. 2022, Sec. 3.2 and the FLASH pseudo-code.

    Local quadratic GAU attention inside chunks of `chunk_size` tokens plus global linear attention across
    chunks; four cheap transforms of Z give Q^quad, K^quad, Q^lin, K^lin. The sequence is zero-padded to a
    multiple of the chunk size; padded keys are masked out of both terms and padded outputs are dropped, so
    the result equals the unpadded computation. forward(x: (B, T, dim), causal=False) -> (B, T, dim).
    """

    def __init__(self, dim: int, chunk_size: int = 256, expansion: float = 2, s: int = 128, num_buckets: int = 32,
                 max_distance: int = 128, bias: bool = True, rope: bool = True):
        super().__init__(dim, expansion, s, 4, num_buckets, max_distance, bias, rope)
        if chunk_size <= 0:
            raise UserError(f"FLASH needs chunk_size > 0; got {chunk_size}")
        self.chunk_size = chunk_size

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        B, T, _ = x.shape
        u, v, (quad_q, quad_k, lin_q, lin_k) = self._project(x)  # (B, T, e) x2, (B, T, s) x4
        C = min(self.chunk_size, T)
        G = math.ceil(T / C)
        P = G * C - T  # padding at the end

        def chunks(t: Tensor) -> Tensor:  # (B, T, c) -> (B, G, C, c)
            return F.pad(t, (0, 0, 0, P)).view(B, G, C, t.shape[-1])

        valid = (torch.arange(G * C, device=x.device) < T).view(G, C)  # (G, C) False on padding
        vg = chunks(v)  # (B, G, C, e)
        b = self.rel_bias(C)[0]  # (C, C) relative bias inside a chunk
        quad = relu2_attention(chunks(quad_q), chunks(quad_k), vg, C, b, causal, key_mask=valid)  # (B, G, C, e)
        lin_kg = chunks(lin_k) * valid.unsqueeze(-1)  # (B, G, C, s) padded keys zeroed
        lin = chunk_linear_attention(chunks(lin_q), lin_kg, vg, C if causal else T, causal)  # (B, G, C, e)
        mixed = (quad + lin).reshape(B, G * C, self.e)[:, :T]  # (B, T, e)
        return self.out(u * mixed)  # (B, T, dim)
