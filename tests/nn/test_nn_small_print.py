"""Position encodings, attention and relative biases: the small print found by mutation testing
(benchmarks/mutation.md): the papers' default constants, boundaries of the input checks and their messages,
what a given argument changes (offsets, explicit positions, rope layout, dropout), dtypes kept."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from unigen.errors import UserError
from unigen.nn import attention as A
from unigen.nn import position as P
from unigen.nn import relative_bias as R


def raises(msg):
    return pytest.raises(UserError, match="^" + re.escape(msg) + "$")


# ------------------------------------------------------------------------------------------- relative biases
def test_relative_lengths_offsets_and_messages():
    for T, S in ((0, 3), (3, 0)):
        with raises(f"relative position bias needs positive lengths; got T={T}, S={S}"):
            R.alibi_bias(2, T, S)
    m = R.alibi_slopes(2)
    assert m.dtype == torch.float32
    got = R.alibi_bias(2, 2, 4, offset=0)  # queries at positions 0, 1 (not aligned to the end)
    i, j = torch.arange(2)[:, None], torch.arange(4)[None, :]
    torch.testing.assert_close(got, -m[:, None, None] * (j - i).abs().float())
    assert R.alibi_bias(1, 1, 1).shape == (1, 1, 1)
    for n in (0, 2.0):
        with raises(f"alibi_slopes needs a positive number of heads; got {n!r}"):
            R.alibi_slopes(n)


def test_t5_buckets_default_to_the_papers_32_buckets_and_distance_128():
    r = torch.arange(-300, 301)
    assert torch.equal(R.t5_relative_bucket(r), R.t5_relative_bucket(r, True, 32, 128))
    bias = R.T5RelativeBias(3)
    assert bias.embedding.num_embeddings == 32 and bias.bidirectional and bias.max_distance == 128
    # the causal form puts every future key in bucket 0
    assert (R.t5_relative_bucket(torch.arange(1, 5), bidirectional=False) == 0).all()


def test_t5_bucket_and_module_checks():
    R.t5_relative_bucket(torch.arange(-3, 4), True, 4, 1)      # the smallest valid settings
    R.t5_relative_bucket(torch.arange(-3, 4), False, 2, 1)
    for bidi, nb, md in ((True, 3, 8), (False, 1, 8), (True, 8, 0)):
        with raises(f"t5_relative_bucket needs num_buckets >= {4 if bidi else 2} and max_distance > 0; got "
                    f"num_buckets={nb}, max_distance={md}"):
            R.t5_relative_bucket(torch.zeros(1, dtype=torch.long), bidi, nb, md)
    with raises("T5RelativeBias needs n_heads > 0; got 0"):
        R.T5RelativeBias(0)
    R.T5RelativeBias(1, num_buckets=3, max_distance=5, bidirectional=False)  # validated with its own settings
    with pytest.raises(UserError, match="num_buckets >= 4"):
        R.T5RelativeBias(1, num_buckets=3, max_distance=5)
    m = R.T5RelativeBias(2, num_buckets=8, max_distance=3)
    want = m.embedding(R.t5_relative_bucket(torch.arange(3)[None, :] - torch.arange(1, 3)[:, None], True, 8, 3))
    torch.testing.assert_close(m(2, 3), want.permute(2, 0, 1))  # default offset S - T: queries at the end
    want0 = m.embedding(R.t5_relative_bucket(torch.arange(3)[None, :] - torch.arange(2)[:, None], True, 8, 3))
    torch.testing.assert_close(m(2, 3, offset=0), want0.permute(2, 0, 1))


# ----------------------------------------------------------------------------------------------- attention
def test_kv_cache_and_attention_checks():
    for b, n in ((0, 4), (4, 0)):
        with raises(f"KVCache needs positive batch_size and max_len, got {b}, {n}"):
            A.KVCache(b, n)
    A.KVCache(1, 1)
    with raises("dim 8 is not divisible by n_heads 0"):
        A.Attention(8, 0)
    with raises("dim 8 is not divisible by n_heads 3"):
        A.Attention(8, 3)
    with raises("n_heads 4 is not a multiple of n_kv_heads 0"):
        A.Attention(8, 4, 0)
    one = A.Attention(8, 1)  # one head is fine
    assert one.q_norm is None and one.k_norm is None and one.proj.bias is None  # defaults: no qk-norm, no bias
    assert A.Attention(8, 2, bias=True).proj.bias is not None
    with raises("attention mask must be bool (True = may attend), got torch.float32 (floats: attn_bias)"):
        one(torch.zeros(1, 2, 8), mask=torch.zeros(2, 2))
    with raises("padding mask expects (B, S), got shape (3,)"):
        A.padding_mask(torch.zeros(3, dtype=torch.bool))


def naive(q, k, v, mask=None):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1) @ v


def test_interleaved_rope_layout_is_applied_to_queries_and_keys():
    torch.manual_seed(0)
    att = A.Attention(8, 2).eval()
    x = torch.randn(2, 5, 8)
    rope = P.RotaryEmbedding(4, layout="interleaved")(torch.arange(5))
    q, k, v = att.qkv(x).split([8, 8, 8], -1)
    q, k, v = (t.view(2, 5, 2, 4).transpose(1, 2) for t in (q, k, v))
    q, k = P.apply_rope(q, *rope, "interleaved"), P.apply_rope(k, *rope, "interleaved")
    want = att.proj(naive(q, k, v).transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(att(x, rope=rope), want, atol=1e-5, rtol=1e-5)


def test_a_plain_tuple_rope_means_the_half_layout():
    torch.manual_seed(3)
    att = A.Attention(8, 2).eval()
    x = torch.randn(1, 4, 8)
    rope = P.RotaryEmbedding(4)(torch.arange(4))  # a Rope in the "half" layout
    torch.testing.assert_close(att(x, rope=(rope[0], rope[1])), att(x, rope=rope))


def test_attention_dropout_acts_in_training_only_on_both_paths():
    torch.manual_seed(1)
    att = A.Attention(8, 2, dropout=0.5)
    x = torch.randn(2, 6, 8)
    att.eval()
    ref = att(x)
    torch.testing.assert_close(att(x), ref)
    att.train()
    with torch.no_grad():  # SDPA path
        assert not torch.allclose(att(x), ref)
    q, k, v = (torch.randn(1, 2, 4, 8, requires_grad=True) for _ in range(3))
    plain = A.attention_matmul(q, k, v)
    torch.testing.assert_close(A.attention_matmul(q, k, v, dropout_p=0.0), plain)
    torch.manual_seed(2)
    dropped = A.attention_matmul(q, k, v, dropout_p=0.5)
    assert not torch.allclose(dropped, plain)


def test_a_key_less_row_of_a_4d_mask_gives_zeros_not_nan():
    q, k, v = (torch.randn(2, 2, 3, 4) for _ in range(3))
    mask = torch.ones(2, 1, 3, 3, dtype=torch.bool)
    mask[1, 0, 2] = False  # batch 1, query 2 sees no key
    out = A.attention_matmul(q, k, v, mask)
    assert torch.isfinite(out).all() and (out[1, :, 2] == 0).all()
    torch.testing.assert_close(out[0], naive(q[0], k[0], v[0]))


# ---------------------------------------------------------------------------------------- position encodings
def test_sinusoidal_embedding_small_dims_and_checks():
    x = torch.tensor([0.0, 1.0, 2.5])
    torch.testing.assert_close(P.sinusoidal_embedding(x, 2), torch.stack([torch.cos(x), torch.sin(x)], -1))
    torch.testing.assert_close(P.sinusoidal_embedding(x, 3), torch.stack([torch.cos(x), torch.sin(x), 0 * x], -1))
    assert torch.equal(P.sinusoidal_embedding(x, 1), torch.zeros(3, 1))
    with raises("sinusoidal embedding dim must be positive, got 0"):
        P.sinusoidal_embedding(x, 0)


def test_absolute_positions_defaults_and_explicit_positions():
    s = P.SinusoidalPositions(6, 10)
    torch.testing.assert_close(s.embed(10), P.sinusoidal_embedding(torch.arange(10), 6, 10000.0))  # Vaswani's base
    assert "table" not in s.state_dict()
    x = torch.zeros(2, 2, 6, dtype=torch.bfloat16)
    out = s(x, positions=torch.tensor([7, 3]))
    assert out.dtype == torch.bfloat16 and torch.equal(out[0], s.table[[7, 3]].to(torch.bfloat16))
    with raises("positions must lie in [0, 10), got [3, 10]"):
        s.embed(torch.tensor([3, 10]))
    torch.manual_seed(0)
    learned = P.LearnedPositions(64, 512)
    sd = learned.weight.std().item()
    assert abs(sd - 0.02) < 5 * 0.02 / math.sqrt(2 * learned.weight.numel())  # GPT-2's N(0, 0.02^2)
    y = learned(torch.zeros(1, 2, 64), positions=torch.tensor([5, 1]))
    assert torch.equal(y[0], learned.weight[[5, 1]].detach())


def test_rotary_defaults_and_checks():
    torch.testing.assert_close(P.RotaryEmbedding(8)(torch.arange(6)), P.RotaryEmbedding(8, base=10000.0)(torch.arange(6)))
    ax = P.AxialRotaryEmbedding2D(8)
    assert "inv_freq" not in ax.state_dict()  # derived from head_dim and base, never saved
    torch.testing.assert_close(ax.inv_freq, 10000.0 ** (-torch.arange(2) / 2), rtol=1e-6, atol=0)  # RoFormer's base
    assert "inv_freq" not in P.RotaryEmbedding(8).state_dict()
    P.AxialRotaryEmbedding2D(4)(1, 1)
    for d in (0, 6):
        with raises(f"2-D axial rotary head_dim must be a positive multiple of 4, got {d}"):
            P.AxialRotaryEmbedding2D(d)
    for h, w, n in ((0, 2, 0), (2, 0, 0), (2, 2, -1)):
        with raises(f"axial RoPE needs h, w > 0 and n_prefix >= 0, got h={h}, w={w}, n_prefix={n}"):
            ax(h, w, n)
    P.RotaryEmbedding(2)
    with raises("rotary head_dim must be a positive even number, got 0"):
        P.RotaryEmbedding(0)
    x = torch.randn(1, 1, 3, 4)
    assert torch.equal(P.rotate(x), P.rotate(x, "half"))
    rope = P.RotaryEmbedding(4)(torch.arange(3))
    assert P.apply_rope(x.bfloat16(), *rope).dtype == torch.bfloat16
    with raises("unknown rotary layout 'spiral'; choose one of ('half', 'interleaved')"):
        P.RotaryEmbedding(4, layout="spiral")


def test_weight_permutation_checks():
    with raises("5 rows do not split into 2 heads of even size"):
        P.half_to_interleaved(torch.zeros(5, 3), 2)
    with raises("6 rows do not split into 2 heads of even size"):
        P.half_to_interleaved(torch.zeros(6, 4), 2)
    w = torch.arange(8.0)[:, None].expand(8, 3)
    assert torch.equal(P.interleaved_to_half(P.half_to_interleaved(w, 2), 2), w)
