"""Losses fed the exact optimal network for Gaussian data x0 ~ N(mu, s^2): their Monte Carlo mean must match the
analytic expected loss, which follows from the Gaussian posterior (x0 | x has variance s^2 sigma^2 / (s^2 + sigma^2))
and is integrated over the noise-level distribution by quadrature."""
import math

import numpy as np
import pytest
import torch

from unigen.families.continuous_diffusion import (VE, ContinuousVP, Gaussian, ddpm_linear, ddpm_loss, drop_labels, dsm_loss, edm_loss,
                              edm_weight, flow_matching_loss)
from unigen.errors import UserError

F64 = torch.float64
MU, S = 0.3, 0.9
DATA = Gaussian.isotropic(MU, S, 1)
N = 20000


def _x0(seed=0):
    return DATA.sample(N, torch.Generator().manual_seed(seed))      # (N, 1)


def _mc_close(loss, expected, k=5.0):
    """Monte Carlo mean within k standard errors of the expected value."""
    assert loss.shape == (N,)
    se = loss.std().item() / math.sqrt(N)
    assert abs(loss.mean().item() - expected) < k * se, (loss.mean().item(), expected, se)


def _mmse_x0(sigma):
    """Var(x0 | x0 + sigma eps) for x0 ~ N(mu, s^2)."""
    return S ** 2 * sigma ** 2 / (S ** 2 + sigma ** 2)


def _native_optimum(kind, alpha, sigma_n):
    """The MSE-optimal prediction of `kind` at x_native = alpha x0 + sigma_n eps (alpha, sigma_n broadcastable)."""
    def predict(x_n):
        x0 = MU + alpha * S ** 2 / (alpha ** 2 * S ** 2 + sigma_n ** 2) * (x_n - alpha * MU)
        eps = (x_n - alpha * x0) / sigma_n
        return {"x0": x0, "eps": eps, "v": alpha * eps - sigma_n * x0, "flow": eps - x0,
                "score": -eps / sigma_n}[kind]
    return predict


def test_edm_weight_is_table_1():
    sigma = torch.tensor([0.01, 0.5, 2.0], dtype=F64)
    assert edm_weight(sigma, 0.5).tolist() == pytest.approx(((sigma ** 2 + 0.25) / (0.25 * sigma ** 2)).tolist())


def test_edm_loss_with_sigma_data_equal_to_data_std_is_one_for_every_sigma():
    """lambda(sigma) * MMSE(sigma) = 1 when s = sigma_data (EDM's weighting equalises the loss over noise levels)."""
    data = Gaussian.isotropic(0.0, 0.5, 1)
    x0 = data.sample(N, torch.Generator().manual_seed(1))
    loss = edm_loss(data.denoiser, x0, generator=torch.Generator().manual_seed(2))
    _mc_close(loss, 1.0)


def test_edm_loss_expectation_over_lognormal_sigma():
    """E_{ln sigma ~ N(-1.2, 1.2^2)}[lambda(sigma) MMSE(sigma)] by Gauss-Hermite quadrature, for s != sigma_data."""
    u, w = np.polynomial.hermite_e.hermegauss(80)
    sigma = np.exp(-1.2 + 1.2 * u)
    expected = (w * (sigma ** 2 + 0.25) / (0.25 * sigma ** 2) * _mmse_x0(sigma)).sum() / w.sum()
    loss = edm_loss(DATA.denoiser, _x0(), generator=torch.Generator().manual_seed(3))
    _mc_close(loss, expected)


def _ddpm_net(kind, schedule):
    def net(x_t, t):
        a = schedule.alpha_bar[t.long()][:, None]
        return _native_optimum(kind, a.sqrt(), (1 - a).sqrt())(x_t)
    return net


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_ddpm_loss_expectation_per_target(target):
    """Unweighted: E_t[MMSE of the target], MMSE_eps = SNR MMSE_x0 and MMSE_v = (SNR + 1) MMSE_x0, SNR = 1/sigma^2."""
    sched = ddpm_linear()
    sigma = sched.sigmas.numpy()
    snr = 1 / sigma ** 2
    mmse = {"eps": snr, "x0": 1.0, "v": snr + 1}[target] * _mmse_x0(sigma)
    loss = ddpm_loss(_ddpm_net(target, sched), _x0(4), sched, target=target, generator=torch.Generator().manual_seed(5))
    _mc_close(loss, mmse.mean())


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_min_snr_weighting_gives_the_same_x0_weighting_for_every_target(target):
    """Hang et al. 2023: min-SNR-gamma is min(SNR, gamma) on the x0 error whatever the network predicts, so the expected
    loss is E_t[min(SNR_t, gamma) MMSE_x0(sigma_t)] for eps, x0 and v alike."""
    sched, gamma = ddpm_linear(), 5.0
    sigma = sched.sigmas.numpy()
    expected = (np.minimum(1 / sigma ** 2, gamma) * _mmse_x0(sigma)).mean()
    loss = ddpm_loss(_ddpm_net(target, sched), _x0(6), sched, target=target, min_snr_gamma=gamma,
                     generator=torch.Generator().manual_seed(7))
    _mc_close(loss, expected)


