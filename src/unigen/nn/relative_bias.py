"""Relative position biases as additive float attention biases of shape (H, T, S) (for Attention's `attn_bias`).

Notation:
    i       query index 0..T-1, at absolute position offset + i (offset = S - T by default)
    j       key index 0..S-1, at absolute position j
    m_h     ALiBi slope of head h (Press et al. 2022, Sec. 3)
    r       relative position j - i_abs ("memory minus query", the T5 convention; r < 0 is the past)

Queries are aligned to the end of the keys by default (query i sits at absolute position S - T + i), which is
what incremental decoding with a key/value cache needs; for self-attention without a cache (T == S) it is the
usual i.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from unigen.errors import UserError


def _relative_positions(T: int, S: int, offset: int | None, device=None) -> Tensor:
    """r[i, j] = j - (offset + i), with offset = S - T unless given; shape (T, S), long."""
    if T <= 0 or S <= 0:
        raise UserError(f"relative position bias needs positive lengths; got T={T}, S={S}")
    offset = S - T if offset is None else offset
    q_pos = torch.arange(T, device=device) + offset  # (T,)
    k_pos = torch.arange(S, device=device)  # (S,)
    return k_pos[None, :] - q_pos[:, None]  # (T, S)


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi head slopes m_h, Press et al. 2022 ("Train Short, Test Long"), Sec. 3; non-power-of-2 rule from their code.

    For n a power of 2 the slopes are the geometric sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8) (8 heads:
    1/2, 1/4, ..., 1/256). Otherwise take the slopes for the closest lower power of 2, p, then append every
    other slope of the 2p-head sequence (the odd-indexed powers), first n - p of them.
    Returns float32 (n_heads,).
    """
    if not isinstance(n_heads, int) or n_heads <= 0:
        raise UserError(f"alibi_slopes needs a positive number of heads; got {n_heads!r}")

    def power_of_2(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    p = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = power_of_2(p) + power_of_2(2 * p)[0::2][: n_heads - p]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(n_heads: int, T: int, S: int | None = None, offset: int | None = None, device=None) -> Tensor:
    """ALiBi additive bias -m_h |i - j|, Press et al. 2022, Sec. 3 (Figure 3): linear in distance, per head.

    The paper's causal form is -m_h (i - j) for j <= i; future keys are masked by the causal mask anyway, so
    the symmetric |i - j| form serves causal and bidirectional use alike. Returns float32 (H, T, S).
    """
    S = T if S is None else S
    r = _relative_positions(T, S, offset, device)  # (T, S)
    m = alibi_slopes(n_heads).to(device)  # (H,)
    return -m[:, None, None] * r.abs().float()[None]  # (H, T, S)


def t5_relative_bucket(relative_position: Tensor, bidirectional: bool = True, num_buckets: int = 32,
                       max_distance: int = 128) -> Tensor:
    """T5 relative-position bucket, Raffel et al. 2020 ("Exploring the Limits of Transfer Learning"), Sec. 2.1.

    relative_position r = key position - query position. Bidirectional: half the buckets for r > 0 (keys in
    the future), half for r <= 0; causal: every r > 0 falls in bucket 0 (it is masked anyway) and n = -r.
    Inside each half, distances n < max_exact = num_buckets_half // 2 get their own bucket; larger ones share
    logarithmically wider buckets up to max_distance, beyond which they all land in the last bucket.
    Returns long tensor of the same shape.
    """
    if num_buckets < (4 if bidirectional else 2) or max_distance <= 0:
        raise UserError(f"t5_relative_bucket needs num_buckets >= {4 if bidirectional else 2} and max_distance > 0;"
                        f" got num_buckets={num_buckets}, max_distance={max_distance}")
    r = relative_position.long()
    if bidirectional:
        half = num_buckets // 2
        offset = (r > 0).long() * half  # future keys use the upper half
        n = r.abs()
    else:
        half = num_buckets
        offset = torch.zeros_like(r)
        n = (-r).clamp(min=0)  # distance into the past; the future collapses to 0
    max_exact = half // 2
    # log-spaced bucket for n >= max_exact; clamp n below so the log never sees 0 (those entries are exact)
    n_large = n.clamp(min=max_exact).float()
    log_ratio = torch.log(n_large / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (half - max_exact)).long()
    large = large.clamp(max=half - 1)
    return offset + torch.where(n < max_exact, n, large)


class T5RelativeBias(nn.Module):
    """Learned per-head scalar bias per relative-position bucket, Raffel et al. 2020, Sec. 2.1.

    forward(T, S=None, offset=None) -> float (H, T, S), with query i at absolute position offset + i
    (offset defaults to S - T, see the module docstring) and key j at position j.
    """

    def __init__(self, n_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        if n_heads <= 0:
            raise UserError(f"T5RelativeBias needs n_heads > 0; got {n_heads}")
        t5_relative_bucket(torch.zeros(1, dtype=torch.long), bidirectional, num_buckets, max_distance)  # validate
        self.n_heads, self.num_buckets, self.max_distance = n_heads, num_buckets, max_distance
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(num_buckets, n_heads)

    def forward(self, T: int, S: int | None = None, offset: int | None = None) -> Tensor:
        S = T if S is None else S
        device = self.embedding.weight.device
        r = _relative_positions(T, S, offset, device)  # (T, S)
        buckets = t5_relative_bucket(r, self.bidirectional, self.num_buckets, self.max_distance)  # (T, S)
        return self.embedding(buckets).permute(2, 0, 1)  # (H, T, S)
