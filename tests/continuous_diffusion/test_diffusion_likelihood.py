"""Probability-flow likelihood against the exact Gaussian log-density.

For data N(mu, Sigma) the ODE is solvable, so the exactly-integrated estimator returns
    -log p(x; sigma_min) + [log p(x_T; sigma_max) - log N(x_T; 0, sigma_max^2 I)],   x_T = exact ODE image of x,
the bracket being the (tiny, known) error of standing in N(0, sigma_max^2 I) for the true p(.; sigma_max). What is
left is the ODE discretisation error, which must shrink with the method's order.
"""
import math

import numpy as np
import pytest
import torch

from unigen.families.continuous_diffusion import Gaussian, bits_per_dim, dequantize, karras_sigmas, native_nll, ode_nll
from unigen.errors import UserError

F64 = torch.float64
DATA = Gaussian(torch.tensor([0.5, -0.3], dtype=F64), torch.tensor([[1.0, 0.7], [0.7, 0.9]], dtype=F64))
SIGMA_MIN, SIGMA_MAX = 0.01, 80.0


def _up(n):
    return karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)[:-1].flip(0)       # increasing sigma_min -> sigma_max


def _expected_nll(x):
    x_T = DATA.ode(x, SIGMA_MIN, SIGMA_MAX)
    log_prior = -0.5 * (x_T ** 2).sum(1) / SIGMA_MAX ** 2 - math.log(2 * math.pi * SIGMA_MAX ** 2)
    return -DATA.log_prob(x, SIGMA_MIN) + DATA.log_prob(x_T, SIGMA_MAX) - log_prior


def _points(n=64, seed=0):
    x0 = DATA.sample(n, torch.Generator().manual_seed(seed))
    return x0 + SIGMA_MIN * torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)


@pytest.mark.parametrize("method, order", [("heun", 2), ("rk4", 4)])
def test_exact_trace_nll_converges_to_the_gaussian_nll(method, order):
    x = _points()
    ref = _expected_nll(x)
    steps, errors = [16, 32, 64], []
    for n in steps:
        out = ode_nll(DATA.denoiser, x, _up(n), trace="exact", method=method)
        errors.append((out["nll"] - ref).abs().max().item())
        assert out["nfe"] == {"heun": 2, "rk4": 4}[method] * (n - 1)
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.3, (errors, slope)


def test_rk4_resolves_the_prior_stand_in_term():
    """With 128 RK4 steps the estimate matches the exact value to a tenth of the (known, small) error of standing in
    N(0, sigma_max^2 I) for p(.; sigma_max): the oracle's correction term is needed and the estimator sees it."""
    x = _points()
    out = ode_nll(DATA.denoiser, x, _up(128), trace="exact", method="rk4")
    mismatch = _expected_nll(x) + DATA.log_prob(x, SIGMA_MIN)        # log p(x_T; s_max) - log N(x_T; 0, s_max^2)
    assert ((out["nll"] - _expected_nll(x)).abs() < mismatch.abs() / 10).all()


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_around_the_exact_trace(probe):
    """Same ODE path (the probes do not move x), so Hutchinson minus exact is a zero-mean noise per point; its mean
    over many points must be within 5 standard errors of 0, and its spread must shrink like 1/sqrt(n_probes)."""
    x = _points(n=1000, seed=2)
    grid = _up(12)
    exact = ode_nll(DATA.denoiser, x, grid, trace="exact")["nll"]
    spread = {}
    for k in (1, 4):
        est = ode_nll(DATA.denoiser, x, grid, trace="hutchinson", probe=probe, n_probes=k,
                      generator=torch.Generator().manual_seed(3))["nll"]
        diff = est - exact
        assert diff.std() > 0                                         # the correlated 2-D Gaussian has off-diagonal J
        assert abs(diff.mean().item()) < 5 * diff.std().item() / math.sqrt(len(diff))
        spread[k] = diff.std().item()
    assert spread[4] == pytest.approx(spread[1] / 2, rel=0.15)      # var ~ 1/k; 1000 points: ~5% error on a std


def test_bits_per_dim_of_uniform_8bit_data_is_8():
    """The uniform density on [-1, 1]^d has NLL d ln 2 nats; over 256 levels that is exactly 8 bits per dimension."""
    d = 12
    assert bits_per_dim(torch.tensor([d * math.log(2)]), d).item() == pytest.approx(8.0)


def test_dequantize_fills_each_pixel_cell():
    k = torch.arange(256, dtype=F64).repeat(50)
    x = k / 127.5 - 1                                                 # 8-bit pixels scaled to [-1, 1]
    u = dequantize(x, generator=torch.Generator().manual_seed(0))
    cell = (u + 1) * 128                                              # in [k, k + 1)
    assert ((cell >= k) & (cell < k + 1)).all()
    assert abs((cell - k).mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / len(k))


def test_ode_nll_works_on_image_shaped_inputs():
    data = Gaussian.isotropic(0.0, 0.5, 4)
    x = data.sample(3, torch.Generator().manual_seed(0))
    D = lambda x, s: data.denoiser(x.reshape(3, 4), s).reshape(x.shape)   # noqa: E731
    flat = ode_nll(data.denoiser, x, _up(6), trace="exact")["nll"]
    img = ode_nll(D, x.reshape(3, 1, 2, 2), _up(6), trace="exact")["nll"]
    torch.testing.assert_close(img, flat)


def test_bad_likelihood_arguments_raise_user_error():
    x = _points(4)
    with pytest.raises(UserError):
        ode_nll(DATA.denoiser, x, karras_sigmas(4))                  # decreasing grid
    with pytest.raises(UserError):
        ode_nll(DATA.denoiser, x, _up(4), method="euler")
    with pytest.raises(UserError):
        ode_nll(DATA.denoiser, x, _up(4), trace="hutchinson", probe="cauchy")


