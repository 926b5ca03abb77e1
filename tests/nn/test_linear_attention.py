"""Linear attention (Katharopoulos et al. 2020) against an explicit O(N^2) computation with the same feature map,
and the parallel (prefix-sum) causal form against the recurrent step-by-step form."""

import pytest
import torch
import torch.nn.functional as F

from unigen.errors import UserError
from unigen.nn.linear_attention import (EPS, LinearAttention, causal_linear_attention, linear_attention,
                                        linear_attention_step)


def quadratic_oracle(q, k, v, causal):
    """O(N^2) reference: A_ij = phi(q_i).phi(k_j) (masked to j <= i if causal), out = A v / (sum_j A_ij + eps)."""
    phi = lambda x: F.elu(x) + 1  # noqa: E731
    A = torch.einsum("bhtd,bhsd->bhts", phi(q.double()), phi(k.double()))  # (B, H, T, S)
    if causal:
        A = A.tril()
    return (A @ v.double()) / (A.sum(-1, keepdim=True) + EPS)


def qkv(B=2, H=3, T=9, S=None, d=4, dv=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = T if S is None else S
    return (torch.randn(B, H, T, d, generator=g), torch.randn(B, H, S, d, generator=g),
            torch.randn(B, H, S, dv, generator=g))


def test_noncausal_equals_quadratic_form():
    q, k, v = qkv(T=7, S=11)
    torch.testing.assert_close(linear_attention(q, k, v).double(), quadratic_oracle(q, k, v, False))


def test_causal_parallel_equals_quadratic_masked_form():
    q, k, v = qkv()
    torch.testing.assert_close(causal_linear_attention(q, k, v).double(), quadratic_oracle(q, k, v, True))


def test_causal_parallel_equals_recurrent_steps():
    q, k, v = qkv()
    state, outs = None, []
    for t in range(q.shape[2]):
        o, state = linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], state)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, dim=2), causal_linear_attention(q, k, v))
    S, z = state  # the final state is the full sum over the sequence
    phi_k = F.elu(k) + 1
    torch.testing.assert_close(z, phi_k.sum(2))
    torch.testing.assert_close(S, torch.einsum("bhtd,bhte->bhde", phi_k, v))


def test_last_causal_position_equals_noncausal():
    q, k, v = qkv()
    torch.testing.assert_close(causal_linear_attention(q, k, v)[:, :, -1], linear_attention(q, k, v)[:, :, -1])


def test_module_step_matches_causal_forward_and_is_causal():
    torch.manual_seed(0)
    m = LinearAttention(dim=12, n_heads=3)
    x = torch.randn(2, 6, 12)
    y = m(x, causal=True)
    state, ys = None, []
    for t in range(x.shape[1]):
        yt, state = m.step(x[:, t], state)
        ys.append(yt)
    torch.testing.assert_close(torch.stack(ys, 1), y)
    x2 = x.clone()
    x2[:, 4:] += torch.randn(2, 2, 12)  # perturb the future
    torch.testing.assert_close(m(x2, causal=True)[:, :4], y[:, :4])
    assert not torch.allclose(m(x2, causal=False)[:, :4], m(x, causal=False)[:, :4])


def test_half_precision_prefix_sums_stay_accurate():
    q, k, v = qkv(T=64)
    out = causal_linear_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    ref = quadratic_oracle(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), True)
    # the only bf16 error left is rounding the output: half an ulp, 2^-9 relative; allow one ulp
    torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=2 ** -8)


def test_underflowing_features_stay_finite():
    q, k, v = qkv()
    out = causal_linear_attention(q - 200.0, k - 200.0, v)  # phi ~ exp(-200) underflows to 0 in float32
    assert torch.isfinite(out).all()


def test_bad_shapes_raise_user_error():
    q, k, v = qkv()
    with pytest.raises(UserError):
        linear_attention(q[0], k, v)
    with pytest.raises(UserError):
        causal_linear_attention(q[:, :, :3], k, v)
    with pytest.raises(UserError):
        LinearAttention(10, 3)
    with pytest.raises(UserError):
        LinearAttention(12, 3)(torch.randn(2, 5, 8))
