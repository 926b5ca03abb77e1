"""Norms, modulation, activations and MLPs against their formulas and torch's reference ops."""
import pytest
import torch
import torch.nn.functional as F

from unigen.errors import UserError
from unigen.nn.activations import ACTIVATIONS, GLU, GLU_VARIANTS, FeedForward, make_mlp
from unigen.nn.norm import LayerNorm, RMSNorm, modulate


def test_rmsnorm_formula_and_fp32_under_bf16():
    torch.manual_seed(0)
    n = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        n.weight.uniform_(0.5, 2.0)
    x = torch.randn(3, 4, 8) * 10
    want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * n.weight
    torch.testing.assert_close(n(x), want)
    xb = x.bfloat16()
    want_b = (xb.float() / torch.sqrt(xb.float().pow(2).mean(-1, keepdim=True) + 1e-6) * n.weight).bfloat16()
    assert n(xb).dtype == torch.bfloat16
    torch.testing.assert_close(n(xb), want_b, atol=0, rtol=0)  # computed in fp32 and rounded once
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert n(x).dtype == torch.float32


def test_layernorm_matches_formula_with_and_without_affine():
    torch.manual_seed(1)
    x = torch.randn(2, 5, 6)
    plain = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(LayerNorm(6, affine=False)(x), plain)
    assert len(list(LayerNorm(6, affine=False).parameters())) == 0
    ln = LayerNorm(6, bias=False)
    assert ln.bias is None
    torch.testing.assert_close(ln(x), plain * ln.weight)
    with pytest.raises(UserError):
        RMSNorm(0)


def test_modulate_per_sequence_and_per_token():
    x = torch.randn(2, 3, 4)
    shift, scale = torch.randn(2, 4), torch.randn(2, 4)
    got = modulate(x, shift, scale)
    for b in range(2):
        for t in range(3):
            torch.testing.assert_close(got[b, t], x[b, t] * (1 + scale[b]) + shift[b])
    shift_t, scale_t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(modulate(x, shift_t, scale_t), x * (1 + scale_t) + shift_t)


def test_activations_equal_torch_references():
    x = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(ACTIVATIONS["relu"](x), torch.nn.ReLU()(x))
    torch.testing.assert_close(ACTIVATIONS["gelu"](x), 0.5 * x * (1 + torch.erf(x / 2 ** 0.5)))
    torch.testing.assert_close(ACTIVATIONS["gelu_tanh"](x), torch.nn.GELU(approximate="tanh")(x))
    tanh_formula = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))
    torch.testing.assert_close(ACTIVATIONS["gelu_tanh"](x), tanh_formula)
    torch.testing.assert_close(ACTIVATIONS["silu"](x), x * torch.sigmoid(x))
    torch.testing.assert_close(ACTIVATIONS["swish"](x), x / (1 + torch.exp(-x)))


@pytest.mark.parametrize("variant,gate", [
    ("glu", torch.sigmoid), ("reglu", torch.relu),
    ("geglu", lambda z: 0.5 * z * (1 + torch.erf(z / 2 ** 0.5))), ("swiglu", lambda z: z * torch.sigmoid(z))])
def test_glu_variants_equal_shazeer_formula(variant, gate):
    torch.manual_seed(2)
    m = GLU(6, 10, 5, variant, bias=True)
    x = torch.randn(4, 6)
    W, V = m.w_in.weight[:10], m.w_in.weight[10:]
    bW, bV = m.w_in.bias[:10], m.w_in.bias[10:]
    want = (gate(x @ W.T + bW) * (x @ V.T + bV)) @ m.w_out.weight.T + m.w_out.bias
    torch.testing.assert_close(m(x), want)
    assert GLU_VARIANTS[variant] is not None


def test_glu_matches_torch_glu_for_sigmoid():
    torch.manual_seed(3)
    m = GLU(4, 3, 4, "glu")
    x = torch.randn(2, 4)
    h = m.w_in(x)  # (2, 6) = [gate ; value]; torch's F.glu gates the first half with the second
    torch.testing.assert_close(m(x), m.w_out(F.glu(torch.cat([h[:, 3:], h[:, :3]], -1))))


def test_feedforward_and_make_mlp():
    torch.manual_seed(4)
    ff = FeedForward(4, 8, "relu")
    x = torch.randn(3, 4)
    torch.testing.assert_close(ff(x), torch.relu(x @ ff.w_in.weight.T + ff.w_in.bias) @ ff.w_out.weight.T
                               + ff.w_out.bias)
    assert isinstance(make_mlp("swiglu", 4, 8), GLU) and make_mlp("swiglu", 4, 8).w_in.bias is None
    assert isinstance(make_mlp("gelu", 4, 8), FeedForward) and make_mlp("gelu", 4, 8).w_in.bias is not None
    with pytest.raises(UserError, match="unknown mlp kind"):
        make_mlp("swishglu", 4, 8)
    with pytest.raises(UserError):
        FeedForward(4, 8, "tanhh")
