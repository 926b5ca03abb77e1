"""Samplers against closed-form answers: for Gaussian data the probability-flow ODE is solvable, so deterministic
samplers must converge to the exact endpoint with their order, and stochastic ones must reproduce the data moments; the
contracts at the end pin what those cannot see (noise draws, reports, forwarded options, papers' steps written out)."""
import inspect
import math

import numpy as np
import pytest
import torch

from unigen.families.continuous_diffusion import (Gaussian, GaussianMixture, SAMPLERS, ddpm_linear, ddpm_sigmas, flow_sigmas,
                              invert_ddim, karras_sigmas, nfe)
from unigen.families.continuous_diffusion.samplers import (get_sampler, sample_ddim, sample_ddpm, sample_euler,
                                                           sample_flow_euler, sample_heun, sample_heun_churn, sample_pc)
from unigen.errors import UserError

F64 = torch.float64
DATA = Gaussian(torch.tensor([0.3, -0.5], dtype=F64), torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64))


def _start(n_points=64, seed=0):
    return torch.randn(n_points, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _slope(steps, errors):
    """Least-squares slope of -log(error) against log(steps): the observed convergence order."""
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


def _ode_errors(name, steps, data=DATA, exact=None):
    """Max error at sigma = 0 of sampler `name` against the exact ODE solution, for each number of steps.

    Karras grids end with a step from sigma_min = 0.002 to 0 that every one of these samplers takes as
    x = D(x; sigma_min) (Euler to 0; Heun's and DPM-Solver++'s last step is first order), so the oracle is the exact
    ODE to sigma_min followed by that same final denoising; flow grids shrink their last step with n, so they are
    compared at 0.
    """
    errors = []
    for n in steps:
        flow = name.startswith("flow")
        sigmas = flow_sigmas(n) if flow else karras_sigmas(n)
        x = _start() * sigmas[0]
        out = SAMPLERS[name](data.denoiser, x, sigmas)
        if exact is not None:
            ref = exact(x, sigmas)
        elif flow:
            ref = data.ode(x, sigmas[0], 0.0)
        else:
            ref = data.denoiser(data.ode(x, sigmas[0], sigmas[-2]), sigmas[-2])
        errors.append((out - ref).abs().max().item())
    return errors


@pytest.mark.parametrize("name, order", [("euler", 1), ("ddim", 1), ("flow-euler", 1), ("heun", 2), ("dpmpp-2m", 2)])
def test_deterministic_samplers_converge_with_their_order(name, order):
    steps = [16, 32, 64, 128]
    errors = _ode_errors(name, steps)
    assert errors[-1] < errors[0] / 2 ** (3 * order - 1)
    assert abs(_slope(steps, errors) - order) < 0.25, (errors, _slope(steps, errors))


def test_flow_midpoint_converges_at_least_second_order():
    """On a Gaussian the midpoint rule's h^2 error term integrates to zero along these linear ODEs and the observed
    order is 3; second order (or better) is what the method promises, checked on the mixture below."""
    steps = [8, 16, 32, 64]
    errors = _ode_errors("flow-midpoint", steps)
    assert _slope(steps, errors) > 1.9 and errors[-1] < 1e-5


def _mixture_ode_numpy(x, sigma_from, sigma_to, w, mus, stds):
    """High-accuracy reference for a 1-D Gaussian-mixture PF-ODE: scipy's DOP853 in u = ln sigma, denoiser in numpy."""
    solve_ivp = pytest.importorskip("scipy.integrate").solve_ivp

    def rhs(u, y):
        var = stds ** 2 + math.exp(2 * u)                              # (K,)
        logp = np.log(w) - 0.5 * (y[:, None] - mus) ** 2 / var - 0.5 * np.log(2 * np.pi * var)
        r = np.exp(logp - logp.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)
        D_x = (r * (mus + stds ** 2 / var * (y[:, None] - mus))).sum(1)
        return y - D_x                                                # dx/dln sigma = x - D

    sol = solve_ivp(rhs, (math.log(sigma_from), math.log(sigma_to)), x, method="DOP853", rtol=1e-12, atol=1e-12)
    return sol.y[:, -1]


@pytest.mark.parametrize("name, order", [("heun", 2), ("dpmpp-2m", 2), ("flow-midpoint", 2), ("euler", 1)])
def test_orders_on_a_gaussian_mixture(name, order):
    """A non-linear denoiser (two-component mixture), against an independent numpy/scipy ODE solution."""
    w, mus, stds = np.array([0.3, 0.7]), np.array([-1.0, 1.5]), np.array([0.3, 0.5])
    mix = GaussianMixture(torch.tensor(w), (Gaussian.isotropic(-1.0, 0.3), Gaussian.isotropic(1.5, 0.5)))
    flow = name.startswith("flow")

    def exact(x, sigmas):
        last = 1e-9 if flow else sigmas[-2].item()
        y = torch.tensor(_mixture_ode_numpy(x[:, 0].numpy(), sigmas[0].item(), last, w, mus, stds)).reshape(-1, 1)
        return y if flow else mix.denoiser(y, last)

    steps = [16, 32, 64] if order == 2 else [64, 128, 256]            # Euler is pre-asymptotic below ~64 steps here
    xs = _start(8)[:, :1]
    errors = []
    for n in steps:
        sigmas = flow_sigmas(n) if flow else karras_sigmas(n)
        out = SAMPLERS[name](mix.denoiser, xs * sigmas[0], sigmas)
        errors.append((out - exact(xs * sigmas[0], sigmas)).abs().max().item())
    assert abs(_slope(steps, errors) - order) < 0.35, (errors, _slope(steps, errors))


def test_ddim_eta0_is_euler_and_flow_euler_is_euler():
    """DDIM(eta = 0) equals Euler in EDM variables on the same grid; so does Euler in flow time (same x0/eps split)."""
    sigmas = karras_sigmas(13)
    x = _start() * sigmas[0]
    ref = sample_euler(DATA.denoiser, x, sigmas)
    torch.testing.assert_close(sample_ddim(DATA.denoiser, x, sigmas, eta=0.0), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sample_flow_euler(DATA.denoiser, x, sigmas), ref, rtol=1e-10, atol=1e-10)


def test_ddim_eta1_and_ddpm_equal_ho_posterior_step():
    """One DDIM(eta = 1) step and one DDPM step between consecutive DDPM levels equal Ho et al. Eq. 6-7:
    x_{t-1} = sqrt(a_{t-1}) b_t/(1 - a_t) x0 + sqrt(alpha_t)(1 - a_{t-1})/(1 - a_t) x_t + sqrt(b~_t) z
    (VP variables)."""
    sched = ddpm_linear()
    a = sched.alpha_bar
    for t in (1, 10, 500, 999):
        a_t, a_prev = a[t], a[t - 1]
        alpha_t, beta_t = a_t / a_prev, 1 - a_t / a_prev
        x_vp = _start(8, seed=t)
        sigma, sigma_prev = sched.sigmas[t], sched.sigmas[t - 1]
        x = x_vp / a_t.sqrt()
        x0 = DATA.denoiser(x, sigma.expand(8))
        z = torch.randn(8, 2, generator=torch.Generator().manual_seed(99), dtype=F64)
        mean = a_prev.sqrt() * beta_t / (1 - a_t) * x0 + alpha_t.sqrt() * (1 - a_prev) / (1 - a_t) * x_vp
        ref = mean + ((1 - a_prev) / (1 - a_t) * beta_t).sqrt() * z                    # VP variables at t-1
        grid = torch.stack([sigma, sigma_prev, torch.zeros((), dtype=F64)])
        for sampler, kw in ((sample_ddim, {"eta": 1.0}), (sample_ddpm, {})):
            seen = []
            sampler(DATA.denoiser, x, grid, generator=torch.Generator().manual_seed(99),
                    callback=lambda info: seen.append(info["x"]), **kw)
            torch.testing.assert_close(seen[0] * a_prev.sqrt(), ref, rtol=1e-10, atol=1e-10)


def test_ddim_inversion_follows_the_exact_ode_and_round_trips():
    """invert_ddim is Euler up the grid: first-order convergence to the exact ODE map, and DDIM back recovers x."""
    x_data = DATA.sample(64, torch.Generator().manual_seed(5))
    errs = []
    for n in (32, 64, 128):
        up = karras_sigmas(n, sigma_min=0.01, sigma_max=20.0)[:-1].flip(0)   # increasing
        z = invert_ddim(DATA.denoiser, x_data, up)
        errs.append((z - DATA.ode(x_data, up[0], up[-1])).abs().max().item())
        back = sample_ddim(DATA.denoiser, z, torch.cat([up.flip(0), up.new_zeros(1)]))
        exact_back = DATA.denoiser(x_data, up[0])                     # the final DDIM step from sigma_min denoises
        # both legs are O(1/n); measured ratio of the round-trip error to the inversion error: 0.079, 0.080, 0.081
        # at n = 32, 64, 128 (the errors of the two legs mostly cancel), so 0.1 leaves 25% headroom
        assert (back - exact_back).abs().max() < 0.1 * errs[-1]
    assert abs(_slope([32, 64, 128], errs) - 1) < 0.2


# ---- stochastic samplers: moments of the output against the data's ---------------------------------------------

def _moments_ok(out, mu, var):
    """Per-coordinate mean and variance within 5 standard errors of the truth (n iid draws per coordinate)."""
    n = out.shape[0]
    se_mean = (var / n).sqrt()
    se_var = var * math.sqrt(2 / (n - 1))
    assert ((out.mean(0) - mu).abs() < 5 * se_mean).all(), (out.mean(0), mu)
    assert ((out.var(0) - var).abs() < 5 * se_var).all(), (out.var(0), var)


STOCHASTIC = [
    # (name, grid, options); each discretisation bias is at most ~1 standard error at this sample size (checked
    # over several seeds); DDPM's beta_tilde variance is the lower bound (Ho et al. Sec. 3.2), ~1% low here
    ("ddpm", lambda: ddpm_sigmas(ddpm_linear(), 1000), {}),                     # all 1000 DDPM levels
    ("ddpm", lambda: ddpm_sigmas(ddpm_linear(), 100, "trailing"), {"variance": "large"}),
    ("ddim", lambda: ddpm_sigmas(ddpm_linear(), 1000), {"eta": 1.0}),
    ("reverse-diffusion", lambda: ddpm_sigmas(ddpm_linear(), 1000), {}),          # weak order 1: ~0.5% at 1000 steps
    ("heun-churn", lambda: karras_sigmas(256), {"S_noise": 1.0}),               # S_noise = 1: no inflation
    # Langevin's stationary variance is v / (1 - snr^2): snr = 0.05 keeps that 0.25% bias below the tolerance
    ("pc", lambda: ddpm_sigmas(ddpm_linear(), 1000), {"snr": 0.05}),
]


@pytest.mark.parametrize("name, grid, options", STOCHASTIC, ids=[f"{c[0]}-{i}" for i, c in enumerate(STOCHASTIC)])
def test_stochastic_samplers_reproduce_data_moments(name, grid, options):
    mu, std, d, n = 0.7, 1.3, 4, 4000
    data = Gaussian.isotropic(mu, std, d)
    gen = torch.Generator().manual_seed(11)
    sigmas = grid()
    x = torch.randn(n, d, generator=gen, dtype=F64) * sigmas[0]
    out = SAMPLERS[name](data.denoiser, x, sigmas, generator=gen, **options)
    _moments_ok(out.reshape(-1, 1), torch.tensor([mu], dtype=F64), torch.tensor([std ** 2], dtype=F64))


def test_stochastic_samplers_are_reproducible_with_a_generator_and_differ_across_seeds():
    sigmas = karras_sigmas(10)
    x = _start() * sigmas[0]
    for name, opts in (("ddpm", {}), ("ddim", {"eta": 0.5}), ("reverse-diffusion", {}), ("heun-churn", {}), ("pc", {})):
        a = SAMPLERS[name](DATA.denoiser, x, sigmas, generator=torch.Generator().manual_seed(1), **opts)
        b = SAMPLERS[name](DATA.denoiser, x, sigmas, generator=torch.Generator().manual_seed(1), **opts)
        c = SAMPLERS[name](DATA.denoiser, x, sigmas, generator=torch.Generator().manual_seed(2), **opts)
        assert torch.equal(a, b) and not torch.equal(a, c), name


# ---- contract: NFE, callback, shapes, errors ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_nfe_rule_counts_denoiser_calls_and_callback_sees_every_step(name):
    """The table's NFE rule is the number of denoiser calls; the callback numbers steps 0, 1, ... (one per grid step,
    except DPM-Solver fast / adaptive, which lay their own steps); an adaptive sampler reports the NFE it used."""
    calls, seen = [], []

    def D(x, sigma):
        assert sigma.shape == (x.shape[0],) and sigma.dtype == x.dtype
        calls.append(1)
        return DATA.denoiser(x.reshape(-1, 2), sigma.repeat_interleave(x[0].numel() // 2)).reshape(x.shape)

    for n in (1, 2, 7):
        calls.clear(), seen.clear()
        sigmas = flow_sigmas(n) if name.startswith("flow") else karras_sigmas(n)
        x = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * sigmas[0]
        info = {} if SAMPLERS[name].nfe is None else None
        out = SAMPLERS[name](D, x, sigmas, generator=torch.Generator().manual_seed(0),
                             callback=lambda info: seen.append(info["i"]), **({"info": info} if info is not None else {}))
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert len(calls) == (info["nfe"] if info is not None else nfe(name, n)), (name, n, len(calls))
        assert seen == list(range(len(seen) if name.startswith("dpm-") else n))


def test_float32_sampling_keeps_dtype():
    sigmas = karras_sigmas(5)
    x = torch.randn(4, 2) * sigmas[0]
    D = lambda x, s: DATA.denoiser(x, s)                              # noqa: E731 (Gaussian casts to x's dtype)
    for name in SAMPLERS:
        assert SAMPLERS[name](D, x, sigmas, generator=torch.Generator().manual_seed(0)).dtype == torch.float32


@pytest.mark.parametrize("bad", [torch.tensor([1.0, -0.5]), torch.tensor([1.0, 2.0, 0.0]), torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.0]),
                                 torch.tensor([float("inf"), 1.0, 0.0]), torch.ones(2, 2)])
def test_bad_grids_raise_user_error(bad):
    with pytest.raises(UserError):
        sample_euler(DATA.denoiser, torch.zeros(2, 2), bad)


def test_bad_options_raise_user_error():
    sigmas = karras_sigmas(3)
    with pytest.raises(UserError):
        sample_ddim(DATA.denoiser, torch.zeros(2, 2), sigmas, eta=1.5)
    with pytest.raises(UserError):
        sample_ddpm(DATA.denoiser, torch.zeros(2, 2), sigmas, variance="huge")
    with pytest.raises(UserError):
        invert_ddim(DATA.denoiser, torch.zeros(2, 2), sigmas)          # decreasing grid
    with pytest.raises(UserError):
        nfe("nope", 3)


def test_langevin_corrector_pulls_a_coarse_predictor_toward_the_data():
    """On a coarse grid Euler-Maruyama's weak error inflates the variance (each step adds sigma^2 - sigma'^2 of noise,
    more than the exact reverse transition's); the Langevin corrector targets p(x; sigma') and removes most of it."""
    mu, std, d, n = 0.7, 1.3, 16, 1000
    data = Gaussian.isotropic(mu, std, d)
    sigmas = karras_sigmas(50)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(3), dtype=F64) * sigmas[0]
    bias = {}
    for name, opts in (("reverse-diffusion", {}), ("pc", {"snr": 0.16})):
        out = SAMPLERS[name](data.denoiser, x, sigmas, generator=torch.Generator().manual_seed(4), **opts)
        bias[name] = out.var().item() / std ** 2 - 1
    se = math.sqrt(2 / (n * d))
    assert bias["reverse-diffusion"] > 10 * se                           # the predictor alone is visibly biased
    assert abs(bias["pc"]) < bias["reverse-diffusion"] / 2, bias



