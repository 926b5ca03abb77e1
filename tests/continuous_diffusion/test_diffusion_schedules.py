"""Schedules and grids against their papers' formulas, evaluated independently (numpy loops, quadrature)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unigen.families.continuous_diffusion import (EDM, SCHEDULES, VE, ContinuousVP, DiscreteVP, Flow, ddpm_cosine, ddpm_linear,
                              default_sigmas, flow_sigmas, get_schedule, karras_sigmas, logsnr_sigmas, ve_sigmas,
                              vp_sigmas)
from unigen.families.continuous_diffusion.grids import ddpm_timesteps
from unigen.errors import UserError

F64 = torch.float64


def test_linear_ddpm_alpha_bar_is_the_running_product():
    """Ho et al. 2020: beta_t linear in [1e-4, 0.02], alpha_bar_t = prod (1 - beta_s); plain Python loop."""
    a, ref = 1.0, []
    for t in range(1000):
        a *= 1 - (1e-4 + (0.02 - 1e-4) * t / 999)
        ref.append(a)
    torch.testing.assert_close(ddpm_linear().alpha_bar, torch.tensor(ref, dtype=F64), rtol=1e-12, atol=0)


def test_cosine_alpha_bar_follows_f_of_t():
    """Nichol & Dhariwal 2021, Eq. 17: alpha_bar_t = f(t+1)/f(0) with f = cos^2(((t/T) + s)/(1 + s) pi/2) while
    beta < 0.999 (the clip only bites at the very last step)."""
    T, s = 1000, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    ref = torch.tensor([f(t + 1) / f(0) for t in range(T - 1)], dtype=F64)
    torch.testing.assert_close(ddpm_cosine().alpha_bar[:-1], ref, rtol=1e-10, atol=1e-15)
    assert 1 - ddpm_cosine().alpha_bar[-1] / ddpm_cosine().alpha_bar[-2] == pytest.approx(0.999)


def test_continuous_vp_matches_song_integral():
    """Song et al. 2021: alpha_bar(t) = exp(-int_0^t beta(s) ds), beta linear; sigma = sqrt(1/alpha_bar - 1)."""
    sched = ContinuousVP()
    t = torch.linspace(1e-3, 1, 50, dtype=F64)
    for ti in t.tolist():
        grid = np.linspace(0, ti, 2001)
        integral = np.trapezoid(0.1 + grid * (20 - 0.1), grid)        # exact for a linear integrand
        expected = math.sqrt(math.exp(integral) - 1)
        assert sched.sigma(torch.tensor(ti, dtype=F64)).item() == pytest.approx(expected, rel=1e-10)
    assert sched.s(t).pow(2).tolist() == pytest.approx((1 / (1 + sched.sigma(t) ** 2)).tolist(), rel=1e-12)


@pytest.mark.parametrize("schedule", [ddpm_linear(), ddpm_cosine(), ContinuousVP(), VE(), EDM(), Flow()],
                         ids=lambda s: type(s).__name__)
def test_t_of_sigma_inverts_sigma_of_t_and_scale_is_s(schedule):
    if isinstance(schedule, DiscreteVP):
        t = torch.tensor([0.0, 1.0, 17.0, 17.25, 500.5, 998.0, 999.0], dtype=F64)
    else:
        t = torch.tensor([0.01, 0.1, 0.37, 0.5, 0.9, 0.99], dtype=F64)
    sigma = schedule.sigma(t)
    assert (sigma[1:] > sigma[:-1]).all()                             # noise grows with t
    torch.testing.assert_close(schedule.t(sigma), t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(schedule.scale(sigma), schedule.s(t), rtol=1e-12, atol=1e-12)


def test_discrete_levels_are_exact_on_integers_and_c_noise_is_the_index():
    sched = ddpm_linear()
    n = torch.arange(1000)
    a = sched.alpha_bar
    torch.testing.assert_close(sched.sigma(n.double()), ((1 - a) / a).sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(sched.c_noise(sched.sigmas.float()), n.float(), rtol=0, atol=2e-3)
    assert sched.c_noise(torch.tensor([1e-6, 1e6])).tolist() == [0.0, 999.0]   # saturates outside the range


def test_flow_schedule_is_the_linear_interpolation():
    """x_t = (1 - t) x0 + t eps equals s(t) (x0 + sigma(t) eps) with s = 1 - t, sigma = t / (1 - t)."""
    sched, t = Flow(), torch.tensor([0.1, 0.5, 0.8], dtype=F64)
    x0, eps = torch.tensor(2.0, dtype=F64), torch.tensor(-0.7, dtype=F64)
    torch.testing.assert_close(sched.s(t) * (x0 + sched.sigma(t) * eps), (1 - t) * x0 + t * eps)
    assert sched.c_noise(sched.sigma(t)).tolist() == pytest.approx(t.tolist())


def test_c_noise_per_schedule_follows_edm_table_1():
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=F64)
    assert EDM().c_noise(sigma).tolist() == pytest.approx((np.log(sigma.numpy()) / 4).tolist())
    assert VE().c_noise(sigma).tolist() == pytest.approx(np.log(0.5 * sigma.numpy()).tolist())
    assert ContinuousVP().c_noise(sigma).tolist() == pytest.approx((999 * ContinuousVP().t(sigma)).tolist())


def test_karras_grid_is_edm_eq_5():
    n, smin, smax, rho = 18, 0.002, 80.0, 7.0
    ref = [(smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for i in range(n)]
    grid = karras_sigmas(n, smin, smax, rho)
    assert len(grid) == n + 1 and grid[-1] == 0
    assert grid[0].item() == pytest.approx(smax, rel=1e-14) and grid[-2].item() == pytest.approx(smin, rel=1e-12)
    assert (grid[1:] < grid[:-1]).all()
    torch.testing.assert_close(grid[:-1], torch.tensor(ref, dtype=F64), rtol=1e-13, atol=0)
    assert karras_sigmas(1).tolist() == [80.0, 0.0]


def test_vp_ve_logsnr_grids():
    vp = vp_sigmas(10)
    sched = ContinuousVP()
    torch.testing.assert_close(sched.t(vp[:-1]), torch.linspace(1, 1e-3, 10, dtype=F64), rtol=1e-10, atol=1e-12)
    ve = ve_sigmas(10)
    assert ve[0].item() == pytest.approx(100) and ve[-2].item() == pytest.approx(0.02) and ve[-1] == 0
    lam = -2 * torch.log(logsnr_sigmas(7, 0.01, 50.0)[:-1])             # log-SNR in EDM variables
    torch.testing.assert_close(lam.diff(), torch.full((6,), lam.diff()[0].item(), dtype=F64))   # uniform


def test_flow_grid_endpoints_and_shift():
    grid = flow_sigmas(10, t_max=0.999)
    t = grid / (1 + grid)
    assert t[0].item() == pytest.approx(0.999) and grid[-1] == 0 and (grid[1:] < grid[:-1]).all()
    torch.testing.assert_close(t.diff(), torch.full((10,), -0.0999, dtype=F64))
    shifted = flow_sigmas(10, t_max=0.999, shift=3.0)
    assert (shifted[1:-1] > grid[1:-1]).all()                         # shift > 1 spends more steps at high noise


@settings(max_examples=40, deadline=None)
@given(T=st.integers(2, 1200), n_frac=st.floats(0.0, 1.0))
def test_ddpm_timesteps_are_distinct_decreasing_levels(T, n_frac):
    n = max(1, int(n_frac * T))
    for spacing in ("leading", "trailing", "linspace"):
        ts = ddpm_timesteps(T, n, spacing)
        assert len(ts) == n and ts.min() >= 0 and ts.max() <= T - 1
        assert (ts[1:] < ts[:-1]).all(), (T, n, spacing, ts)


def test_default_grids_and_registry():
    for name in SCHEDULES:
        sched = get_schedule(name)
        grid = default_sigmas(sched, 8)
        assert len(grid) == 9 and grid[-1] == 0 and (grid[1:] < grid[:-1]).all()
        assert grid[0].item() == pytest.approx(sched.sigma_max, rel=1e-9)
    with pytest.raises(UserError):
        get_schedule("nope")


@pytest.mark.parametrize("call", [lambda: karras_sigmas(0), lambda: karras_sigmas(3, 1.0, 0.5),
                                  lambda: flow_sigmas(4, t_max=1.5), lambda: ddpm_timesteps(10, 11),
                                  lambda: ddpm_timesteps(10, 3, "sideways"), lambda: flow_sigmas(3, shift=0)])
def test_bad_grid_arguments_raise_user_error(call):
    with pytest.raises(UserError):
        call()


def test_schedule_functions_default_to_their_papers_values():
    """Song et al. 2021, App. C: VP / sub-VP beta in [0.1, 20], VE sigma in [0.02, 100]; the DDPM beta lists have
    T = 1000 (Ho et al. 2020; Nichol & Dhariwal 2021; Rombach et al. 2022). Formulas written out here."""
    from unigen.families.continuous_diffusion.schedules import (cosine_betas, scaled_linear_betas, subvp_sigma,
                                                                subvp_sigma_inv, ve_sigma, ve_sigma_inv, vp_integral,
                                                                vp_sigma, vp_sigma_inv)
    t = torch.tensor([0.01, 0.3, 0.8, 1.0], dtype=F64)
    B = 0.1 * t + 0.5 * (20 - 0.1) * t ** 2
    torch.testing.assert_close(vp_integral(t), B, rtol=1e-14, atol=0)
    torch.testing.assert_close(vp_sigma(t), (B.exp() - 1).sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(vp_sigma_inv((B.exp() - 1).sqrt()), t, rtol=1e-12, atol=0)
    torch.testing.assert_close(subvp_sigma(t), (B / 2).exp() - (-B / 2).exp(), rtol=1e-12, atol=0)
    torch.testing.assert_close(subvp_sigma_inv((B / 2).exp() - (-B / 2).exp()), t, rtol=1e-12, atol=0)
    torch.testing.assert_close(ve_sigma(t), 0.02 * (100 / 0.02) ** t, rtol=1e-12, atol=0)
    torch.testing.assert_close(ve_sigma_inv(0.02 * (100 / 0.02) ** t), t, rtol=1e-12, atol=0)
    assert cosine_betas().numel() == 1000 and scaled_linear_betas().numel() == 1000
    assert scaled_linear_betas()[[0, -1]].tolist() == pytest.approx([0.00085, 0.012], rel=1e-12)


def test_non_default_parameters_reach_every_map():
    """Schedules built with other beta / sigma ranges use them in sigma, t and g^2 (the defaults alone cannot tell
    a dropped argument from a passed one)."""
    from unigen.families.continuous_diffusion import SubVP
    t = torch.tensor([0.05, 0.4, 0.9], dtype=F64)
    lo, hi = 0.3, 7.0
    B = lo * t + 0.5 * (hi - lo) * t ** 2                              # Song et al. 2021, Eq. 11's integral
    for sched, sigma in [(ContinuousVP(beta_min=lo, beta_max=hi), (B.exp() - 1).sqrt()),
                         (SubVP(beta_min=lo, beta_max=hi), 2 * torch.sinh(B / 2)),
                         (VE(sigma_min=0.1, sigma_max=50.0), 0.1 * 500.0 ** t)]:
        torch.testing.assert_close(sched.sigma(t), sigma, rtol=1e-12, atol=0)
        torch.testing.assert_close(sched.t(sigma), t, rtol=1e-12, atol=0)
    beta = lo + t * (hi - lo)
    torch.testing.assert_close(SubVP(beta_min=lo, beta_max=hi).diffusion_sq(t), beta * (1 - (-2 * B).exp()),
                               rtol=1e-12, atol=0)


def test_python_numbers_are_float64_and_tensors_keep_their_dtype():
    """schedules._as_tensor: a Python time is read in float64 (not float32), a tensor passes through unchanged."""
    sched = ContinuousVP()
    assert sched.sigma(0.3).dtype == F64 and sched.t(2.0).dtype == F64
    assert sched.sigma(0.3).item() == pytest.approx(math.sqrt(math.expm1(0.1 * 0.3 + 0.5 * 19.9 * 0.09)), rel=1e-14)
    assert sched.sigma(torch.tensor(0.3)).dtype == torch.float32
    # DDPM: a fractional Python index and a Python sigma are interpolated in float64 too
    d = ddpm_linear()
    ls = d.log_sigmas
    assert d.sigma(500.3).item() == pytest.approx(math.exp(0.7 * ls[500].item() + 0.3 * ls[501].item()), rel=1e-13)
    assert d.t(d.sigmas[417].item()).item() == pytest.approx(417.0, abs=1e-9)


def test_discrete_sigma_saturates_outside_the_trained_indices():
    d = ddpm_linear()
    assert d.sigma(-0.5).item() == pytest.approx(d.sigma_min, rel=1e-14)
    assert d.sigma(999.5).item() == pytest.approx(d.sigma_max, rel=1e-14)


def test_unknown_schedule_message_lists_the_names():
    with pytest.raises(UserError, match=r"^unknown noise schedule 'nope'; choose one of: ddpm-linear, ddpm-cosine, "
                                        r"ddpm-scaled-linear, vp, subvp, ve, edm, flow$"):
        get_schedule("nope")


def test_default_grids_follow_the_schedules_own_parameters():
    """default_sigmas passes each schedule's fields on (non-default values: the defaults would hide a dropped one)."""
    from unigen.families.continuous_diffusion import SubVP
    for sched in (ContinuousVP(beta_min=0.3, beta_max=7.0, eps_t=1e-2), SubVP(beta_min=0.3, beta_max=7.0, eps_t=1e-2),
                  VE(sigma_min=0.1, sigma_max=50.0), EDM(sigma_min=0.01, sigma_max=20.0)):
        grid = default_sigmas(sched, 6)
        assert grid[0].item() == pytest.approx(sched.sigma_max, rel=1e-12)
        assert grid[-2].item() == pytest.approx(sched.sigma_min, rel=1e-12)
        assert grid[-1].item() == 0
    t = 0.9 * (1 - torch.arange(7, dtype=F64) / 6)                     # flow: uniform t from t_max down to 0
    torch.testing.assert_close(default_sigmas(Flow(t_max=0.9), 6), t / (1 - t), rtol=1e-13, atol=0)
    with pytest.raises(UserError, match=r"^no default grid for schedule str$"):
        default_sigmas("edm", 4)