def test_default_solver_is_accurate_and_reported_with_each_bits_per_dim():
    """Defaults (RK4) on a 64-level grid: the exact-trace bits/dim are within 1e-3 of the exact Gaussian answer
    (Heun on the same grid is ~50x further off), and nll_report carries the solver and NFE with the number."""
    from unigen.families.continuous_diffusion.likelihood import nll_report
    x = _points()
    exact_bpd = bits_per_dim(_expected_nll(x), 2).mean().item()
    report = nll_report(ode_nll(DATA.denoiser, x, _up(64), trace="exact"), 2)
    heun = nll_report(ode_nll(DATA.denoiser, x, _up(64), trace="exact", method="heun"), 2)
    assert report["solver"] == "rk4" and report["nfe"] == 4 * 63 and report["trace"] == "exact"
    assert abs(report["bits_per_dim"] - exact_bpd) < 1e-3
    assert abs(heun["bits_per_dim"] - exact_bpd) > 10 * abs(report["bits_per_dim"] - exact_bpd)


def test_ode_nll_parts_are_the_endpoint_its_prior_and_the_sum():
    """The returned parts are what their names say: z is the ODE image of x (the exact Gaussian map at 128 RK4 steps),
    prior_logp = log N(z; 0, sigma_max^2 I) computed here, nll = -(prior_logp + delta_logp); float64 stays float64.
    A single point works too (d is the size of one example)."""
    x = _points(n=8)
    out = ode_nll(DATA.denoiser, x, _up(128), trace="exact")
    z = DATA.ode(x, SIGMA_MIN, SIGMA_MAX)                            # |z| ~ sigma_max: RK4's error is ~6e-6 relative
    torch.testing.assert_close(out["z"], z, rtol=1e-4, atol=0)
    prior = torch.distributions.Normal(torch.zeros(2, dtype=F64), SIGMA_MAX).log_prob(out["z"]).sum(1)
    torch.testing.assert_close(out["prior_logp"], prior, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["nll"], -(out["prior_logp"] + out["delta_logp"]), rtol=0, atol=0)
    assert all(out[k].dtype == F64 for k in ("nll", "prior_logp", "delta_logp", "z"))
    one = ode_nll(DATA.denoiser, x[:1], _up(128), trace="exact")["nll"]
    torch.testing.assert_close(one, out["nll"][:1], rtol=1e-12, atol=1e-12)


def test_rademacher_probes_are_exact_for_a_diagonal_jacobian():
    """v^T A v = tr A for every v in {-1, 1}^d when A is diagonal, so on isotropic Gaussian data (the denoiser's
    Jacobian is c I) one Rademacher probe gives the exact-trace answer; one Gaussian probe does not."""
    iso = Gaussian.isotropic(0.2, 0.8, 3)
    x = iso.sample(16, torch.Generator().manual_seed(4))
    exact = ode_nll(iso.denoiser, x, _up(10), trace="exact")["nll"]
    rade = ode_nll(iso.denoiser, x, _up(10), probe="rademacher", generator=torch.Generator().manual_seed(5))["nll"]
    gauss = ode_nll(iso.denoiser, x, _up(10), probe="gaussian", generator=torch.Generator().manual_seed(5))["nll"]
    torch.testing.assert_close(rade, exact, rtol=1e-10, atol=1e-10)
    assert (gauss - exact).abs().max() > 1e-3
    default = ode_nll(iso.denoiser, x, _up(10), generator=torch.Generator().manual_seed(5))["nll"]
    torch.testing.assert_close(default, rade, rtol=0, atol=0)       # the default probe is Rademacher


def test_hutchinson_probes_follow_the_generator_not_the_global_rng():
    x = _points(n=16)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(ode_nll(DATA.denoiser, x, _up(6), probe="gaussian", generator=torch.Generator().manual_seed(7)))
    torch.testing.assert_close(runs[0]["nll"], runs[1]["nll"], rtol=0, atol=0)
    assert runs[0]["nll"].dtype == F64


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "euler"}, "unknown ODE method 'euler'; choose one of: heun, rk4"),
    ({"trace": "skilling"}, "unknown trace estimator 'skilling'"),
    ({"n_probes": 0}, "n_probes >= 1 and probe rademacher or gaussian, got 0"),
])
def test_ode_nll_errors_name_the_bad_value(kwargs, match):
    with pytest.raises(UserError, match=match):
        ode_nll(DATA.denoiser, _points(n=2), _up(4), **kwargs)


def test_native_nll_is_the_change_of_variables_of_a_scaling():
    """y = s x in d dimensions: -log p_Y(y) = -log p_X(x) + d ln s (checked on N(0, I) against N(0, s^2 I))."""
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    for s in (0.3, 2.0, torch.tensor([0.5, 1.0, 4.0, 0.2, 1.5], dtype=F64)):
        s_col = torch.as_tensor(s, dtype=F64).reshape(-1, 1)
        nll_x = -torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(1)
        nll_y = -torch.distributions.Normal(torch.zeros(1, dtype=F64), s_col).log_prob(s_col * x).sum(1)
        got = native_nll(nll_x, s, 3)
        torch.testing.assert_close(got, nll_y, rtol=1e-12, atol=1e-12)
        assert got.dtype == F64


def test_dequantize_follows_the_generator_and_keeps_the_dtype():
    x = torch.linspace(-1, 1, 256, dtype=F64)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(dequantize(x, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(runs[0], runs[1]) and runs[0].dtype == F64
    assert not torch.equal(runs[0], dequantize(x, generator=torch.Generator().manual_seed(4)))