def test_dpmpp_2m_step_after_a_short_step_is_third_order_locally():
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) extrapolates the denoised value with r = h_prev / h. Over a whole
    grid a swapped ratio telescopes away (the global error stays O(h^2), so convergence orders cannot see it); one
    step of size H right after a tiny step eps = H^2 / 10 can: the exact Gaussian ODE gives a local error O(H^3),
    and a wrong r makes the step first order (local O(H^2))."""
    Hs = [0.4, 0.2, 0.1, 0.05]
    errors = []
    for H in Hs:
        s0 = 5.0
        s1 = s0 * math.exp(-H * H / 10)
        s2 = s1 * math.exp(-H)
        sigmas = torch.tensor([s0, s1, s2, 0.0], dtype=F64)
        x = _start() * s0
        seen = []
        SAMPLERS["dpmpp-2m"](DATA.denoiser, x, sigmas, callback=lambda info: seen.append(info["x"]))
        errors.append((seen[1] - DATA.ode(x, s0, s2)).abs().max().item())
    assert abs(_slope(1 / np.array(Hs), errors) - 3) < 0.25, (errors, _slope(1 / np.array(Hs), errors))


def test_old_name_euler_maruyama_is_the_reverse_diffusion_predictor():
    """Saved configs hold sample.sampler="euler-maruyama": it still resolves, to the sampler it always was."""
    from unigen.families.continuous_diffusion.samplers import ALIASES, get_sampler
    assert ALIASES["euler-maruyama"] == "reverse-diffusion"
    assert get_sampler("euler-maruyama") is SAMPLERS["reverse-diffusion"] and "euler-maruyama" not in SAMPLERS
    assert nfe("euler-maruyama", 7) == 7


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_reports_a_denoiser_output_at_a_level_the_denoiser_saw(name):
    """Every report's "denoised" is one of the denoiser's outputs (the live page and the NFE sweep draw it) and its
    "sigma" a level the denoiser was called at; "x" is a finite tensor of the sample's shape. When the last step to 0
    is one denoising, the last report's "denoised" is the sample itself."""
    outputs, levels, reports = [], set(), []

    def D(x, sigma):
        out = DATA.denoiser(x, sigma)
        outputs.append(out)
        levels.add(round(sigma[0].item(), 9))
        return out

    sigmas = flow_sigmas(6) if name.startswith("flow") else karras_sigmas(6)
    x = _start(5) * sigmas[0]
    out = SAMPLERS[name](D, x, sigmas, generator=torch.Generator().manual_seed(0), callback=reports.append)
    assert reports
    for r in reports:
        assert r["x"].shape == x.shape and torch.isfinite(r["x"]).all()
        assert any(torch.allclose(r["denoised"], o, rtol=1e-9, atol=1e-9) for o in outputs), (name, r["i"])
        assert round(float(r["sigma"]), 9) in levels, (name, r["i"], float(r["sigma"]), sorted(levels))
    if name not in ("lms", "flow-midpoint"):       # their last step to 0 uses several slopes, not one denoising
        torch.testing.assert_close(reports[-1]["denoised"], out, rtol=1e-9, atol=1e-9)


