"""Preconditioning and network adapters: EDM Table 1's coefficients from their defining properties, and every
parameterization, fed the exact optimal network output in its own native variables, yields the exact denoiser."""
import math

import pytest
import torch

from unigen.families.continuous_diffusion import (EDM, VE, ContinuousVP, Flow, Gaussian, c_in, c_out, c_skip, ddpm_cosine, ddpm_linear,
                              make_denoiser)
from unigen.errors import UserError

F64 = torch.float64
MU, STD = 0.4, 0.8
DATA = Gaussian.isotropic(MU, STD, 3)


@pytest.mark.parametrize("sd", [0.5, 1.0, 0.2])   # toy2d-edm ships sigma_data = 1; 0.5 alone hides a dropped argument
def test_edm_coefficients_match_table_1_and_its_derivation(sd):
    """EDM App. B.6: c_in gives the network unit-variance input, c_skip minimises the effective target's variance,
    c_out makes it unit variance, for data of variance sigma_data^2."""
    sigma = torch.logspace(-3, 2, 30, dtype=F64)
    assert c_skip(sigma, sd).tolist() == pytest.approx((sd ** 2 / (sigma ** 2 + sd ** 2)).tolist(), rel=1e-14)
    assert c_out(sigma, sd).tolist() == pytest.approx((sigma * sd / (sigma ** 2 + sd ** 2).sqrt()).tolist(), rel=1e-14)
    assert c_in(sigma, sd).tolist() == pytest.approx((1 / (sigma ** 2 + sd ** 2).sqrt()).tolist(), rel=1e-14)
    # Var(c_in (y + n)) = c_in^2 (sd^2 + sigma^2) = 1
    torch.testing.assert_close(c_in(sigma, sd) ** 2 * (sd ** 2 + sigma ** 2), torch.ones_like(sigma))
    # effective target F = (y - c_skip (y + n)) / c_out: variance ((1 - c_skip)^2 sd^2 + c_skip^2 sigma^2) / c_out^2
    def target_var(cs):
        return ((1 - cs) ** 2 * sd ** 2 + cs ** 2 * sigma ** 2) / c_out(sigma, sd) ** 2
    torch.testing.assert_close(target_var(c_skip(sigma, sd)), torch.ones_like(sigma))
    for delta in (-1e-3, 1e-3):                                       # c_skip is the minimiser
        assert (target_var(c_skip(sigma, sd) + delta) > target_var(c_skip(sigma, sd))).all()


def _vp_posterior_mean(x_n, alpha, sigma_n):
    """E[x0 | x_native] for x_native = alpha x0 + sigma_n eps, x0 ~ N(MU, STD^2): the Gaussian posterior, written
    directly in the network's native variables."""
    return MU + alpha * STD ** 2 / (alpha ** 2 * STD ** 2 + sigma_n ** 2) * (x_n - alpha * MU)


def _native_optimum(parameterization, alpha_fn, sigma_n_fn):
    """The MSE-optimal network for `parameterization`, as a function of (x_native, c_noise) given closures that
    recover the native alpha and sigma_n from c_noise."""
    def net(x_n, c_noise):
        shape = (-1,) + (1,) * (x_n.ndim - 1)
        alpha, sigma_n = alpha_fn(c_noise).reshape(shape), sigma_n_fn(c_noise).reshape(shape)
        x0 = _vp_posterior_mean(x_n, alpha, sigma_n)
        eps = (x_n - alpha * x0) / sigma_n
        return {"x0": x0, "eps": eps, "v": alpha * eps - sigma_n * x0, "flow": eps - x0,
                "score": -(x_n - alpha * x0) / sigma_n ** 2, "sigma-score": -eps}[parameterization]
    return net


def _vp_alpha_sigma(schedule):
    if hasattr(schedule, "alpha_bar"):                               # discrete: c_noise is the integer level
        a = lambda c: schedule.alpha_bar[c.round().long()]           # noqa: E731
    else:                                                             # continuous VP: c_noise = 999 t
        a = lambda c: 1 / (1 + schedule.sigma(c / 999) ** 2)         # noqa: E731
    return (lambda c: a(c).sqrt()), (lambda c: (1 - a(c)).sqrt())


