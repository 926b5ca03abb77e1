"""Rotary, sinusoidal and learned positions: invariants, brute-force formulas and parity with transformers/diffusers."""
import math

import pytest
import torch

from unigen.errors import UserError
from unigen.nn.position import (AxialRotaryEmbedding2D, LearnedPositions, Rope, RotaryEmbedding,
                                SinusoidalPositions, apply_rope, half_to_interleaved, head_dim_permutation,
                                interleaved_to_half, sinusoidal_embedding)


def scores(q, k, rope):
    cos, sin = rope
    layout = getattr(rope, "layout", "half")
    return apply_rope(q, cos, sin, layout) @ apply_rope(k, cos, sin, layout).transpose(-1, -2)  # (B, H, T, T)


# ------------------------------------------------------------------------------------------- 1-D RoPE
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rope_scores_depend_only_on_relative_position(layout):
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 7, 16, dtype=torch.float64), torch.randn(2, 3, 7, 16, dtype=torch.float64)
    rope = RotaryEmbedding(16, layout=layout)
    pos = torch.tensor([0, 3, 4, 9, 10, 11, 30])
    a = scores(q, k, rope(pos))
    b = scores(q, k, rope(pos + 123))
    # fp32 angles at positions ~150 are off by ~1e-5 rad; measured max |a - b| = 8.3e-6 (half) and 6.9e-6
    # (interleaved) for scores up to 11.4 in magnitude, so 3e-5 leaves headroom and still fails on any real shift
    torch.testing.assert_close(a, b, atol=3e-5, rtol=0)
    assert not torch.allclose(a, scores(q, k, rope(pos * 2)), atol=1e-2)  # but it does depend on the gaps


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rope_preserves_norms_and_is_identity_at_zero(layout):
    torch.manual_seed(1)
    x = torch.randn(2, 2, 5, 8)
    cos, sin = RotaryEmbedding(8, layout=layout)(torch.arange(5) * 17)
    y = apply_rope(x, cos, sin, layout)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    c0, s0 = RotaryEmbedding(8, layout=layout)(torch.zeros(5))
    torch.testing.assert_close(apply_rope(x, c0, s0, layout), x)