# ---- contracts the analytic-order and moment tests cannot see: where the fresh noise is drawn, what the callback
# reports, the options a wrapper forwards, and the predictor-corrector and churn steps written out from their papers
# (Song et al. 2021, Algorithm 2-3; Karras et al. 2022, Algorithm 2) on fixed noise.
OWN_STEPS = {"dpm-fast", "dpm-adaptive"}      # use only the grid's ends (their own tests: test_kdiffusion_*.py)
NOISY = sorted(n for n, s in SAMPLERS.items() if "noise" in inspect.signature(s.fn).parameters and n not in OWN_STEPS)
# options that make each sampler draw noise at all (the churn samplers draw none at S_churn = 0)
DRAWS = {"euler": {"S_churn": 5.0}, "heun": {"S_churn": 5.0}, "dpm-2": {"S_churn": 5.0}, "ddim": {"eta": 1.0}}


def _x(n=6, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _keyed_noise(shape):
    """A deterministic noise source: z is a fixed function of the (rounded) pair, so two runs see the same z."""
    def noise(sigma, sigma_next):
        seed = hash((round(float(sigma), 9), round(float(sigma_next), 9))) % 2 ** 31
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return noise


@pytest.mark.parametrize("name", NOISY)
def test_noise_is_drawn_for_a_step_inside_one_grid_interval(name):
    """Every draw of a user noise source is for (sigma, sigma_next) with sigma > sigma_next inside one interval of
    the grid (the ancestral steps use the interval itself, DPM-Solver++ SDE its sub-steps); a source passed in is
    the one used."""
    sigmas = karras_sigmas(7, 0.01, 20.0)
    s = sigmas.tolist()
    calls = []

    def noise(a, b):
        calls.append((float(a), float(b)))
        return torch.zeros(6, 2, dtype=F64)

    SAMPLERS[name](DATA.denoiser, _x() * s[0], sigmas, noise=noise, **DRAWS.get(name, {}))
    assert calls, name
    for a, b in calls:
        assert a > b >= 0, (name, a, b)
        assert any(s[j] >= a - 1e-12 and b >= s[j + 1] - 1e-12 for j in range(len(s) - 1)), (name, a, b, s)


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - OWN_STEPS))
def test_each_report_is_the_sample_the_next_step_starts_from(name):
    """callback after step i: "i" counts the steps, and "x" is the sample at sigmas[i + 1], so the deterministic
    samplers' next denoiser call (and the stochastic ones' next step, with noise that is zero) starts from it; the
    last report's "x" is the returned sample."""
    sigmas = flow_sigmas(6) if name.startswith("flow") else karras_sigmas(6, 0.01, 20.0)
    inputs, reports = [], []

    def D(x, sigma):
        inputs.append((x.clone(), round(float(sigma[0]), 9)))
        return DATA.denoiser(x, sigma)

    options = {"noise": lambda a, b: torch.zeros(6, 2, dtype=F64)} if name in NOISY else {}
    x0 = _x() * (1.0 if math.isinf(sigmas[0]) else sigmas[0])
    out = SAMPLERS[name](D, x0, sigmas, callback=reports.append, **options)
    assert [r["i"] for r in reports] == list(range(len(sigmas) - 1)), name
    torch.testing.assert_close(reports[-1]["x"], out, rtol=1e-12, atol=1e-12)
    if name in ("pc", "heun-churn"):     # the corrector's z come from the generator; churn raises the next level
        return
    for i, r in enumerate(reports[:-1]):
        level = round(float(sigmas[i + 1]), 9)
        seen = [x for x, lv in inputs if lv == level]
        assert any(torch.allclose(r["x"], x, rtol=1e-10, atol=1e-10) for x in seen), (name, i)


