"""The likelihood against analytic answers: an actnorm + 1x1-conv flow on Gaussian data reaches the Gaussian MLE
NLL 0.5 log det(2 pi e Sigma); data uniform over the levels gives exactly n_bits bits/dim through the task's
dequantisation path (8-bit and 5-bit), with the logit pre-processing's Jacobian counted."""
import math

import pytest
import torch

from unigen.data.images import from_uint8
from unigen.families.normalizing_flows.dequantize import bits_per_dim, dequantize, quantize, reduce_bits
from unigen.families.normalizing_flows.evaluate import image_bits_per_dim
from unigen.families.normalizing_flows.layers import ActNorm, InvConv1x1, LogitTransform
from unigen.families.normalizing_flows.model import FlowModel
from unigen.families.normalizing_flows.priors import StandardPrior
from unigen.families.normalizing_flows.task import nll_loss


@pytest.mark.parametrize("lu", [False, True])
def test_actnorm_and_1x1_conv_reach_the_gaussian_mle(lu):
    """Each pixel's channel vector ~ N(mu, Sigma) independently; z = W s (x + b) spans every Gaussian, so the best
    NLL per image is H W * 0.5 log det(2 pi e Sigma_hat), Sigma_hat the (biased) sample covariance."""
    torch.manual_seed(0)
    C, H, W, N = 3, 2, 2, 500
    A = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [-0.3, 0.4, 0.2]], dtype=torch.float64)
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x = (torch.randn(N, H, W, C, dtype=torch.float64) @ A.T + mu).permute(0, 3, 1, 2)     # (N, C, H, W)
    flat = x.permute(0, 2, 3, 1).reshape(-1, C)
    sigma_hat = torch.cov(flat.T, correction=0)
    best = H * W * 0.5 * torch.logdet(2 * math.pi * math.e * sigma_hat)
    model = FlowModel([[ActNorm(C), InvConv1x1(C, lu=lu)]], [StandardPrior("gaussian")], (C, H, W)).double().train()
    model.log_prob(x)                                       # actnorm's data-dependent init
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -model.log_prob(x).mean()
        loss.backward()
        return loss

    opt.step(closure)
    nll = -model.log_prob(x).mean().item()
    assert nll >= best.item() - 1e-9                        # the MLE is a lower bound on the training NLL
    assert nll - best.item() < 1e-8, (nll, best.item())


def _uniform_model(shape):
    """log p(y) = 0 on [0, 1)^D: s = logit(y) under a standard logistic prior (the logistic density is the
    derivative of the sigmoid, which cancels the logit's Jacobian exactly)."""
    return FlowModel([[LogitTransform(alpha=0.0)]], [StandardPrior("logistic")], shape).double()


@pytest.mark.parametrize("n_bits", [8, 5])
def test_uniform_levels_give_exactly_n_bits_per_dim(n_bits):
    k8 = torch.arange(256).repeat(4).view(4, 1, 16, 16)                  # every 8-bit level, 4 times
    x = from_uint8(k8)                                                  # unigen's images in [-1, 1]
    torch.manual_seed(0)
    model = _uniform_model((1, 16, 16))
    loss, _ = nll_loss(model, {"x": x}, n_bits=n_bits)                  # the training path
    assert abs(loss.item() - n_bits) < 1e-5
    metrics = image_bits_per_dim(model, x, n_bits)                      # the evaluation path
    assert abs(metrics["bits_per_dim"] - n_bits) < 1e-5
    assert abs(metrics["nll_nats"] - n_bits * 256 * math.log(2)) < 1e-2


def test_dequantised_cubes_tile_the_unit_cube():
    """y = (k + u) / n_bins stays in [0, 1) and quantizes back to k for every level and u in [0, 1)."""
    for n_bits in (8, 5, 1):
        n_bins = 2 ** n_bits
        k = reduce_bits(torch.arange(256), n_bits)
        assert k.min() == 0 and k.max() == n_bins - 1
        assert torch.equal(torch.bincount(k), torch.full((n_bins,), 256 // n_bins))
        for u in (0.0, 0.5, 0.999):
            y = dequantize(k, n_bins, u=torch.full(k.shape, u))
            assert y.min() >= 0 and y.max() < 1
            assert torch.equal(quantize(y, n_bins), k)
        top = dequantize(k, n_bins, u=torch.full(k.shape, 1 - 2 ** -24))   # torch.rand's largest float32 value
        assert top.max() < 1                                                  # k + u rounds to k + 1 in float32


def test_bits_per_dim_formula():
    """(NLL + D log n_bins) / (D ln 2): a density 2^D on [0, 1/2)^D (log p = D ln 2) of 1-bit data is 1 - 1 = 0 bits."""
    D = 10
    assert bits_per_dim(torch.tensor(0.0), D, 256).item() == pytest.approx(8.0)
    assert bits_per_dim(torch.tensor(D * math.log(2)), D, 2).item() == pytest.approx(0.0, abs=1e-12)