def test_polyexponential_grid_is_k_diffusions_formula():
    """k-diffusion's get_sigmas_polyexponential: ln sigma_i = ln smin + (1 - i/(n-1))^rho (ln smax - ln smin); rho = 1
    by default, the log-SNR (geometric) grid. Written out in float64."""
    from unigen.families.continuous_diffusion.grids import polyexponential_sigmas
    i = torch.arange(9, dtype=F64)
    for rho, kwargs in [(1.0, {}), (2.5, {"rho": 2.5})]:
        expected = (math.log(0.03) + (1 - i / 8) ** rho * (math.log(40.0) - math.log(0.03))).exp()
        grid = polyexponential_sigmas(9, 0.03, 40.0, **kwargs)
        torch.testing.assert_close(grid[:-1], expected, rtol=1e-13, atol=0)
        assert grid[-1] == 0
    torch.testing.assert_close(polyexponential_sigmas(9, 0.03, 40.0), logsnr_sigmas(9, 0.03, 40.0), rtol=1e-13, atol=0)


def test_flow_grid_with_a_positive_t_min_is_diffusers_linspace_in_float64():
    """t_min > 0: t = linspace(t_max, t_min, n) then 0, shifted (Esser et al. 2024, Eq. 23), sigma = t / (1 - t)."""
    t = torch.from_numpy(np.linspace(0.9, 0.013, 7))
    t = 3.0 * t / (1 + 2.0 * t)
    grid = flow_sigmas(7, t_max=0.9, shift=3.0, t_min=0.013)
    torch.testing.assert_close(grid[:-1], t / (1 - t), rtol=1e-13, atol=0)
    assert grid.dtype == F64 and grid[-1] == 0