@pytest.mark.parametrize("name", ["flow-euler", "flow-midpoint"])
def test_flow_samplers_on_a_grid_ending_above_zero_return_x_at_that_level(name):
    """A grid ending at sigma > 0 returns x at that level in EDM variables (x = x_t (1 + sigma)): the same as the
    report of that step on the longer grid."""
    full = flow_sigmas(6)
    reports = []
    x = _x()
    SAMPLERS[name](DATA.denoiser, x, full, callback=reports.append)
    out = SAMPLERS[name](DATA.denoiser, x, full[:4])
    torch.testing.assert_close(out, reports[2]["x"], rtol=1e-12, atol=1e-12)


def test_invert_ddim_on_two_levels_is_one_ddim_step_up():
    """Song et al. 2021, Eq. 13 in EDM variables: x' = D_x + (sigma' / sigma) (x - D_x)."""
    x = _x() * 0.1
    sigma = torch.tensor([0.1] * 6, dtype=F64)
    D_x = DATA.denoiser(x, sigma)
    out = invert_ddim(DATA.denoiser, x, torch.tensor([0.1, 2.5], dtype=F64))
    torch.testing.assert_close(out, D_x + 25.0 * (x - D_x), rtol=1e-12, atol=1e-12)


def _algorithm_2(D, x, sigmas, S_churn, S_min, S_max, S_noise, noise, second_order=True):
    """Karras et al. 2022, Algorithm 2, line by line (N = number of steps)."""
    s = sigmas.tolist()
    N = len(s) - 1
    for i in range(N):
        gamma = min(S_churn / N, math.sqrt(2) - 1) if S_min <= s[i] <= S_max else 0.0
        t_hat = s[i] + gamma * s[i]
        if gamma > 0:
            x = x + math.sqrt(t_hat ** 2 - s[i] ** 2) * S_noise * noise(s[i], s[i + 1])
        d = (x - D(x, torch.full((x.shape[0],), t_hat, dtype=F64))) / t_hat
        x_next = x + (s[i + 1] - t_hat) * d
        if second_order and s[i + 1] != 0:
            d2 = (x_next - D(x_next, torch.full((x.shape[0],), s[i + 1], dtype=F64))) / s[i + 1]
            x_next = x + (s[i + 1] - t_hat) * (d + d2) / 2
        x = x_next
    return x


