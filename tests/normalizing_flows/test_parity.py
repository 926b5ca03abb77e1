"""Parity with zuko (an independent flow library, test-only dependency) on copied weights: NICE's additive
couplings, RealNVP's and Glow's affine couplings (zuko's coupling machinery with the elementwise affine map
of each paper written in torch's AffineTransform), and the LU
linear transform. zuko keeps its own split / merge / log-det bookkeeping, which is what is compared."""
import pytest
import torch

from unigen.families.normalizing_flows.coupling import MLP, Coupling
from unigen.families.normalizing_flows.layers import InvConv1x1

zuko = pytest.importorskip("zuko")
from zuko.flows.coupling import GeneralCouplingTransform  # noqa: E402
from zuko.transforms import AdditiveTransform, AffineTransform, ComposedTransform, LULinearTransform  # noqa: E402

D = 7


def _copy_mlp(ours: MLP, theirs: torch.nn.Module) -> None:
    """zuko's MLP is Linear-ReLU-...-Linear like ours (its own Linear class); both read the outputs of a
    transformed entry j as (t, h) = out[2j], out[2j + 1]. Random weights, copied into both."""
    lin_theirs = [m for m in theirs if getattr(m, "weight", None) is not None]
    lin_ours = [m for m in ours.modules() if isinstance(m, torch.nn.Linear)]
    assert len(lin_theirs) == len(lin_ours)
    torch.manual_seed(3)
    with torch.no_grad():
        for a, b in zip(lin_ours, lin_theirs):
            a.weight.copy_(torch.randn_like(a.weight) * 0.5)
            a.bias.copy_(torch.randn_like(a.bias) * 0.5)
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)


def _pair(scale: str, parity: int):
    """Our coupling and zuko's GeneralCouplingTransform with the same mask and MLP weights."""
    n_a = len(range(parity, D, 2))
    mask = torch.arange(D) % 2 == parity                    # zuko: True = the conditioning part
    if scale == "additive":
        univariate, shapes, out = AdditiveTransform, ((),), 1
    elif scale == "tanh":   # x exp(c tanh(h)) + t, c a learned scale per transformed entry (random here)
        c = torch.rand(D - n_a) + 0.5
        univariate = lambda t, h: AffineTransform(t, torch.exp(c * torch.tanh(h)))  # noqa: E731
        shapes, out = ((), ()), 2
    else:                   # Glow: (x + t) sigmoid(h + 2) = x sigmoid(h + 2) + t sigmoid(h + 2)
        univariate = lambda t, h: AffineTransform(t * torch.sigmoid(h + 2), torch.sigmoid(h + 2))  # noqa: E731
        shapes, out = ((), ()), 2
    theirs = GeneralCouplingTransform(D, mask=mask, univariate=univariate, shapes=shapes, hidden_features=(16, 16))
    ours = Coupling(MLP(n_a, (D - n_a) * out, 16, 2), (D,), "alternate", parity, scale)
    _copy_mlp(ours.net, theirs.hyper)
    if scale == "tanh":
        with torch.no_grad():
            ours.c.copy_(c)
    return ours, theirs


@pytest.mark.parametrize("scale", ["additive", "tanh", "sigmoid"])
@pytest.mark.parametrize("parity", [0, 1])
def test_coupling_matches_zuko(scale, parity):
    ours, theirs = _pair(scale, parity)
    x = torch.randn(16, D)
    f = theirs()
    y_ref, ladj_ref = f.call_and_ladj(x)
    y, logdet = ours(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logdet, ladj_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.inverse(y), f.inv(y_ref), rtol=1e-5, atol=1e-5)


def test_nice_stack_matches_zuko_composition():
    """Four alternating additive couplings composed: zuko's ComposedTransform against our layers in sequence."""
    pairs = [_pair("additive", i % 2) for i in range(4)]
    x = torch.randn(16, D)
    y_ref, ladj_ref = ComposedTransform(*[t() for _, t in pairs]).call_and_ladj(x)
    y, logdet = x, torch.zeros(16)
    for ours, _ in pairs:
        y, ld = ours(y)
        logdet = logdet + ld
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logdet, ladj_ref)


def test_lu_invertible_linear_matches_zuko():
    """Our W = L_unit (U_strict + diag(sign s e^log_s)) (permutation set to I) is zuko's L U with L = L_unit diag(s)
    (L carries the diagonal) and U = I + diag(1/s) U_strict."""
    torch.manual_seed(0)
    conv = InvConv1x1(D, lu=True).double()
    with torch.no_grad():
        for p in conv.parameters():
            p.add_(0.3 * torch.randn_like(p))
        conv.P.copy_(torch.eye(D))
    s = conv.sign_s * conv.log_s.exp()
    L_unit = conv.L * conv.lower_mask + torch.eye(D, dtype=torch.float64)
    U_strict = conv.U * conv.lower_mask.T
    L_z, U_z = L_unit @ torch.diag(s), torch.eye(D, dtype=torch.float64) + torch.diag(1 / s) @ U_strict
    f = LULinearTransform(torch.tril(L_z) + torch.triu(U_z, 1))
    x = torch.randn(5, D, dtype=torch.float64)
    y_ref, ladj_ref = f.call_and_ladj(x)
    y, logdet = conv(x)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(logdet, ladj_ref)
    torch.testing.assert_close(conv.inverse(y), f.inv(y_ref))
