"""Attention, masks and the KV cache against brute force and a naive softmax(QK^T/sqrt(d) + bias) V."""
import math

import pytest
import torch

from unigen.errors import UserError
from unigen.nn.attention import Attention, KVCache, causal_mask, combine_masks, padding_mask, peeking
from unigen.nn.position import RotaryEmbedding


# ------------------------------------------------------------------------------------------- masks, brute force
@pytest.mark.parametrize("T,S", [(1, 1), (4, 4), (3, 7), (5, 9)])
def test_causal_mask_matches_double_loop(T, S):
    want = torch.zeros(T, S, dtype=torch.bool)
    for i in range(T):
        for j in range(S):
            want[i, j] = j <= i + (S - T)  # query i is absolute position S - T + i
    assert torch.equal(causal_mask(T, S), want)


def test_causal_mask_default_square_is_lower_triangular():
    assert torch.equal(causal_mask(6), torch.ones(6, 6, dtype=torch.bool).tril())


def test_padding_and_combined_masks_match_double_loop():
    pad = torch.tensor([[False, False, True, True], [False, False, False, False]])
    m = combine_masks(None, causal_mask(4), padding_mask(pad), None)
    assert m.shape == (2, 1, 4, 4)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                assert bool(m[b, 0, i, j]) == (j <= i and not bool(pad[b, j]))
    assert combine_masks(None, None) is None
    with pytest.raises(UserError):
        padding_mask(torch.zeros(3, dtype=torch.bool))