@pytest.mark.parametrize("parameterization", ["x0", "eps", "v", "score", "sigma-score"])
@pytest.mark.parametrize("schedule", [ddpm_linear(), ddpm_cosine(), ContinuousVP()], ids=["linear", "cosine", "vp"])
def test_vp_adapters_recover_the_exact_denoiser(parameterization, schedule):
    alpha_fn, sigma_n_fn = _vp_alpha_sigma(schedule)
    D = make_denoiser(_native_optimum(parameterization, alpha_fn, sigma_n_fn), parameterization, schedule)
    if hasattr(schedule, "alpha_bar"):
        sigma = schedule.sigmas[torch.tensor([0, 3, 250, 999])]       # on the levels the network was trained on
    else:
        sigma = schedule.sigma(torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=F64))
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=F64) * (1 + sigma[:, None])
    torch.testing.assert_close(D(x, sigma), DATA.denoiser(x, sigma), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("parameterization", ["x0", "eps", "v", "score", "sigma-score"])
@pytest.mark.parametrize("schedule", [VE(), EDM()], ids=["ve", "edm"])
def test_scale_free_adapters_recover_the_exact_denoiser(parameterization, schedule):
    """VE and EDM: s = 1, sigma_n = sigma; c_noise = ln(sigma/2) and ln(sigma)/4 respectively."""
    to_sigma = (lambda c: 2 * c.exp()) if isinstance(schedule, VE) else (lambda c: (4 * c).exp())   # noqa: E731
    net = _native_optimum(parameterization, lambda c: torch.ones_like(c), to_sigma)
    D = make_denoiser(net, parameterization, schedule)
    sigma = torch.tensor([0.02, 0.5, 3.0, 80.0], dtype=F64)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64) * (1 + sigma[:, None])
    torch.testing.assert_close(D(x, sigma), DATA.denoiser(x, sigma), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("parameterization", ["flow", "x0", "eps", "v"])
def test_flow_adapters_recover_the_exact_denoiser(parameterization):
    """Flow: x_t = (1 - t) x0 + t eps, c_noise = t, so alpha = 1 - t and sigma_n = t."""
    net = _native_optimum(parameterization, lambda t: 1 - t, lambda t: t)
    D = make_denoiser(net, parameterization, Flow())
    t = torch.tensor([0.01, 0.3, 0.7, 0.99], dtype=F64)
    sigma = t / (1 - t)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=F64) * (1 + sigma[:, None])
    torch.testing.assert_close(D(x, sigma), DATA.denoiser(x, sigma), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sd", [0.5, 1.0, 0.2])
def test_edm_preconditioning_with_the_ideal_F(sd):
    """EDM Eq. 7: with F = (D* - c_skip x) / c_out (the ideal raw output) the wrapper returns D*, and the network
    sees c_in x = x / sqrt(sigma^2 + sigma_data^2) and c_noise = ln(sigma)/4; conditioning keywords pass through."""
    seen = {}

    def net(x_in, c_noise, y=None):
        sigma = (4 * c_noise).exp()[:, None]
        x = x_in * (sigma ** 2 + sd ** 2).sqrt()                      # undo c_in
        seen["y"], seen["x_in"], seen["c_noise"] = y, x_in, c_noise
        skip, out = sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        return (DATA.denoiser(x, sigma.flatten()) - skip * x) / out

    D = make_denoiser(net, "edm", EDM(), sigma_data=sd)
    sigma = torch.tensor([0.002, 0.3, 5.0, 80.0], dtype=F64)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=F64) * (1 + sigma[:, None])
    torch.testing.assert_close(D(x, sigma, y=torch.arange(4)), DATA.denoiser(x, sigma), rtol=1e-9, atol=1e-9)
    assert seen["y"].tolist() == [0, 1, 2, 3]
    # what the network actually receives, from Table 1 written out here (not from c_in / c_noise)
    torch.testing.assert_close(seen["x_in"], x / (sigma[:, None] ** 2 + sd ** 2).sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(seen["c_noise"], sigma.log() / 4, rtol=1e-12, atol=0)


def test_denoiser_handles_images_and_scalar_sigma():
    """(B, C, H, W) inputs broadcast sigma per example; a 0-dim sigma is expanded to (B,)."""
    calls = {}

    def net(x_in, c_noise):
        calls["c_noise"] = c_noise
        return torch.zeros_like(x_in)

    D = make_denoiser(net, "eps", ddpm_linear())
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(D(x, torch.tensor(1.0)), x)                    # eps = 0 -> D = x
    assert calls["c_noise"].shape == (2,) and calls["c_noise"].dtype == torch.float32


def test_bad_parameterizations_raise_user_error():
    with pytest.raises(UserError):
        make_denoiser(lambda x, c: x, "noise", EDM())
    with pytest.raises(UserError):
        make_denoiser(lambda x, c: x, "flow", EDM())
    assert math.isfinite(make_denoiser(lambda x, c: x, "x0", EDM())(torch.ones(1, 1), torch.ones(1)).item())


def test_a_ve_network_ported_from_edm_needs_no_sign_flip():
    """EDM's VEPrecond (Karras et al. 2022, Table 1, VE column): D = x + sigma F(x, ln(sigma / 2)), c_out = +sigma.
    Any network written for it is a "sigma-score" network here: make_denoiser gives EDM's D exactly, and with the
    optimal F (= -eps) the exact denoiser; the "eps" form would need -F."""
    g = torch.Generator().manual_seed(2)
    W = torch.randn(4, 3, generator=g, dtype=F64)
    F = lambda x, c_noise: torch.tanh(torch.cat([x, c_noise[:, None]], 1) @ W)     # noqa: E731 any network
    sigma = torch.tensor([0.02, 0.5, 3.0, 80.0], dtype=F64)
    x = torch.randn(4, 3, generator=g, dtype=F64) * (1 + sigma[:, None])
    edm_ve = x + sigma[:, None] * F(x, torch.log(0.5 * sigma))          # EDM's VEPrecond, written out
    torch.testing.assert_close(make_denoiser(F, "sigma-score", VE())(x, sigma), edm_ve, rtol=1e-12, atol=1e-12)
    neg = lambda x, c: -F(x, c)                                       # noqa: E731
    torch.testing.assert_close(make_denoiser(neg, "eps", VE())(x, sigma), edm_ve, rtol=1e-12, atol=1e-12)


def test_edm_defaults_are_sigma_data_one_half():
    """EDM Sec. 5 / Table 1 uses sigma_data = 0.5: the coefficient functions and make_denoiser default to it
    (formulas written out here, not through c_in / c_out / c_skip)."""
    sigma = torch.tensor([0.002, 0.5, 3.0, 80.0], dtype=F64)
    sd = 0.5
    torch.testing.assert_close(c_skip(sigma), sd ** 2 / (sigma ** 2 + sd ** 2), rtol=1e-12, atol=0)
    torch.testing.assert_close(c_out(sigma), sigma * sd / (sigma ** 2 + sd ** 2).sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(c_in(sigma), 1 / (sigma ** 2 + sd ** 2).sqrt(), rtol=1e-12, atol=0)
    net = lambda x_in, c_noise: torch.sin(3 * x_in) + c_noise[:, None]      # noqa: E731 any network
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    s = sigma[:, None]
    edm = sd ** 2 / (s ** 2 + sd ** 2) * x + s * sd / (s ** 2 + sd ** 2).sqrt() * net(
        x / (s ** 2 + sd ** 2).sqrt(), sigma.log() / 4)                      # EDM Eq. 7 written out
    torch.testing.assert_close(make_denoiser(net, "edm", EDM())(x, sigma), edm, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v", "score", "sigma-score"])
def test_conditioning_keywords_reach_every_adapted_network(parameterization):
    seen = {}

    def net(x_in, c_noise, y=None):
        seen["y"] = y
        return torch.zeros_like(x_in)

    make_denoiser(net, parameterization, ddpm_linear())(torch.ones(2, 3), torch.ones(2), y=torch.tensor([4, 7]))
    assert seen["y"].tolist() == [4, 7]


def test_sigma_is_cast_to_the_sample_dtype():
    """A float64 sigma (a grid built in float64) with a float32 sample: the network sees float32 c_noise and the
    denoiser returns float32, as the samplers' float32 path expects (no silent promotion to float64)."""
    seen = {}

    def net(x_in, c_noise):
        seen["c_noise"] = c_noise
        return torch.zeros_like(x_in)

    for parameterization in ("eps", "edm"):
        out = make_denoiser(net, parameterization, EDM())(torch.ones(2, 3), torch.tensor([0.5, 2.0], dtype=F64))
        assert out.dtype == torch.float32 and seen["c_noise"].dtype == torch.float32


def test_bad_parameterization_messages_name_the_choices_and_the_schedule():
    with pytest.raises(UserError, match=r"unknown parameterization 'noise'; choose one of: x0, eps, v, score, "
                                        r"sigma-score, flow, edm$"):
        make_denoiser(lambda x, c: x, "noise", EDM())
    with pytest.raises(UserError, match=r"^parameterization 'flow' needs the flow schedule, got EDM$"):
        make_denoiser(lambda x, c: x, "flow", EDM())