def _flow_net(x_t, t):
    t = t[:, None]
    return _native_optimum("flow", 1 - t, t)(x_t)


@pytest.mark.parametrize("t_dist", ["uniform", "logit-normal"])
def test_flow_matching_loss_expectation(t_dist):
    """E||v* - (eps - x0)||^2 = MMSE_x0(sigma) / t^2 = s^2 / ((1 - t)^2 s^2 + t^2), averaged over t's distribution."""
    f = lambda t: S ** 2 / ((1 - t) ** 2 * S ** 2 + t ** 2)          # noqa: E731
    if t_dist == "uniform":
        nodes, w = np.polynomial.legendre.leggauss(64)
        expected = (w * f(0.5 * (nodes + 1))).sum() / 2
    else:
        u, w = np.polynomial.hermite_e.hermegauss(80)
        expected = (w * f(1 / (1 + np.exp(-u)))).sum() / w.sum()
    loss = flow_matching_loss(_flow_net, _x0(8), t_dist=t_dist, generator=torch.Generator().manual_seed(9))
    _mc_close(loss, expected)


@pytest.mark.parametrize("schedule", [ContinuousVP(), VE()], ids=["vp", "ve"])
def test_dsm_loss_expectation(schedule):
    """Song et al. 2021 with lambda = sigma_n^2: E||sigma_n s*(x) + eps||^2 = MMSE_eps = s^2 / (s^2 + sigma(t)^2),
    averaged over t ~ U(eps_t, 1) by Gauss-Legendre quadrature."""
    eps_t = 1e-5
    nodes, w = np.polynomial.legendre.leggauss(200)
    t = eps_t + (1 - eps_t) * 0.5 * (nodes + 1)
    sigma = schedule.sigma(torch.tensor(t, dtype=F64)).numpy()
    expected = (w * S ** 2 / (S ** 2 + sigma ** 2)).sum() / 2

    def net(x_n, c_noise):
        sig = {ContinuousVP: lambda c: schedule.sigma(c / 999), VE: lambda c: 2 * c.exp()}[type(schedule)](c_noise)
        s = schedule.scale(sig)[:, None]
        return _native_optimum("score", s, s * sig[:, None])(x_n)

    loss = dsm_loss(net, _x0(10), schedule, eps_t=eps_t, generator=torch.Generator().manual_seed(11))
    _mc_close(loss, expected)


def test_label_dropout():
    y = torch.randint(0, 10, (N,), generator=torch.Generator().manual_seed(12))
    out = drop_labels(y, 0.1, 10, generator=torch.Generator().manual_seed(13))
    dropped = out == 10
    frac, se = dropped.float().mean().item(), math.sqrt(0.1 * 0.9 / N)
    assert abs(frac - 0.1) < 5 * se
    assert torch.equal(out[~dropped], y[~dropped])
    assert (drop_labels(y, 1.0, 10) == 10).all() and torch.equal(drop_labels(y, 0.0, 10), y)


def test_losses_pass_dropped_labels_and_use_the_global_rng():
    seen = []

    def D(x, sigma, y=None):
        seen.append(y)
        return DATA.denoiser(x, sigma)

    x0, y = _x0()[:64], torch.zeros(64, dtype=torch.long)
    torch.manual_seed(0)
    a = edm_loss(D, x0, y=y, p_uncond=0.5, num_classes=3)
    torch.manual_seed(0)
    b = edm_loss(D, x0, y=y, p_uncond=0.5, num_classes=3)
    assert torch.equal(a, b) and torch.equal(seen[0], seen[1])
    assert set(seen[0].tolist()) == {0, 3}
    with pytest.raises(UserError):
        edm_loss(D, x0, y=y, p_uncond=0.5)                            # the null id needs num_classes


def test_losses_on_images_return_one_value_per_example():
    x0 = torch.randn(3, 2, 4, 4)
    net = lambda x, c, **kw: torch.zeros_like(x)                     # noqa: E731
    assert edm_loss(lambda x, s: torch.zeros_like(x), x0).shape == (3,)
    assert ddpm_loss(net, x0, ddpm_linear()).shape == (3,)
    assert flow_matching_loss(net, x0).shape == (3,)
    assert dsm_loss(net, x0, VE()).shape == (3,)


@pytest.mark.parametrize("call", [
    lambda: ddpm_loss(lambda x, c: x, torch.zeros(2, 1), VE()),
    lambda: ddpm_loss(lambda x, c: x, torch.zeros(2, 1), ddpm_linear(), target="score"),
    lambda: flow_matching_loss(lambda x, c: x, torch.zeros(2, 1), t_dist="beta"),
    lambda: dsm_loss(lambda x, c: x, torch.zeros(2, 1), ddpm_linear()),
    lambda: drop_labels(torch.zeros(2, dtype=torch.long), 1.5, 3),
])
def test_bad_loss_arguments_raise_user_error(call):
    with pytest.raises(UserError):
        call()
