"""GAU and FLASH (Hua et al. 2022) against a brute-force per-position double loop written from the paper's
definitions, plus causality (perturb the future) and FLASH-with-one-chunk == GAU."""

import math

import pytest
import torch
import torch.nn.functional as F

from unigen.errors import UserError
from unigen.nn.gau import FLASH, GAU
from unigen.nn.relative_bias import t5_relative_bucket


def rotate_pairs(x, T):
    """RoPE by hand, 'half' layout: pair (x_i, x_{i+s/2}) at position t turned by t * 10000^(-2i/s)."""
    s = x.shape[-1]
    theta = 10000.0 ** (-torch.arange(0, s, 2, dtype=torch.float64) / s)  # (s/2,)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * theta  # (T, s/2)
    a, b = x[..., : s // 2], x[..., s // 2:]
    return torch.cat([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()], dim=-1)


def brute_force(m, x, causal, flash):
    """Per (t, s) pair: quadratic relu^2 term inside the chunk of t, linear term across chunks (FLASH only)."""
    x = x.double()
    B, T, _ = x.shape
    W, bW = m.to_uvz.weight.double(), m.to_uvz.bias.double()
    h = F.silu(x @ W.T + bW)
    u, v, z = h[..., : m.e], h[..., m.e: 2 * m.e], h[..., 2 * m.e:]
    bases = [z * m.gamma[i].double() + m.beta[i].double() for i in range(m.gamma.shape[0])]
    if m.rotary is not None:
        bases = [rotate_pairs(b, T) for b in bases]
    table = m.rel_bias.embedding.weight.double()[:, 0]  # (num_buckets,)
    C = min(m.chunk_size, T) if flash else T
    out = torch.zeros(B, T, m.e, dtype=torch.float64)
    for t in range(T):
        for s in range(T):
            same = s // C == t // C
            if same and not (causal and s > t):
                bias = table[t5_relative_bucket(torch.tensor(s - t), True, m.rel_bias.num_buckets,
                                                m.rel_bias.max_distance)]
                a = F.relu((bases[0][:, t] * bases[1][:, s]).sum(-1) / C + bias) ** 2  # (B,)
                out[:, t] += a[:, None] * v[:, s]
            if flash:
                lin = (bases[2][:, t] * bases[3][:, s]).sum(-1)  # (B,)
                if causal and s // C < t // C:
                    out[:, t] += (lin / C)[:, None] * v[:, s]
                elif not causal:
                    out[:, t] += (lin / T)[:, None] * v[:, s]
    return ((u * out) @ m.out.weight.double().T + m.out.bias.double()).float()


def make(cls, rope=True, seed=0, **kw):
    torch.manual_seed(seed)
    m = cls(dim=8, expansion=2, s=6, num_buckets=8, max_distance=16, rope=rope, **kw)
    with torch.no_grad():  # larger gamma/beta than the 0.02 init so that relu^2 and the linear term matter
        m.gamma.normal_(0, 1.0)
        m.beta.normal_(0, 0.5)
        m.rel_bias.embedding.weight.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rope", [False, True])
def test_gau_equals_brute_force(causal, rope):
    m = make(GAU, rope=rope)
    x = torch.randn(2, 7, 8)
    torch.testing.assert_close(m(x, causal=causal), brute_force(m, x, causal, flash=False))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T,chunk", [(9, 3), (7, 3), (8, 3), (5, 4), (6, 1)])
def test_flash_equals_unpadded_brute_force(causal, T, chunk):
    m = make(FLASH, chunk_size=chunk)
    x = torch.randn(2, T, 8)
    torch.testing.assert_close(m(x, causal=causal), brute_force(m, x, causal, flash=True))


@pytest.mark.parametrize("cls,kw", [(GAU, {}), (FLASH, {"chunk_size": 3}), (FLASH, {"chunk_size": 4})])
def test_causal_output_ignores_the_future(cls, kw):
    m = make(cls, **kw)
    x = torch.randn(2, 10, 8)
    y = m(x, causal=True)
    for t in (0, 3, 5, 8):
        x2 = x.clone()
        x2[:, t + 1:] = torch.randn(2, 10 - t - 1, 8) * 3
        torch.testing.assert_close(m(x2, causal=True)[:, : t + 1], y[:, : t + 1])
        assert not torch.allclose(m(x2, causal=True)[:, t + 1:], y[:, t + 1:])
    with torch.no_grad():  # negative biases can switch all future pairs off (relu^2 = 0): make them visible
        m.rel_bias.embedding.weight.abs_()
    x2 = x.clone()
    x2[:, 6:] += torch.randn(2, 4, 8)
    assert not torch.allclose(m(x2, causal=False)[:, :6], m(x, causal=False)[:, :6])  # non-causal does see it


def copy_gau_into_flash(gau, flash):
    with torch.no_grad():
        for name in ("to_uvz", "out", "rel_bias"):
            getattr(flash, name).load_state_dict(getattr(gau, name).state_dict())
        flash.gamma[:2] = gau.gamma
        flash.beta[:2] = gau.beta


@pytest.mark.parametrize("chunk", [7, 16])
def test_flash_with_one_chunk_equals_gau_causal(chunk):
    gau, flash = make(GAU, seed=1), make(FLASH, seed=2, chunk_size=chunk)
    copy_gau_into_flash(gau, flash)
    x = torch.randn(3, 7, 8)
    torch.testing.assert_close(flash(x, causal=True), gau(x, causal=True))  # no previous chunk: no global term


@pytest.mark.parametrize("chunk", [7, 16])
def test_flash_with_one_chunk_equals_gau_noncausal(chunk):
    gau, flash = make(GAU, seed=1), make(FLASH, seed=2, chunk_size=chunk)
    copy_gau_into_flash(gau, flash)
    x = torch.randn(3, 7, 8)
    # the non-causal global term also covers the one chunk (paper, Sec. 3.2); with Q^lin = 0 it vanishes
    assert not torch.allclose(flash(x), gau(x))
    with torch.no_grad():
        flash.gamma[2].zero_()
        flash.beta[2].zero_()
    torch.testing.assert_close(flash(x), gau(x))


def test_gradients_reach_every_parameter():
    m = make(FLASH, chunk_size=3)
    m(torch.randn(2, 7, 8), causal=True).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_bad_input_raises_user_error():
    with pytest.raises(UserError):
        GAU(8, s=5)  # odd s with rope
    with pytest.raises(UserError):
        FLASH(8, chunk_size=0)
    with pytest.raises(UserError):
        GAU(8, s=6)(torch.randn(2, 5, 4))
    assert math.isfinite(GAU(8, s=5, rope=False)(torch.randn(1, 3, 8)).sum().item())