def test_churn_samplers_are_algorithm_2():
    """Heun and Euler with churn against Algorithm 2 written out: gamma = min(S_churn / N, sqrt 2 - 1) on
    [S_min, S_max] (S_churn = 3 over N = 12 steps: 0.25, below the cap), S_noise scaling the fresh noise; the
    defaults S_min = 0, S_max = inf, S_noise = 1 churn every step; heun-churn is Algorithm 2 with EDM's Table 5
    (ImageNet-64) settings S_churn = 40, S_min = 0.05, S_max = 50, S_noise = 1.003."""
    sigmas = karras_sigmas(12, 0.002, 80.0)
    x = _x() * 80.0
    f = _keyed_noise((6, 2))
    opts = {"S_churn": 3.0, "S_min": 0.3, "S_max": 5.0, "S_noise": 1.1}
    for sampler, second in ((sample_heun, True), (sample_euler, False)):
        ref = _algorithm_2(DATA.denoiser, x, sigmas, 3.0, 0.3, 5.0, 1.1, f, second)
        torch.testing.assert_close(sampler(DATA.denoiser, x, sigmas, noise=f, **opts), ref, rtol=1e-12, atol=1e-12)
        ref = _algorithm_2(DATA.denoiser, x, sigmas, 3.0, 0.0, math.inf, 1.0, f, second)
        torch.testing.assert_close(sampler(DATA.denoiser, x, sigmas, noise=f, S_churn=3.0), ref, rtol=1e-12,
                                   atol=1e-12)
    edges = torch.tensor([80.0, 50.5, 49.5, 5.0, 0.051, 0.049, 0.0], dtype=F64)   # levels beside S_max and S_min
    for grid in (sigmas, edges):
        ref = _algorithm_2(DATA.denoiser, x, grid, 40.0, 0.05, 50.0, 1.003, f)
        torch.testing.assert_close(sample_heun_churn(DATA.denoiser, x, grid, noise=f), ref, rtol=1e-12, atol=1e-12)
    ref = _algorithm_2(DATA.denoiser, x, sigmas, 3.0, 0.3, 5.0, 1.1, f)
    torch.testing.assert_close(sample_heun_churn(DATA.denoiser, x, sigmas, noise=f, **opts), ref, rtol=1e-12,
                               atol=1e-12)
    long = karras_sigmas(200, 0.002, 80.0)              # N = 200: gamma = 40 / N = 0.2, below the sqrt 2 - 1 cap
    torch.testing.assert_close(sample_heun_churn(DATA.denoiser, x, long, noise=f),
                               _algorithm_2(DATA.denoiser, x, long, 40.0, 0.05, 50.0, 1.003, f), rtol=1e-12, atol=1e-12)
    g = lambda: torch.Generator().manual_seed(4)                          # noqa: E731
    torch.testing.assert_close(sample_heun_churn(DATA.denoiser, x, sigmas, generator=g()),
                               sample_heun(DATA.denoiser, x, sigmas, generator=g(), S_churn=40.0, S_min=0.05,
                                           S_max=50.0, S_noise=1.003), rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["batch", "example"])
