"""Residual wrappers, DeepNorm constants (Wang et al. 2022, Figure 2) and init, and the init functions.

Statistical tolerances: for n iid draws with kurtosis k, the sample standard deviation s has relative standard
error sqrt((k - 1) / (4 n)) <= 1 / sqrt(2 n) for k <= 3 (normal: 3, truncated normal < 3, uniform: 1.8).
Every std check allows 5 such standard errors (a false failure has probability < 1e-6).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unigen.errors import UserError
from unigen.nn.activations import FeedForward
from unigen.nn.attention import Attention
from unigen.nn.init import (INIT_SCHEMES, fans, gain, init_weights, kaiming_, lecun_normal_, scaled_residual_init_,
                            trunc_normal_, xavier_, zero_init_)
from unigen.nn.residual import (DeepNormResidual, PostNormResidual, PreNormResidual, deepnorm_constants,
                                deepnorm_init_)


def assert_std(w, expected):
    n = w.numel()
    rel = abs(w.float().std().item() / expected - 1)
    assert rel < 5 / math.sqrt(2 * n), (w.std().item(), expected, n)


def gen():
    return torch.manual_seed(0)


# ------------------------------------------------------------------------------------------------ residuals
def test_pre_and_post_norm_residuals():
    gen()
    f = nn.Linear(8, 8)
    x = torch.randn(2, 5, 8)
    ln = lambda t: F.layer_norm(t, (8,))  # noqa: E731  (default LayerNorm: weight 1, bias 0)
    torch.testing.assert_close(PreNormResidual(8, f)(x), x + f(ln(x)))
    torch.testing.assert_close(PostNormResidual(8, f)(x), ln(x + f(x)))
    torch.testing.assert_close(DeepNormResidual(8, f, alpha=2.5)(x), ln(2.5 * x + f(x)))
    torch.testing.assert_close(DeepNormResidual(8, f, alpha=1.0)(x), PostNormResidual(8, f)(x))


def test_residual_passes_arguments_to_the_sublayer():
    gen()
    attn = Attention(8, 2)
    x = torch.randn(2, 5, 8)
    block = PreNormResidual(8, attn, norm=nn.LayerNorm(8))
    y = block(x, is_causal=True)
    x2 = x.clone()
    x2[:, 3:] += 1.0
    torch.testing.assert_close(block(x2, is_causal=True)[:, :3], y[:, :3])


# ------------------------------------------------------------------------------------------------ DeepNorm
@pytest.mark.parametrize("L", [1, 6, 18, 100, 1000])
def test_deepnorm_constants_match_the_papers_table(L):
    a, b = deepnorm_constants(L, 0, "encoder")
    assert math.isclose(a, (2 * L) ** 0.25) and math.isclose(b, (8 * L) ** -0.25)
    assert deepnorm_constants(0, L, "decoder") == (a, b)  # decoder-only uses the same formulas with M
    a, b = deepnorm_constants(L, 2 * L, "encdec", part="decoder")
    assert math.isclose(a, (6 * L) ** 0.25) and math.isclose(b, (24 * L) ** -0.25)
    a, b = deepnorm_constants(L, 2 * L, "encdec", part="encoder")
    assert math.isclose(a, 0.81 * (2 * L ** 5) ** (1 / 16)) and math.isclose(b, 0.87 * (2 * L ** 5) ** (-1 / 16))
    # the derivation's constraint behind the non-empirical rows: alpha^4 beta^4 = 1/4 (2N * 1/(8N), 3M * 1/(12M))
    for arch, part in (("encoder", None), ("decoder", None), ("encdec", "decoder")):
        a, b = deepnorm_constants(L, L, arch, part=part)
        assert math.isclose((a * b) ** 4, 0.25)


def test_deepnorm_constants_worked_numbers():
    a, b = deepnorm_constants(6, 0, "encoder")  # 12^(1/4), 48^(-1/4)
    assert math.isclose(a, 1.8612097182041991) and math.isclose(b, 0.37991784282579627)
    a, b = deepnorm_constants(1, 1, "encdec", part="encoder")
    assert math.isclose(a, 0.81) and math.isclose(b, 0.87)


def test_deepnorm_constants_bad_input():
    with pytest.raises(UserError):
        deepnorm_constants(6, 6, "encdec")
    with pytest.raises(UserError):
        deepnorm_constants(6, 6, "transformer")
    with pytest.raises(UserError):
        deepnorm_constants(0, 6, "encoder")


def test_deepnorm_init_scales_ffn_value_and_output_only():
    gen()
    D, beta = 256, 0.3
    model = nn.ModuleDict({"attn": Attention(D, 4), "ff": FeedForward(D, 2 * D)})

    class Foreign(nn.Module):  # a non-unigen block named like fairseq/torchscale
        def __init__(self):
            super().__init__()
            self.q_proj, self.v_proj, self.other = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)

    model["foreign"] = Foreign()
    other_before = model["foreign"].other.weight.clone()
    deepnorm_init_(model, beta)
    xav = math.sqrt(2 / (D + D))  # each q/k/v block as its own D x D matrix
    q, k, v = model["attn"].qkv.weight.split(D)
    assert_std(q, xav)
    assert_std(k, xav)
    assert_std(v, beta * xav)
    assert_std(model["attn"].proj.weight, beta * xav)
    assert_std(model["ff"].w_in.weight, beta * math.sqrt(2 / (D + 2 * D)))
    assert_std(model["ff"].w_out.weight, beta * math.sqrt(2 / (D + 2 * D)))
    assert_std(model["foreign"].q_proj.weight, xav)
    assert_std(model["foreign"].v_proj.weight, beta * xav)
    assert torch.equal(model["foreign"].other.weight, other_before)
    assert (model["ff"].w_in.bias == 0).all()


# ------------------------------------------------------------------------------------------------ init
def test_fans_of_linear_and_conv():
    assert fans(nn.Linear(7, 3).weight) == (7, 3)
    assert fans(nn.Conv2d(4, 6, 3).weight) == (4 * 9, 6 * 9)
    with pytest.raises(UserError):
        fans(torch.zeros(5))


def test_xavier_normal_and_uniform():
    gen()
    w = torch.empty(1000, 500)
    assert_std(xavier_(w, gain=2.0), 2.0 * math.sqrt(2 / 1500))
    xavier_(w, distribution="uniform")
    a = math.sqrt(6 / 1500)  # Glorot & Bengio 2010, eq. 16
    assert w.abs().max() <= a and w.abs().max() > a * (1 - 1e-3)  # P(all 5e5 below) = (1 - 1e-3)^5e5 ~ 0
    assert_std(w, a / math.sqrt(3))


def test_kaiming_std_and_silu_gain():
    gen()
    w = torch.empty(600, 1000)
    assert_std(kaiming_(w, "relu"), math.sqrt(2 / 1000))
    assert_std(kaiming_(w, "silu"), gain("silu") / math.sqrt(1000))
    assert_std(kaiming_(w, "relu", mode="fan_out"), math.sqrt(2 / 600))
    # gain defined by E[f(z)^2] g^2 = 1: check the quadrature against Monte Carlo on 4e6 draws
    z = torch.randn(4_000_000, dtype=torch.float64)
    for name, f in (("silu", F.silu), ("gelu", F.gelu), ("tanh", torch.tanh)):
        m2 = f(z).square()
        se = m2.std().item() / math.sqrt(z.numel())
        assert abs(m2.mean().item() - gain(name) ** -2) < 5 * se
    assert gain("relu") == math.sqrt(2) and gain("linear") == 1.0


def test_kaiming_silu_preserves_the_second_moment_through_a_layer():
    gen()
    n_in, n_out, batch = 512, 512, 2048
    w = kaiming_(torch.empty(n_out, n_in), "silu")
    y = F.silu(torch.randn(batch, n_in)) @ w.T  # E[y^2] = n_in Var(w) E[silu(z)^2] = 1
    # y^2 averaged over batch * n_out (correlated within a row) entries; 5% is > 10 of its standard errors here
    assert abs(y.square().mean().item() - 1) < 0.05


def test_lecun_normal_std():
    gen()
    assert_std(lecun_normal_(torch.empty(400, 1250)), 1 / math.sqrt(1250))


def test_trunc_normal_bounds_and_std():
    gen()
    std = 0.02
    w = trunc_normal_(torch.empty(1000, 500), std=std)
    assert w.abs().max() <= 2 * std
    phi2 = math.exp(-2) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))  # P(|z| < 2)
    assert_std(w, std * math.sqrt(1 - 4 * phi2 / mass))
    assert abs(w.mean().item()) < 5 * std / math.sqrt(w.numel())


def test_scaled_residual_init():
    gen()
    lin = nn.Linear(1000, 500)
    scaled_residual_init_(lin, n_layers=12)
    assert_std(lin.weight, 0.02 / math.sqrt(24))
    assert (lin.bias == 0).all()


def test_zero_init_makes_output_exactly_zero():
    gen()
    lin = zero_init_(nn.Linear(8, 4))
    assert torch.equal(lin(torch.randn(3, 8)), torch.zeros(3, 4))
    ff = zero_init_(FeedForward(8, 16))
    assert torch.equal(ff(torch.randn(3, 8)), torch.zeros(3, 8))


def test_init_weights_covers_linear_embedding_conv():
    gen()
    model = nn.Sequential(nn.Embedding(1000, 300, padding_idx=0), nn.Linear(300, 1000), nn.LayerNorm(1000),
                          nn.Conv1d(100, 200, 5))
    init_weights(model, "normal", std=0.05)
    for m in (model[0], model[1], model[3]):
        assert_std(m.weight[1:] if m is model[0] else m.weight, 0.05)
    assert (model[0].weight[0] == 0).all()
    assert (model[1].bias == 0).all() and (model[3].bias == 0).all()
    assert (model[2].weight == 1).all() and (model[2].bias == 0).all()
    init_weights(model, "kaiming", nonlinearity="relu")
    assert_std(model[3].weight, math.sqrt(2 / (100 * 5)))
    init_weights(model)  # default trunc_normal(0.02)
    assert model[1].weight.abs().max() <= 0.04
    assert set(INIT_SCHEMES) >= {"trunc_normal", "xavier", "kaiming", "lecun_normal"}
    with pytest.raises(UserError):
        init_weights(model, "orthogonal")
