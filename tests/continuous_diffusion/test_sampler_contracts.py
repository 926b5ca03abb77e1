"""Sampler contracts the analytic-order and moment tests cannot see: where the fresh noise is drawn, what the callback
reports, the options a wrapper forwards, and the predictor-corrector and churn steps written out from their papers
(Song et al. 2021, Algorithm 2-3; Karras et al. 2022, Algorithm 2) on fixed noise."""
import inspect
import math

import pytest
import torch

from unigen.errors import UserError
from unigen.families.continuous_diffusion import Gaussian, SAMPLERS, flow_sigmas, karras_sigmas, nfe
from unigen.families.continuous_diffusion.samplers import (get_sampler, invert_ddim, sample_euler, sample_flow_euler,
                                                           sample_heun, sample_heun_churn, sample_pc)

F64 = torch.float64
DATA = Gaussian(torch.tensor([0.3, -0.5], dtype=F64), torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64))
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


def test_flow_euler_on_a_grid_ending_above_zero_returns_x_at_that_level():
    """A grid ending at sigma > 0 returns x at that level in EDM variables (x = x_t (1 + sigma)): the same as the
    report of that step on the longer grid."""
    full = flow_sigmas(6)
    reports = []
    x = _x()
    sample_flow_euler(DATA.denoiser, x, full, callback=reports.append)
    out = sample_flow_euler(DATA.denoiser, x, full[:4])
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
    ref = _algorithm_2(DATA.denoiser, x, sigmas, 40.0, 0.05, 50.0, 1.003, f)
    torch.testing.assert_close(sample_heun_churn(DATA.denoiser, x, sigmas, noise=f), ref, rtol=1e-12, atol=1e-12)
    ref = _algorithm_2(DATA.denoiser, x, sigmas, 3.0, 0.3, 5.0, 1.1, f)
    torch.testing.assert_close(sample_heun_churn(DATA.denoiser, x, sigmas, noise=f, **opts), ref, rtol=1e-12,
                               atol=1e-12)
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