# ------------------------------------------------------------------------------------------- naive reference
def naive_attention(attn: Attention, x, mask=None, bias=None, rope=None, causal=False):
    """Per-head loop, explicit softmax, kv weights repeated per query group; shares only the parameters."""
    B, T, C = x.shape
    H, Hkv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    W = attn.qkv.weight
    Wq, Wk, Wv = W[:H * D], W[H * D:(H + Hkv) * D], W[(H + Hkv) * D:]
    outs = []
    for h in range(H):
        g = h // (H // Hkv)
        q = x @ Wq[h * D:(h + 1) * D].T  # (B, T, D)
        k = x @ Wk[g * D:(g + 1) * D].T
        v = x @ Wv[g * D:(g + 1) * D].T
        if attn.q_norm is not None:
            q = q / torch.sqrt((q ** 2).mean(-1, keepdim=True) + attn.q_norm.eps) * attn.q_norm.weight
            k = k / torch.sqrt((k ** 2).mean(-1, keepdim=True) + attn.k_norm.eps) * attn.k_norm.weight
        if rope is not None:  # half layout, written out with explicit pairs
            cos, sin = rope
            q1, q2 = q[..., :D // 2], q[..., D // 2:]
            k1, k2 = k[..., :D // 2], k[..., D // 2:]
            c, s = cos[..., :D // 2], sin[..., :D // 2]
            q = torch.cat([q1 * c - q2 * s, q2 * c + q1 * s], -1)
            k = torch.cat([k1 * c - k2 * s, k2 * c + k1 * s], -1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D)  # (B, T, T)
        if bias is not None:
            scores = scores + bias[:, h] if bias.dim() == 4 else scores + bias
        allowed = torch.ones(B, T, T, dtype=torch.bool)
        if causal:
            allowed &= torch.ones(T, T, dtype=torch.bool).tril()
        if mask is not None:
            allowed &= mask.expand(B, 1, T, T)[:, 0]
        scores = scores.masked_fill(~allowed, float("-inf"))
        outs.append(torch.softmax(scores, -1) @ v)  # (B, T, D)
    return torch.cat(outs, -1) @ attn.proj.weight.T  # (B, T, C)


@pytest.mark.parametrize("n_kv", [4, 2, 1])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_equals_naive(n_kv, qk_norm):
    torch.manual_seed(0)
    attn = Attention(32, 4, n_kv, qk_norm=qk_norm)
    if qk_norm:
        with torch.no_grad():
            attn.q_norm.weight.uniform_(0.5, 1.5)
            attn.k_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 6, 32)
    pad = padding_mask(torch.tensor([[False] * 6, [False] * 4 + [True] * 2]))
    bias = torch.randn(2, 4, 6, 6)
    rope = RotaryEmbedding(8)(torch.arange(6))
    torch.testing.assert_close(attn(x), naive_attention(attn, x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn(x, is_causal=True), naive_attention(attn, x, causal=True), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn(x, mask=pad, is_causal=True, attn_bias=bias, rope=rope),
                               naive_attention(attn, x, mask=pad, bias=bias, rope=rope, causal=True),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn(x, attn_bias=bias[0, 0]), naive_attention(attn, x, bias=bias[0, 0]),
                               atol=1e-5, rtol=1e-5)


def test_gqa_equals_mha_with_repeated_kv_weights():
    torch.manual_seed(1)
    H, Hkv, D = 6, 2, 4
    gqa = Attention(24, H, Hkv, bias=True)
    mha = Attention(24, H, bias=True)
    with torch.no_grad():
        w, b = gqa.qkv.weight, gqa.qkv.bias
        q, k, v = w.split([H * D, Hkv * D, Hkv * D])
        qb, kb, vb = b.split([H * D, Hkv * D, Hkv * D])
        rep = lambda t: t.view(Hkv, D, *t.shape[1:]).repeat_interleave(H // Hkv, 0).reshape(H * D, *t.shape[1:])
        mha.qkv.weight.copy_(torch.cat([q, rep(k), rep(v)]))
        mha.qkv.bias.copy_(torch.cat([qb, rep(kb), rep(vb)]))
        mha.proj.load_state_dict(gqa.proj.state_dict())
    x = torch.randn(3, 5, 24)
    rope = RotaryEmbedding(D)(torch.arange(5))
    torch.testing.assert_close(gqa(x, is_causal=True, rope=rope), mha(x, is_causal=True, rope=rope))


def test_qk_norm_gives_unit_rms_queries_and_keys():
    torch.manual_seed(2)
    attn = Attention(16, 2, qk_norm=True)
    q = attn.qkv(torch.randn(2, 3, 16) * 50)[..., :16].view(2, 3, 2, 8)
    rms = attn.q_norm(q).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-4, rtol=0)


def test_bad_head_counts_raise_user_error():
    with pytest.raises(UserError):
        Attention(30, 4)
    with pytest.raises(UserError):
        Attention(32, 4, 3)


# ------------------------------------------------------------------------------------------- KV cache
def _setup(seed=3, n_kv=2):
    torch.manual_seed(seed)
    attn = Attention(32, 4, n_kv, qk_norm=True).eval()
    return attn, torch.randn(2, 9, 32), RotaryEmbedding(8)


@torch.no_grad()
@pytest.mark.parametrize("chunks", [[1] * 9, [4, 2, 3], [9]])
def test_kv_cache_incremental_equals_full_causal(chunks):
    attn, x, rope = _setup()
    full = attn(x, is_causal=True, rope=rope(torch.arange(9)))
    cache, outs, s = KVCache(2, 16), [], 0
    for n in chunks:
        outs.append(attn(x[:, s:s + n], is_causal=True, rope=rope, cache=cache))  # rope module: positions from cache
        s += n
    assert cache.length == 9
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_kv_cache_peek_then_commit_equals_block_causal_full():
    attn, x, rope = _setup(4)
    bs = 3
    blk = torch.arange(9) // bs
    m_bc = blk[None, :] <= blk[:, None]  # (9, 9) block-causal: query i sees the keys of blocks <= its own
    full = attn(x, mask=m_bc, rope=rope(torch.arange(9)))
    cache = KVCache(2, 9)
    for s in range(0, 9, bs):
        blk = x[:, s:s + bs]
        with peeking([cache]):
            for _ in range(2):  # repeated peeks see the same prefix and do not grow the cache
                junk = attn(torch.randn_like(blk), rope=rope, cache=cache)
                assert cache.length == s and junk.shape == blk.shape
            peek = attn(blk, rope=rope, cache=cache)
        assert cache.commit and cache.length == s
        committed = attn(blk, rope=rope, cache=cache)
        assert cache.length == s + bs
        torch.testing.assert_close(peek, full[:, s:s + bs], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(committed, full[:, s:s + bs], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_kv_cache_with_explicit_positions_and_mask():
    attn, x, rope = _setup(5, n_kv=4)
    pos = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 4])
    m = causal_mask(9) & padding_mask(torch.tensor([[False] * 9, [True] + [False] * 8]))
    full = attn(x, mask=m, rope=rope(pos))
    cache = KVCache(2, 9)
    a = attn(x[:, :5], mask=m[..., :5, :5], rope=rope(pos[:5]), cache=cache)
    b = attn(x[:, 5:], mask=m[..., 5:, :], rope=rope, positions=pos[5:], cache=cache)
    torch.testing.assert_close(torch.cat([a, b], 1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_errors_and_reset():
    cache = KVCache(2, 4)
    k = torch.zeros(2, 1, 3, 8)
    cache.update(k, k)
    with pytest.raises(UserError, match="overflow"):
        cache.update(k, k)
    with pytest.raises(UserError, match="batch size"):
        cache.update(k[:1], k[:1])
    cache.reset()
    assert cache.length == 0 and cache.update(k, k)[0].shape == (2, 1, 3, 8)