def test_pc_is_song_algorithm_2_with_the_langevin_corrector(norm):
    """Song et al. 2021, Algorithm 2 (VE PC sampling) in EDM variables: reverse-diffusion predictor x += dtau s +
    sqrt(dtau) z, then x += e g + sqrt(2 e) z' with e = 2 (r ||z'|| / ||g||)^2, r = 0.16 (their default snr), the
    corrector's z' drawn as float64 standard normals from the generator, norms per example or batch-averaged."""
    sigmas = karras_sigmas(5, 0.05, 10.0)
    s = sigmas.tolist()
    x = _x() * s[0]
    f = _keyed_noise((6, 2))
    g = torch.Generator().manual_seed(9)
    ref = x.clone()
    for i in range(len(s) - 1):
        dtau = s[i] ** 2 - s[i + 1] ** 2
        ref = ref + dtau * (DATA.denoiser(ref, torch.full((6,), s[i], dtype=F64)) - ref) / s[i] ** 2
        if s[i + 1] > 0:
            ref = ref + math.sqrt(dtau) * f(s[i], s[i + 1])
            z = torch.randn(6, 2, generator=g, dtype=F64)
            grad = (DATA.denoiser(ref, torch.full((6,), s[i + 1], dtype=F64)) - ref) / s[i + 1] ** 2
            zn, gn = z.norm(dim=1, keepdim=True), grad.norm(dim=1, keepdim=True)
            if norm == "batch":
                zn, gn = zn.mean(), gn.mean()
            e = 2 * (0.16 * zn / gn) ** 2
            ref = ref + e * grad + (2 * e).sqrt() * z
    out = sample_pc(DATA.denoiser, x, sigmas, noise=f, generator=torch.Generator().manual_seed(9), norm=norm)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_nfe_counts_the_denoiser_calls_with_the_options():
    """nfe(name, n, **options) equals the calls a run makes (pc with 3 corrector steps: n + 3 (n - 1))."""
    calls = []

    def D(x, sigma):
        calls.append(1)
        return DATA.denoiser(x, sigma)

    sample_pc(D, _x() * 10.0, karras_sigmas(5, 0.05, 10.0), n_corrector=3, generator=torch.Generator().manual_seed(0))
    assert nfe("pc", 5, n_corrector=3) == len(calls) == 5 + 3 * 4