@pytest.mark.parametrize("call, message", [
    (lambda: flow_sigmas(4, t_max=0.5, t_min=0.5), r"^flow grid needs 0 <= t_min < t_max <= 1, got t_min=0.5, t_max=0.5$"),
    (lambda: flow_sigmas(4, t_max=0.0), r"^flow grid needs 0 <= t_min < t_max <= 1, got t_min=0.0, t_max=0.0$"),
    (lambda: flow_sigmas(4, shift=-1.0), r"^flow time shift must be > 0, got -1.0$"),
    (lambda: logsnr_sigmas(4, 0.0, 1.0), r"^need 0 < sigma_min < sigma_max, got sigma_min=0.0, sigma_max=1.0$"),
    (lambda: logsnr_sigmas(4, 1.0, 1.0), r"^need 0 < sigma_min < sigma_max, got sigma_min=1.0, sigma_max=1.0$"),
    (lambda: _poly(4, 0.0, 1.0), r"^need 0 < sigma_min < sigma_max and rho > 0, got 0.0, 1.0, rho=1.0$"),
    (lambda: _poly(4, 1.0, 1.0), r"^need 0 < sigma_min < sigma_max and rho > 0, got 1.0, 1.0, rho=1.0$"),
    (lambda: _poly(4, 0.1, 1.0, rho=0.0), r"^need 0 < sigma_min < sigma_max and rho > 0, got 0.1, 1.0, rho=0.0$"),
    (lambda: _poly(4, 0.1, 1.0, rho=-2.0), r"rho=-2.0$"),
    (lambda: _ddpm_sigmas(EDM(), 4), r"^ddpm_sigmas needs a discrete DDPM schedule, got EDM$"),
    (lambda: _ddpm_sigmas(ddpm_linear(), 4, steps_offset=300),
     r"^steps_offset=300 puts a timestep past the last level 999$"),
    (lambda: _ddpm_sigmas(ddpm_linear(), 4, set_alpha_to_one=False),
     r"^set_alpha_to_one=False ends on level 0, so the grid may not contain it \(use steps_offset=1\)$"),
    (lambda: ddpm_timesteps(10, 3, "sideways"), r"^unknown timestep spacing 'sideways'; choose leading, trailing or linspace$"),
    (lambda: ddpm_timesteps(10, 11), r"^cannot take 11 steps from a schedule with 10 levels$"),
], ids=["t_min=t_max", "t_max=0", "shift<0", "logsnr-0", "logsnr-equal", "poly-0", "poly-equal", "rho=0", "rho<0",
        "ddpm-not-discrete", "ddpm-offset", "alpha-one", "spacing", "too-many"])
def test_grid_argument_errors_say_what_is_wrong(call, message):
    with pytest.raises(UserError, match=message):
        call()


def _poly(*args, **kwargs):
    from unigen.families.continuous_diffusion.grids import polyexponential_sigmas
    return polyexponential_sigmas(*args, **kwargs)


def _ddpm_sigmas(*args, **kwargs):
    from unigen.families.continuous_diffusion.grids import ddpm_sigmas
    return ddpm_sigmas(*args, **kwargs)


def test_ddpm_defaults_are_1000_levels_and_leading_spacing():
    """Ho et al. 2020: T = 1000 linear betas; diffusers' DDPM / DDIM schedulers default to "leading" spacing
    (Lin et al. 2023, Table 2): t_i = i T / n."""
    from unigen.families.continuous_diffusion.schedules import linear_betas
    assert linear_betas().numel() == 1000
    assert ddpm_timesteps(1000, 4).tolist() == [750, 500, 250, 0]