def test_rope_matches_roformer_formula_pair_by_pair():
    """RoFormer eq. 13: pair i of position m is rotated by m * base^(-2i/D) (interleaved pairs (2i, 2i+1))."""
    D, base = 6, 100.0
    x = torch.randn(4, D, dtype=torch.float64)
    pos = torch.tensor([0.0, 1.0, 5.0, 2.5])
    cos, sin = RotaryEmbedding(D, base, "interleaved")(pos)
    y = apply_rope(x, cos.double(), sin.double(), "interleaved")
    for m in range(4):
        for i in range(D // 2):
            th = pos[m].item() * base ** (-2 * i / D)
            a, b = x[m, 2 * i].item(), x[m, 2 * i + 1].item()
            assert y[m, 2 * i].item() == pytest.approx(a * math.cos(th) - b * math.sin(th), abs=1e-6)
            assert y[m, 2 * i + 1].item() == pytest.approx(a * math.sin(th) + b * math.cos(th), abs=1e-6)


def test_batched_positions_broadcast_against_heads():
    rope = RotaryEmbedding(8)
    pos = torch.tensor([[0, 1, 2], [5, 6, 7]])
    cos, sin = rope(pos)
    assert cos.shape == (2, 1, 3, 8)
    c1, _ = rope(pos[1])
    torch.testing.assert_close(cos[1, 0], c1)


def test_half_and_interleaved_agree_after_weight_permutation():
    torch.manual_seed(2)
    H, D, C, T = 3, 8, 12, 6
    Wq, Wk = torch.randn(H * D, C, dtype=torch.float64), torch.randn(H * D, C, dtype=torch.float64)
    x = torch.randn(2, T, C, dtype=torch.float64)
    pos = torch.arange(T)

    def head_scores(Wq, Wk, layout):
        q = (x @ Wq.T).view(2, T, H, D).transpose(1, 2)
        k = (x @ Wk.T).view(2, T, H, D).transpose(1, 2)
        return scores(q, k, RotaryEmbedding(D, layout=layout)(pos))

    half = head_scores(Wq, Wk, "half")
    inter = head_scores(half_to_interleaved(Wq, H), half_to_interleaved(Wk, H), "interleaved")
    torch.testing.assert_close(half, inter)
    torch.testing.assert_close(interleaved_to_half(half_to_interleaved(Wq, H), H), Wq)
    v = torch.arange(D)
    assert torch.equal(v[head_dim_permutation(D, "interleaved")], torch.tensor([0, 4, 1, 5, 2, 6, 3, 7]))
    assert torch.equal(v[head_dim_permutation(D, "interleaved")][head_dim_permutation(D, "half")], v)
    b = torch.randn(H * D)
    assert torch.equal(interleaved_to_half(half_to_interleaved(b, H), H), b)


def test_rope_matches_transformers_llama():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
    torch.manual_seed(3)
    H, D, T = 2, 16, 9
    cfg = transformers.LlamaConfig(hidden_size=H * D, num_attention_heads=H, rope_theta=5000.0,
                                   max_position_embeddings=64)
    hf_rope = LlamaRotaryEmbedding(cfg)
    q, k = torch.randn(2, H, T, D), torch.randn(2, H, T, D)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8], [3, 4, 5, 6, 0, 1, 2, 40, 41]])
    hf_cos, hf_sin = hf_rope(q, pos)
    hq, hk = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    ours = RotaryEmbedding(D, 5000.0)(pos)
    torch.testing.assert_close(apply_rope(q, *ours), hq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_rope(k, *ours), hk, atol=1e-5, rtol=1e-5)
    # interleaved: permute the head dim of q and k, rotate, permute back -> the same as HF's half layout
    p, back = head_dim_permutation(D, "interleaved"), head_dim_permutation(D, "half")
    cos, sin = RotaryEmbedding(D, 5000.0, "interleaved")(pos)
    torch.testing.assert_close(apply_rope(q[..., p], cos, sin, "interleaved")[..., back], hq, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------- 2-D axial RoPE
def test_axial_rope_scores_depend_only_on_grid_offsets():
    torch.manual_seed(4)
    h, w, D = 3, 4, 16
    ax = AxialRotaryEmbedding2D(D)
    cos, sin = ax(h, w, n_prefix=1)
    assert cos.shape == (1 + h * w, D)
    assert torch.equal(cos[0], torch.ones(D)) and torch.equal(sin[0], torch.zeros(D))
    q, k = torch.randn(D), torch.randn(D)  # float32 like the angles, so float32 tolerances
    rq = apply_rope(q.expand(1 + h * w, D), cos, sin)  # same content at every token
    rk = apply_rope(k.expand(1 + h * w, D), cos, sin)
    s = (rq @ rk.T)[1:, 1:]  # patch-patch scores
    by_offset = {}
    for a in range(h * w):
        for b in range(h * w):
            off = (b // w - a // w, b % w - a % w)
            by_offset.setdefault(off, []).append(s[a, b])
    for off, vals in by_offset.items():
        torch.testing.assert_close(torch.stack(vals), vals[0].expand(len(vals)))
    assert len({round(v[0].item(), 4) for v in by_offset.values()}) == len(by_offset)  # each offset differs
    assert (rq @ rk.T)[0, 0].item() == pytest.approx((q @ k).item())  # the CLS token is not rotated


def test_axial_rope_row_and_column_halves():
    D = 8
    cos, sin = AxialRotaryEmbedding2D(D, base=10.0)(2, 3)
    ang = torch.atan2(sin, cos)  # (6, D), half layout: pairs 0..D/2-1 twice
    y, x = torch.arange(2).repeat_interleave(3).float(), torch.arange(3).repeat(2).float()
    want = torch.stack([y, y * 10 ** -0.5, x, x * 10 ** -0.5], -1)  # theta_j = base^(-j / (D/4))
    torch.testing.assert_close(ang[:, :4], want)
    torch.testing.assert_close(ang[:, 4:], want)
    with pytest.raises(UserError):
        AxialRotaryEmbedding2D(6)


# ------------------------------------------------------------------------------------------- sinusoidal / learned
def test_sinusoidal_embedding_formula():
    x = torch.tensor([0.0, 1.0, 7.0, 0.25])
    e = sinusoidal_embedding(x, 6, max_period=100.0)
    for n in range(4):
        for i in range(3):
            w = 100.0 ** (-i / 3)
            assert e[n, i].item() == pytest.approx(math.cos(x[n].item() * w), abs=1e-6)
            assert e[n, 3 + i].item() == pytest.approx(math.sin(x[n].item() * w), abs=1e-6)
    assert sinusoidal_embedding(torch.zeros(2, 3), 7).shape == (2, 3, 7)


@pytest.mark.parametrize("cos_first,shift", [(True, 0.0), (False, 1.0), (True, 1.0)])
def test_sinusoidal_embedding_matches_diffusers(cos_first, shift):
    diffusers_emb = pytest.importorskip("diffusers.models.embeddings")
    t = torch.tensor([0.0, 1.0, 17.0, 999.0, 0.5])
    want = diffusers_emb.get_timestep_embedding(t, 32, flip_sin_to_cos=cos_first, downscale_freq_shift=shift)
    got = sinusoidal_embedding(t, 32, cos_first=cos_first, freq_shift=shift)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_absolute_position_modules():
    torch.manual_seed(5)
    sp, lp = SinusoidalPositions(8, 16), LearnedPositions(8, 16)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(sp(x), x + sinusoidal_embedding(torch.arange(5), 8))
    torch.testing.assert_close(lp(x), x + lp.weight[:5])
    assert sp.embed(3).shape == (3, 8)
    pos = torch.tensor([[2, 4], [0, 15]])
    torch.testing.assert_close(lp.embed(pos), lp.weight[pos])
    assert "table" not in sp.state_dict()
    with pytest.raises(UserError):
        lp.embed(torch.tensor([16]))


def test_rope_is_a_pair_and_rejects_bad_layouts():
    r = Rope(torch.ones(2), torch.zeros(2), "interleaved")
    cos, sin = r
    assert len(r) == 2 and r.layout == "interleaved"
    with pytest.raises(UserError):
        RotaryEmbedding(8, layout="sideways")
    with pytest.raises(UserError):
        RotaryEmbedding(7)