def test_sampler_lookup_errors_say_what_to_do():
    with pytest.raises(UserError, match=r"^unknown sampler 'nope'; choose one of: " + ", ".join(SAMPLERS) + "$"):
        get_sampler("nope")
    with pytest.raises(UserError, match=r"^sampler 'dpm-adaptive' chooses its own steps \(error control\); its NFE "
                                        r"is known only after sampling, so it cannot be given an NFE budget$"):
        nfe("dpm-adaptive", 10)
    for call, message in [(lambda: SAMPLERS["ddim"](DATA.denoiser, _x(), karras_sigmas(3), eta=1.5),
                           r"^DDIM eta must be in \[0, 1\], got 1.5$"),
                          (lambda: SAMPLERS["ddpm"](DATA.denoiser, _x(), karras_sigmas(3), variance="big"),
                           r"^DDPM variance must be 'small' or 'large', got 'big'$"),
                          (lambda: sample_pc(DATA.denoiser, _x(), karras_sigmas(3), norm="row"),
                           r"^PC corrector norm must be 'batch' or 'example', got 'row'$")]:
        with pytest.raises(UserError, match=message):
            call()


@pytest.mark.parametrize("source", ["gaussian", "brownian"])
@pytest.mark.parametrize("name", sorted(set(NOISY) - {"pc"}))    # pc: its corrector shares the generator
def test_named_noise_sources_are_built_from_the_generator_on_the_grid(name, source):
    """noise="gaussian" is float64 N(0, I) from `generator`; "brownian" a Brownian tree on [smallest positive sigma,
    largest sigma] seeded from `generator` (noise.py), the same as passing those sources built by hand."""
    from unigen.families.continuous_diffusion.noise import brownian_noise, gaussian_noise, seed_from
    sigmas = karras_sigmas(4, 0.05, 10.0)
    x = _x() * 10.0
    opts = DRAWS.get(name, {})
    g = lambda: torch.Generator().manual_seed(11)                         # noqa: E731
    lo, hi = sigmas[-2].item(), sigmas[0].item()
    by_hand = gaussian_noise(x, g()) if source == "gaussian" else brownian_noise(x, lo, hi, seed_from(g()))
    torch.testing.assert_close(SAMPLERS[name](DATA.denoiser, x, sigmas, noise=source, generator=g(), **opts),
                               SAMPLERS[name](DATA.denoiser, x, sigmas, noise=by_hand, **opts), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", sorted(n for n in NOISY if "eta" in inspect.signature(SAMPLERS[n].fn).parameters))
def test_negative_eta_or_s_noise_is_refused(name):
    for bad in ({"eta": -0.5}, {"s_noise": -1.0}):
        if bad.keys() <= inspect.signature(SAMPLERS[name].fn).parameters.keys():
            with pytest.raises(UserError, match=r"must be (>= 0|in \[0, 1\]), got"):
                SAMPLERS[name](DATA.denoiser, _x(), karras_sigmas(3), **bad)


def test_lms_of_order_one_is_euler_and_bad_orders_are_refused():
    """Adams-Bashforth of order 1 is Euler's method."""
    sigmas, x = karras_sigmas(8, 0.01, 20.0), _x() * 20.0
    torch.testing.assert_close(SAMPLERS["lms"](DATA.denoiser, x, sigmas, order=1),
                               sample_euler(DATA.denoiser, x, sigmas), rtol=1e-12, atol=1e-12)
    for bad in (0, 2.5):
        with pytest.raises(UserError, match=rf"^LMS order must be a positive integer, got {bad!r}$"):
            SAMPLERS["lms"](DATA.denoiser, x, sigmas, order=bad)


def test_unipc_order_one_predictor_is_ddim_and_defaults_are_diffusers():
    """UniP-1 (bh2) without the corrector is DPM-Solver++(1), i.e. DDIM (Zhao et al. 2023, Sec. 3.2); the defaults
    are diffusers' UniPCMultistepScheduler ones (solver_order 2, bh2, lower_order_final, corrector on). Without
    lower_order_final an order-3 run still ends with x = D at sigma = 0 (h = inf leaves only D_0)."""
    sigmas, x = karras_sigmas(8, 0.01, 20.0), _x() * 20.0
    unipc = SAMPLERS["unipc"]
    torch.testing.assert_close(unipc(DATA.denoiser, x, sigmas, order=1, corrector=False),
                               SAMPLERS["ddim"](DATA.denoiser, x, sigmas), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(unipc(DATA.denoiser, x, sigmas),
                               unipc(DATA.denoiser, x, sigmas, order=2, variant="bh2", lower_order_final=True,
                                     corrector=True), rtol=0, atol=0)
    reports = []
    out = unipc(DATA.denoiser, x, sigmas, order=3, lower_order_final=False, callback=reports.append)
    torch.testing.assert_close(out, reports[-1]["denoised"], rtol=0, atol=0)
    with pytest.raises(UserError, match=r"^UniPC needs order 1, 2 or 3 and variant bh1 or bh2, got 4, 'bh2'$"):
        unipc(DATA.denoiser, x, sigmas, order=4)


@pytest.mark.parametrize("name", ["dpmpp-sde", "dpmpp-2m-sde", "dpmpp-2m-sde-heun", "dpmpp-3m-sde"])
def test_sde_samplers_default_to_brownian_noise_and_eta_one(name):
    """k-diffusion's DPM-Solver++ SDE samplers default to a Brownian tree (BrownianTreeNoiseSampler) seeded from
    the generator, eta = 1 and s_noise = 1 (and r = 1/2 for dpmpp-sde)."""
    sigmas, x = karras_sigmas(4, 0.05, 10.0), _x() * 10.0
    g = lambda: torch.Generator().manual_seed(2)                          # noqa: E731
    explicit = {"eta": 1.0, "s_noise": 1.0, **({"r": 0.5} if name == "dpmpp-sde" else {})}
    torch.testing.assert_close(SAMPLERS[name](DATA.denoiser, x, sigmas, generator=g()),
                               SAMPLERS[name](DATA.denoiser, x, sigmas, generator=g(), noise="brownian", **explicit),
                               rtol=0, atol=0)


def test_invert_ddim_reports_every_step_up():
    """invert_ddim's callback: step i, the x it reached at sigmas[i + 1], the level sigmas[i] it denoised at and
    D(x_i, sigmas[i])."""
    up = torch.tensor([0.1, 0.5, 2.0, 8.0], dtype=F64)
    x, reports = _x() * 0.1, []
    out = invert_ddim(DATA.denoiser, x, up, callback=reports.append)
    assert [r["i"] for r in reports] == [0, 1, 2] and [float(r["sigma"]) for r in reports] == [0.1, 0.5, 2.0]
    torch.testing.assert_close(reports[-1]["x"], out, rtol=0, atol=0)
    for r, sigma, x_i in zip(reports, up.tolist(), [x] + [r["x"] for r in reports[:-1]]):
        torch.testing.assert_close(r["denoised"], DATA.denoiser(x_i, torch.full((6,), sigma, dtype=F64)),
                                   rtol=1e-12, atol=1e-12)


def test_pc_brownian_noise_spans_the_grid_and_is_seeded_first_from_the_generator():
    """pc with noise="brownian": the tree spans [smallest positive sigma, largest sigma] and takes its seed from the
    generator before the corrector's draws (noise.resolve_noise), as a tree built by hand in that order."""
    from unigen.families.continuous_diffusion.noise import brownian_noise, seed_from
    sigmas, x = karras_sigmas(4, 0.05, 10.0), _x() * 10.0
    g = torch.Generator().manual_seed(6)
    tree = brownian_noise(x, sigmas[-2].item(), sigmas[0].item(), seed_from(g))
    torch.testing.assert_close(sample_pc(DATA.denoiser, x, sigmas, noise="brownian",
                                         generator=torch.Generator().manual_seed(6)),
                               sample_pc(DATA.denoiser, x, sigmas, noise=tree, generator=g), rtol=1e-13, atol=1e-13)


def test_euler_ancestral_defaults_are_k_diffusions():
    """k-diffusion's sample_euler_ancestral: eta = 1 (DDPM's posterior variance), s_noise = 1."""
    sigmas, x, f = karras_sigmas(5, 0.05, 10.0), _x() * 10.0, _keyed_noise((6, 2))
    torch.testing.assert_close(SAMPLERS["euler-ancestral"](DATA.denoiser, x, sigmas, noise=f),
                               SAMPLERS["euler-ancestral"](DATA.denoiser, x, sigmas, noise=f, eta=1.0, s_noise=1.0),
                               rtol=0, atol=0)


# the option checks of the SDE samplers, each bound and message (mutants of samplers_sde.py, session 5)
@pytest.mark.parametrize("r", [0.0, 1.0, 1.5, -0.2])
def test_dpmpp_sde_refuses_r_outside_the_open_unit_interval(r):
    from unigen.families.continuous_diffusion.samplers_sde import sample_dpmpp_sde
    with pytest.raises(UserError, match=rf"^DPM-Solver\+\+ SDE needs 0 < r < 1, got r={r}$"):
        sample_dpmpp_sde(lambda x, s: x, torch.zeros(1, 2), torch.tensor([1.0, 0.0]), r=r)


def test_dpmpp_2m_sde_names_its_solver_types():
    from unigen.families.continuous_diffusion.samplers_sde import sample_dpmpp_2m_sde
    with pytest.raises(UserError, match=r"^DPM-Solver\+\+\(2M\) SDE solver_type must be 'midpoint' or 'heun', "
                                        r"got 'euler'$"):
        sample_dpmpp_2m_sde(lambda x, s: x, torch.zeros(1, 2), torch.tensor([1.0, 0.0]), solver_type="euler")
