"""ALiBi slopes against the paper's values and rule; T5 buckets and bias against Hugging Face transformers' T5."""

import math

import pytest
import torch

from unigen.errors import UserError
from unigen.nn.attention import Attention
from unigen.nn.relative_bias import T5RelativeBias, alibi_bias, alibi_slopes, t5_relative_bucket


def test_alibi_slopes_8_heads_are_the_papers_values():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([1 / 2 ** i for i in range(1, 9)]))


def test_alibi_slopes_16_heads_interleave_the_8_head_sequence():
    # Press et al. 2022, Sec. 3: 16 heads use the geometric mean-interpolated sequence 1/sqrt(2), 1/2, ..., 1/256
    torch.testing.assert_close(alibi_slopes(16), torch.tensor([2 ** (-(i + 1) / 2) for i in range(16)]))


def test_alibi_slopes_non_power_of_2_rule():
    # 6 heads: the 4-head slopes 1/4, 1/16, 1/64, 1/256, then every other 8-head slope: 1/2, 1/8
    torch.testing.assert_close(alibi_slopes(6), torch.tensor([1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]))
    # 12 heads: the 8-head slopes, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 from the 16-head sequence
    expected = [2.0 ** -i for i in range(1, 9)] + [2.0 ** -(i + 0.5) for i in range(4)]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(expected))
    assert len(alibi_slopes(1)) == 1 and alibi_slopes(1)[0] == 2.0 ** -8


def test_alibi_bias_is_linear_in_distance():
    H, T = 6, 7
    b = alibi_bias(H, T)  # (H, T, T)
    assert b.shape == (H, T, T)
    m = alibi_slopes(H)
    for i in range(T):
        for j in range(T):
            torch.testing.assert_close(b[:, i, j], -m * abs(i - j))
    # second differences along a row are zero away from the diagonal (exactly linear in distance)
    torch.testing.assert_close(b[:, 5, :5].diff(n=2, dim=-1), torch.zeros(H, 3))


def test_alibi_bias_with_cache_aligns_queries_to_the_end():
    full = alibi_bias(4, 10)  # (H, 10, 10)
    torch.testing.assert_close(alibi_bias(4, 3, 10), full[:, 7:])


def test_t5_bucket_matches_transformers():
    T5Attention = pytest.importorskip("transformers.models.t5.modeling_t5").T5Attention
    g = torch.Generator().manual_seed(0)
    rel = torch.cat([torch.randint(-1000, 1000, (4000,), generator=g), torch.arange(-300, 301)])
    for bidirectional in (True, False):
        for num_buckets, max_distance in ((32, 128), (8, 20), (64, 256), (10, 50)):
            ours = t5_relative_bucket(rel, bidirectional, num_buckets, max_distance)
            ref = T5Attention._relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
            assert torch.equal(ours, ref), (bidirectional, num_buckets, max_distance)


def test_t5_bias_matches_transformers_compute_bias():
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    from transformers import T5Config
    for is_decoder in (False, True):
        cfg = T5Config(d_model=16, d_kv=4, num_heads=4, relative_attention_num_buckets=16,
                       relative_attention_max_distance=40, is_decoder=is_decoder)
        ref = t5.T5Attention(cfg, has_relative_attention_bias=True)
        ours = T5RelativeBias(4, num_buckets=16, max_distance=40, bidirectional=not is_decoder)
        with torch.no_grad():
            ours.embedding.weight.copy_(ref.relative_attention_bias.weight)
            torch.testing.assert_close(ours(30), ref.compute_bias(30, 30)[0])
            # with a cache: 5 new queries at positions 25..29 against 30 keys
            torch.testing.assert_close(ours(5, 30), ref.compute_bias(5, 30, cache_position=torch.arange(25, 30))[0])


def test_t5_bucket_properties():
    r = torch.arange(-500, 501)
    b = t5_relative_bucket(r, True, 32, 128)
    assert b.min() == 0 and b.max() == 31
    assert torch.equal(b[r > 0] >= 16, torch.ones_like(b[r > 0], dtype=torch.bool))  # future in the upper half
    assert torch.equal(b[500 - 7: 501], torch.arange(7, -1, -1))  # exact buckets for |r| < 8 in the past
    past = b[:501].flip(0)  # r = 0, -1, -2, ... -> non-decreasing buckets
    assert (past.diff() >= 0).all()
    causal = t5_relative_bucket(r, False, 32, 128)
    assert (causal[r >= 0] == 0).all() and causal.max() == 31


def test_biases_plug_into_attention():
    torch.manual_seed(0)
    attn = Attention(16, 4)
    x = torch.randn(2, 6, 16)
    for bias in (alibi_bias(4, 6), T5RelativeBias(4)(6)):
        y = attn(x, attn_bias=bias, is_causal=True)
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_bad_input_raises_user_error():
    for bad in (0, -3):
        with pytest.raises(UserError):
            alibi_slopes(bad)
    with pytest.raises(UserError):
        alibi_bias(4, 0)
    with pytest.raises(UserError):
        t5_relative_bucket(torch.arange(3), True, 2, 128)
    assert math.isclose(float(alibi_slopes(3)[0]), 2 ** -4)
