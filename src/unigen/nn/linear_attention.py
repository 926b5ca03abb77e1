"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs", Sec. 3.2-3.4).

Notation (paper -> code):
    phi(x) = elu(x) + 1            `elu_feature_map`              eq. 7
    Q, K, V                         q (B, H, T, d), k (B, H, S, d), v (B, H, S, d_v)
    S_i = sum_{j<=i} phi(K_j) V_j^T state S (B, H, d, d_v)        Sec. 3.3
    Z_i = sum_{j<=i} phi(K_j)       state z (B, H, d)             Sec. 3.3
    V'_i = phi(Q_i)^T S_i / (phi(Q_i)^T Z_i)                      Sec. 3.3 (causal), Sec. 3.2 (non-causal)

Numerics: phi(x) > 0 so the normaliser phi(Q_i)^T Z_i is positive in exact arithmetic, but it can underflow
(very negative q or k give phi ~ exp(x) ~ 0), so every normaliser is `phi(Q_i)^T Z_i + eps` with
`eps = 1e-6` (as in the authors' fast-transformers code). The causal parallel form keeps the prefix sums in
float32 even for half-precision inputs, since a cumulative sum over T terms loses ~log2(T) bits.
Queries are not scaled by 1/sqrt(d): the paper's similarity is phi(q)^T phi(k) with no temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unigen.errors import UserError

EPS = 1e-6


def elu_feature_map(x: Tensor) -> Tensor:
    """phi(x) = elu(x) + 1, Katharopoulos et al. 2020, eq. 7; strictly positive."""
    return F.elu(x) + 1.0


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise UserError(f"linear attention wants q, k, v of shape (B, H, T, d); got {tuple(q.shape)}, "
                        f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise UserError(f"linear attention shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                        f"v {tuple(v.shape)}")


def linear_attention(q: Tensor, k: Tensor, v: Tensor, eps: float = EPS) -> Tensor:
    """Non-causal linear attention, Katharopoulos et al. 2020, Sec. 3.2: O(N) in the sequence length.

    V'_i = phi(Q_i)^T (sum_j phi(K_j) V_j^T) / (phi(Q_i)^T sum_j phi(K_j) + eps).
    q: (B, H, T, d), k: (B, H, S, d), v: (B, H, S, d_v) -> (B, H, T, d_v).
    """
    _check_qkv(q, k, v)
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)  # (B, H, T, d), (B, H, S, d)
    kv = torch.einsum("bhsd,bhse->bhde", phi_k, v)  # (B, H, d, d_v)
    z = phi_k.sum(dim=2)  # (B, H, d)
    num = torch.einsum("bhtd,bhde->bhte", phi_q, kv)  # (B, H, T, d_v)
    den = torch.einsum("bhtd,bhd->bht", phi_q, z) + eps  # (B, H, T)
    return num / den.unsqueeze(-1)


def causal_linear_attention(q: Tensor, k: Tensor, v: Tensor, eps: float = EPS) -> Tensor:
    """Causal linear attention in parallel form, Katharopoulos et al. 2020, Sec. 3.3, prefix sums.

    S_i = cumsum_j phi(K_j) V_j^T and Z_i = cumsum_j phi(K_j) over time; V'_i = phi(Q_i)^T S_i / (phi(Q_i)^T Z_i
    + eps). Memory is O(T d d_v) (the paper's CUDA kernel avoids it; this form is exact and differentiable).
    q, k: (B, H, T, d), v: (B, H, T, d_v) -> (B, H, T, d_v).
    """
    _check_qkv(q, k, v)
    if q.shape[2] != k.shape[2]:
        raise UserError(f"causal linear attention needs as many queries as keys; got {q.shape[2]} and {k.shape[2]}")
    dtype = q.dtype
    phi_q, phi_k = elu_feature_map(q.float()), elu_feature_map(k.float())  # (B, H, T, d)
    S = torch.cumsum(phi_k.unsqueeze(-1) * v.float().unsqueeze(-2), dim=2)  # (B, H, T, d, d_v)
    z = torch.cumsum(phi_k, dim=2)  # (B, H, T, d)
    num = torch.einsum("bhtd,bhtde->bhte", phi_q, S)  # (B, H, T, d_v)
    den = (phi_q * z).sum(-1) + eps  # (B, H, T)
    return (num / den.unsqueeze(-1)).to(dtype)


def linear_attention_step(q_t: Tensor, k_t: Tensor, v_t: Tensor, state: tuple[Tensor, Tensor] | None = None,
                          eps: float = EPS) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One recurrent step of causal linear attention, Katharopoulos et al. 2020, Sec. 3.4 (the RNN view).

    S_i = S_{i-1} + phi(K_i) V_i^T, z_i = z_{i-1} + phi(K_i), out_i = phi(Q_i)^T S_i / (phi(Q_i)^T z_i + eps).
    q_t, k_t: (B, H, d), v_t: (B, H, d_v), state = (S: (B, H, d, d_v), z: (B, H, d)) or None for zeros.
    Returns (out_t: (B, H, d_v), new state). The state is O(1) in the sequence length.
    """
    if q_t.dim() != 3 or k_t.shape != q_t.shape or v_t.shape[:2] != q_t.shape[:2]:
        raise UserError(f"linear_attention_step wants q_t, k_t (B, H, d) and v_t (B, H, d_v); got "
                        f"{tuple(q_t.shape)}, {tuple(k_t.shape)}, {tuple(v_t.shape)}")
    phi_q, phi_k = elu_feature_map(q_t.float()), elu_feature_map(k_t.float())  # (B, H, d)
    if state is None:
        B, H, d = q_t.shape
        S = q_t.new_zeros(B, H, d, v_t.shape[-1], dtype=torch.float32)
        z = q_t.new_zeros(B, H, d, dtype=torch.float32)
    else:
        S, z = state
    S = S + phi_k.unsqueeze(-1) * v_t.float().unsqueeze(-2)  # (B, H, d, d_v)
    z = z + phi_k  # (B, H, d)
    num = torch.einsum("bhd,bhde->bhe", phi_q, S)  # (B, H, d_v)
    den = (phi_q * z).sum(-1, keepdim=True) + eps  # (B, H, 1)
    return (num / den).to(q_t.dtype), (S, z)


class LinearAttention(nn.Module):
    """Multi-head linear attention layer, Katharopoulos et al. 2020, Sec. 3.2 and Sec. 3.4 (RNN form).

    forward(x: (B, T, dim), causal=False) -> (B, T, dim); step(x_t: (B, dim), state) -> ((B, dim), state)
    decodes one token with an O(1) state and matches forward(causal=True) position by position.
    """

    def __init__(self, dim: int, n_heads: int, bias: bool = False):
        super().__init__()
        if dim <= 0 or n_heads <= 0 or dim % n_heads != 0:
            raise UserError(f"LinearAttention needs dim divisible by n_heads; got dim={dim}, n_heads={n_heads}")
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        *lead, _ = x.shape
        qkv = self.qkv(x).view(*lead, 3, self.n_heads, self.head_dim)  # (..., 3, H, d)
        return qkv.unbind(dim=-3)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise UserError(f"LinearAttention expects (B, T, {self.dim}); got {tuple(x.shape)}")
        B, T, _ = x.shape
        q, k, v = (t.transpose(1, 2) for t in self._heads(x))  # (B, H, T, d) each
        fn = causal_linear_attention if causal else linear_attention
        o = fn(q, k, v)  # (B, H, T, d)
        return self.out(o.transpose(1, 2).reshape(B, T, self.dim))  # (B, T, dim)

    def step(self, x_t: Tensor, state: tuple[Tensor, Tensor] | None = None
             ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if x_t.dim() != 2 or x_t.shape[-1] != self.dim:
            raise UserError(f"LinearAttention.step expects (B, {self.dim}); got {tuple(x_t.shape)}")
        q, k, v = self._heads(x_t)  # (B, H, d) each
        o, state = linear_attention_step(q, k, v, state)  # (B, H, d)
        return self.out(o.reshape(x_t.shape[0], self.dim)), state  # (B, dim)
