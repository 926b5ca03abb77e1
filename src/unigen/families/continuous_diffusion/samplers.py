"""Samplers: plain functions `sample_<name>(D, x, sigmas, *, generator=None, callback=None, **options) -> x`.

Contract: `D(x, sigma) -> x0_hat` in EDM's scale-free variables with sigma of shape (B,) (see precond.py; bind
conditioning with functools.partial or guidance.guided); `x` is already at noise level sigmas[0] (the caller draws
it, e.g. x = sigmas[0] * randn); `sigmas` is a decreasing 1-D grid ending at 0 or above (see grids.py; ending above
0 returns x at that noise level; flow samplers also take a grid starting at sigma = inf, with x = the noise).
Every sampler accepts `generator` (deterministic ones ignore it) and `callback`, called after each step with a dict {"i", "x", "sigma", "denoised"}; stochastic ones take their fresh noise from
`noise` (noise.py: "gaussian" from `generator`, "brownian", or a callable (sigma, sigma_next) -> z).
`SAMPLERS` (bottom) is the one table: function, NFE for n steps, default steps, and kind (which training methods it
fits); `nfe(name, n_steps)` gives the number of denoiser calls for n_steps = len(sigmas) - 1. The k-diffusion family
lives in samplers_multistage.py (DPM-Solver-2, LMS, DPM-Solver++(2S) ancestral), samplers_sde.py (DPM-Solver++ SDE,
2M SDE, 3M SDE) and samplers_dpm.py (DPM-Solver fast and adaptive); UniPC in samplers_unipc.py; shared helpers
in sampling.py.

Notation
    sigma, sigma_next   sigma_i, sigma_{i+1} on the grid
    D_x                 D(x; sigma), the denoised estimate
    d                   dx/dsigma = (x - D_x) / sigma, the probability-flow ODE (EDM Eq. 3 with sigma(t) = t, s = 1)
    gamma, t_hat, x_hat EDM Algorithm 2's churn: t_hat = (1 + gamma) sigma, x_hat = x at noise level t_hat
    r                   sigma_next^2 / sigma^2
    sigma_up            std of the fresh noise added in a stochastic step
    tau                 sigma^2, the Brownian time of the forward process x = x0 + sigma eps
    h, lambda           DPM-Solver++ step h = lambda_next - lambda with lambda = -ln sigma
    t, x_t              flow time t = sigma / (1 + sigma) and x_t = x / (1 + sigma) = (1 - t) x0 + t eps
    z                   fresh N(0, I) noise
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from unigen.errors import UserError
from unigen.families.continuous_diffusion.noise import resolve_noise
from unigen.families.continuous_diffusion.samplers_dpm import sample_dpm_adaptive, sample_dpm_fast
from unigen.families.continuous_diffusion.samplers_multistage import (sample_dpm_2, sample_dpm_2_ancestral,
                                                                       sample_dpmpp_2s_ancestral, sample_lms)
from unigen.families.continuous_diffusion.samplers_unipc import sample_unipc
from unigen.families.continuous_diffusion.samplers_sde import (sample_dpmpp_2m_sde, sample_dpmpp_2m_sde_heun,
                                                                sample_dpmpp_3m_sde, sample_dpmpp_sde)
from unigen.families.continuous_diffusion.sampling import (Denoiser, ancestral_step, check_eta, check_grid, churn,
                                                            churn_gamma, denoise, report)


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def sample_euler(D: Denoiser, x: Tensor, sigmas: Tensor, *, S_churn: float = 0.0, S_min: float = 0.0,
                 S_max: float = math.inf, S_noise: float = 1.0, noise=None, generator=None, callback=None) -> Tensor:
    """Karras et al. 2022, Algorithm 2 without the second-order correction (Euler steps, as k-diffusion's
    sample_euler): churn to t_hat, then Euler on dx/dsigma = (x - D_x) / sigma. S_churn = 0 is Algorithm 1's Euler."""
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator)
    for i in range(len(s) - 1):
        x, t_hat = churn(x, s[i], s[i + 1], churn_gamma(s[i], len(s) - 1, S_churn, S_min, S_max), S_noise, noise)
        D_x = denoise(D, x, t_hat)
        d = (x - D_x) / t_hat
        x = x + (s[i + 1] - t_hat) * d
        report(callback, i, x, s[i], D_x)
    return x


def sample_euler_ancestral(D: Denoiser, x: Tensor, sigmas: Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                           noise=None, generator=None, callback=None) -> Tensor:
    """Ho et al. 2020's ancestral sampling with Euler steps (k-diffusion's sample_euler_ancestral): Euler to
    sigma_down, then sigma_up s_noise z. eta = 1 is DDPM's posterior variance, eta = 0 plain Euler."""
    check_eta(eta, s_noise)
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator)
    for i in range(len(s) - 1):
        D_x = denoise(D, x, s[i])
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        x = x + (sigma_down - s[i]) * ((x - D_x) / s[i])
        if s[i + 1] > 0 and sigma_up > 0:
            x = x + noise(s[i], s[i + 1]) * s_noise * sigma_up
        report(callback, i, x, s[i], D_x)
    return x


def sample_heun(D: Denoiser, x: Tensor, sigmas: Tensor, *, S_churn: float = 0.0, S_min: float = 0.0,
                S_max: float = math.inf, S_noise: float = 1.0, noise=None, generator=None, callback=None) -> Tensor:
    """Karras et al. 2022, Algorithm 2 (stochastic Heun with churn); S_churn = 0 is Algorithm 1 (deterministic Heun).

    gamma_i = min(S_churn / N, sqrt(2) - 1) for sigma_i in [S_min, S_max]; the last step (to sigma = 0) is Euler.
    """
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator)
    for i in range(len(s) - 1):
        x_hat, t_hat = churn(x, s[i], s[i + 1], churn_gamma(s[i], len(s) - 1, S_churn, S_min, S_max), S_noise, noise)
        D_x = denoise(D, x_hat, t_hat)
        d = (x_hat - D_x) / t_hat
        x = x_hat + (s[i + 1] - t_hat) * d
        if s[i + 1] != 0:
            d_prime = (x - denoise(D, x, s[i + 1])) / s[i + 1]
            x = x_hat + (s[i + 1] - t_hat) * (0.5 * d + 0.5 * d_prime)
        report(callback, i, x, s[i], D_x)
    return x


def sample_heun_churn(D: Denoiser, x: Tensor, sigmas: Tensor, *, S_churn: float = 40.0, S_min: float = 0.05,
                      S_max: float = 50.0, S_noise: float = 1.003, noise=None, generator=None,
                      callback=None) -> Tensor:
    """Karras et al. 2022, Algorithm 2 with the paper's ImageNet-64 settings (Table 5) as defaults."""
    return sample_heun(D, x, sigmas, S_churn=S_churn, S_min=S_min, S_max=S_max, S_noise=S_noise, noise=noise,
                       generator=generator, callback=callback)


def sample_ddim(D: Denoiser, x: Tensor, sigmas: Tensor, *, eta: float = 0.0, noise=None, generator=None,
                callback=None) -> Tensor:
    """Song et al. 2021 (DDIM), Eq. 12 in EDM variables: x' = D_x + sqrt(sigma'^2 - sigma_up^2) eps_hat + sigma_up z.

    Dividing Eq. 12 by sqrt(alpha_bar_{t-1}) turns Eq. 16's sigma_t(eta) into
    sigma_up = eta sigma' sqrt(1 - sigma'^2 / sigma^2); eta = 0 is exactly Euler (Algorithm 1 without correction),
    eta = 1 is DDPM's posterior (Ho et al. 2020, Eq. 7).
    """
    if not 0 <= eta <= 1:
        raise UserError(f"DDIM eta must be in [0, 1], got {eta}")
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator)
    for i in range(len(s) - 1):
        D_x = denoise(D, x, s[i])
        eps_hat = (x - D_x) / s[i]
        sigma_up = eta * s[i + 1] * math.sqrt(1 - s[i + 1] ** 2 / s[i] ** 2)
        x = D_x + math.sqrt(s[i + 1] ** 2 - sigma_up ** 2) * eps_hat
        if sigma_up > 0:
            x = x + sigma_up * noise(s[i], s[i + 1])
        report(callback, i, x, s[i], D_x)
    return x


def sample_ddpm(D: Denoiser, x: Tensor, sigmas: Tensor, *, variance: str = "small", noise=None, generator=None,
                callback=None) -> Tensor:
    """Ho et al. 2020, Algorithm 2 (ancestral sampling) on EDM's grid, with the posterior of Eq. 6-7.

    In x = x_vp / sqrt(alpha_bar) the posterior q(x_{t-1} | x_t, x0) is the Brownian bridge with mean
    D_x + r (x - D_x), r = sigma'^2 / sigma^2, and variance sigma'^2 (1 - r) ("small", sigma_t^2 = beta_tilde_t);
    "large" (sigma_t^2 = beta_t) is beta_t / alpha_bar_{t-1} = (sigma^2 - sigma'^2)(1 + sigma'^2)/(1 + sigma^2).
    On the discrete DDPM levels (grids.ddpm_sigmas) this is DDPM exactly; no noise is added on the step to 0.
    """
    if variance not in ("small", "large"):
        raise UserError(f"DDPM variance must be 'small' or 'large', got {variance!r}")
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator)
    for i in range(len(s) - 1):
        D_x = denoise(D, x, s[i])
        r = s[i + 1] ** 2 / s[i] ** 2
        x = D_x + r * (x - D_x)
        if s[i + 1] > 0:
            var = s[i + 1] ** 2 * (1 - r) if variance == "small" else \
                (s[i] ** 2 - s[i + 1] ** 2) * (1 + s[i + 1] ** 2) / (1 + s[i] ** 2)
            x = x + math.sqrt(var) * noise(s[i], s[i + 1])
        report(callback, i, x, s[i], D_x)
    return x


def _reverse_sde_step(D: Denoiser, x: Tensor, sigma: float, sigma_next: float, noise) -> tuple[Tensor, Tensor]:
    """One step of Song et al.'s reverse-diffusion predictor: Euler-Maruyama on dx = -grad log p(x; sigma) dtau +
    dw_bar in tau = sigma^2 (sample_reverse_diffusion)."""
    D_x = denoise(D, x, sigma)
    dtau = sigma ** 2 - sigma_next ** 2
    x = x + dtau * (D_x - x) / sigma ** 2                             # score = (D_x - x) / sigma^2 (EDM Eq. 3)
    if sigma_next > 0:
        x = x + math.sqrt(dtau) * noise(sigma, sigma_next)
    return x, D_x


def sample_reverse_diffusion(D: Denoiser, x: Tensor, sigmas: Tensor, *, noise=None, generator=None,
                             callback=None) -> Tensor:
    """Song et al. 2021, App. E (reverse-diffusion predictor, Eq. 46-47) for the reverse-time SDE of Eq. 6, in EDM
    variables (EDM Eq. 6 with beta = sigma'/sigma).

    For VP and VE alike, x = x_native / s follows the forward SDE dx = dw in tau = sigma^2 (Song's Eq. 9 and 11
    divided by s(t)); its reverse is dx = -grad log p(x; sigma) dtau + dw_bar. Each step from sigma to sigma' adds
    dtau = sigma^2 - sigma'^2 times the score and sqrt(dtau) z: Euler-Maruyama in tau, which is score_sde's
    ReverseDiffusionPredictor (exactly so for VE). score_sde's EulerMaruyamaPredictor steps the native SDE in t
    instead, with g(t)^2 dt for sigma^2 - sigma'^2 (and VP's drift linearised); it needs the schedule's g(t), which
    the one-denoiser contract (D and a grid) does not carry, so it is not offered. Registered as
    "reverse-diffusion"; "euler-maruyama" is its old name (ALIASES), kept for saved configs.
    """
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator)
    for i in range(len(s) - 1):
        x, D_x = _reverse_sde_step(D, x, s[i], s[i + 1], noise)
        report(callback, i, x, s[i], D_x)
    return x


def _langevin_step_size(z: Tensor, g: Tensor, snr: float, norm: str) -> Tensor:
    """Song et al. 2021, Alg. 2-3: e = 2 (snr ||z|| / ||g||)^2, per example or with batch-mean norms. (B, 1, ..., 1)"""
    z_norm, g_norm = z.flatten(1).norm(dim=1), g.flatten(1).norm(dim=1)     # (B,)
    if norm == "batch":
        z_norm, g_norm = z_norm.mean().expand_as(z_norm), g_norm.mean().expand_as(g_norm)
    return (2 * (snr * z_norm / g_norm) ** 2).reshape(-1, *([1] * (z.ndim - 1)))


def sample_pc(D: Denoiser, x: Tensor, sigmas: Tensor, *, snr: float = 0.16, n_corrector: int = 1,
              norm: str = "batch", noise=None, generator=None, callback=None) -> Tensor:
    """Song et al. 2021, Algorithms 2-3 (predictor-corrector): reverse-diffusion predictor, Langevin corrector.

    After each predictor step to sigma' > 0, `n_corrector` Langevin steps x += e g + sqrt(2 e) z with g the score at
    sigma' and e = 2 (snr ||z|| / ||g||)^2 (no corrector at sigma' = 0, where the score is undefined). norm="example"
    takes the norms per example as the algorithms do; in few dimensions ||z|| / ||g|| is heavy-tailed (an F
    distribution) and single samples jump far, so the default "batch" averages the norms over the batch, as
    Song et al.'s code does. The snr fixes ||e g|| / ||sqrt(2 e) z||, so it means the same in VP and in EDM
    variables (Alg. 3's alpha_i ~ 1 is dropped). `noise` feeds the predictor; the corrector's z come from `generator`.
    """
    if norm not in ("batch", "example"):
        raise UserError(f"PC corrector norm must be 'batch' or 'example', got {norm!r}")
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator)
    for i in range(len(s) - 1):
        x, D_x = _reverse_sde_step(D, x, s[i], s[i + 1], noise)
        for _ in range(n_corrector if s[i + 1] > 0 else 0):
            z = _noise(x, generator)
            g = (denoise(D, x, s[i + 1]) - x) / s[i + 1] ** 2              # score at sigma'
            e = _langevin_step_size(z, g, snr, norm)                  # (B, 1, ..., 1)
            x = x + e * g + (2 * e).sqrt() * z
        report(callback, i, x, s[i], D_x)
    return x


def sample_dpmpp_2m(D: Denoiser, x: Tensor, sigmas: Tensor, *, generator=None, callback=None) -> Tensor:
    """Lu et al. 2022 (DPM-Solver++), Algorithm 2 (multistep 2M) in EDM variables: alpha = 1, lambda = -ln sigma.

    First step first order; the step to sigma = 0 (h = inf) is the first-order limit x = D_x.
    """
    s = check_grid(sigmas)
    D_prev, h_prev = None, None
    for i in range(len(s) - 1):
        D_x = denoise(D, x, s[i])
        if s[i + 1] == 0:
            x = D_x
        else:
            h = math.log(s[i] / s[i + 1])
            D_hat = D_x
            if D_prev is not None:
                r = h_prev / h
                D_hat = (1 + 1 / (2 * r)) * D_x - (1 / (2 * r)) * D_prev
            x = (s[i + 1] / s[i]) * x - math.expm1(-h) * D_hat
            D_prev, h_prev = D_x, h
        report(callback, i, x, s[i], D_x)
    return x


def _flow_velocity(D: Denoiser, x_t: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """Liu et al. 2023: v = eps - x0 = (x_t - x0_hat) / t, with x0_hat = D(x_t / (1 - t); t / (1 - t)).

    At t = 1 (sigma = inf) D is evaluated at t = 1 - eps of x's dtype, where x_t / (1 - t) and sigma are finite and
    D's flow form (x - sigma F) / (1 + sigma) = x_t - t F is exact to rounding."""
    t_eval = min(t, 1 - torch.finfo(x_t.dtype).eps)
    D_x = denoise(D, x_t / (1 - t_eval), t_eval / (1 - t_eval))
    return (x_t - D_x) / t, D_x


def _flow_start(sigmas: Tensor, x: Tensor) -> tuple[list[float], list[float], Tensor]:
    """(sigmas, flow times t, x_t). A flow grid may start at sigma = inf (t = 1, pure noise, as diffusers and SD3
    sample); `x` is then the noise itself, x_t = eps."""
    s = check_grid(sigmas, allow_inf_start=True)
    t = [1.0 if math.isinf(v) else v / (1 + v) for v in s]
    return s, t, x if math.isinf(s[0]) else x / (1 + s[0])


def sample_flow_euler(D: Denoiser, x: Tensor, sigmas: Tensor, *, generator=None, callback=None) -> Tensor:
    """Liu et al. 2023 (rectified flow), Euler on dx_t/dt = v(x_t, t) in flow time t = sigma / (1 + sigma)."""
    s, t, x_t = _flow_start(sigmas, x)
    for i in range(len(t) - 1):
        v, D_x = _flow_velocity(D, x_t, t[i])
        x_t = x_t + (t[i + 1] - t[i]) * v
        report(callback, i, x_t * (1 + s[i + 1]), s[i], D_x)
    return x_t * (1 + s[-1])                                          # t = 0: x = x_t


def sample_flow_midpoint(D: Denoiser, x: Tensor, sigmas: Tensor, *, generator=None, callback=None) -> Tensor:
    """Liu et al. 2023 (rectified flow), explicit midpoint (RK2) on dx_t/dt = v(x_t, t) in flow time t."""
    s, t, x_t = _flow_start(sigmas, x)
    for i in range(len(t) - 1):
        v, D_x = _flow_velocity(D, x_t, t[i])
        t_mid = 0.5 * (t[i] + t[i + 1])
        v_mid, _ = _flow_velocity(D, x_t + (t_mid - t[i]) * v, t_mid)
        x_t = x_t + (t[i + 1] - t[i]) * v_mid
        report(callback, i, x_t * (1 + s[i + 1]), s[i], D_x)
    return x_t * (1 + s[-1])


def invert_ddim(D: Denoiser, x: Tensor, sigmas: Tensor, *, callback=None) -> Tensor:
    """Song et al. 2021 (DDIM), Sec. 4.3 / Eq. 13: deterministic encoding, Euler on the ODE up an increasing grid.

    `x` is at noise level sigmas[0] > 0 (e.g. data at the smallest DDPM level); returns x at sigmas[-1].
    """
    s = check_grid(sigmas, increasing=True)
    for i in range(len(s) - 1):
        D_x = denoise(D, x, s[i])
        x = D_x + (s[i + 1] / s[i]) * (x - D_x)
        report(callback, i, x, s[i], D_x)
    return x


@dataclass(frozen=True)
class Sampler:
    """One registry entry: the sampler function and what the machinery needs to know about it.

    kind: "ode" and "sde" samplers fit every training method; "ddpm" needs the DDPM posterior (a ddpm-trained
    model); "flow" steps in flow time (a flow-matching model). Calling the entry calls the function."""
    fn: Callable[..., Tensor]
    nfe: Callable[..., int] | None  # denoiser calls for n = len(sigmas) - 1 steps on a grid ending at 0;
                                    # None: the sampler picks its steps (adaptive) and reports its NFE
    default_steps: int              # steps when the user gives none
    kind: str

    def __call__(self, D: Denoiser, x: Tensor, sigmas: Tensor, **kw) -> Tensor:
        return self.fn(D, x, sigmas, **kw)


def nfe(name: str, n_steps: int, **options) -> int:
    """Number of denoiser evaluations of sampler `name` for n_steps = len(sigmas) - 1 (options as passed to it)."""
    spec = get_sampler(name)
    if spec.nfe is None:
        raise UserError(f"sampler {name!r} chooses its own steps (error control); its NFE is known only after "
                        f"sampling, so it cannot be given an NFE budget")
    return spec.nfe(n_steps, **options)


def canonical(name: str) -> str:
    """The registered name of `name` (an old name in ALIASES maps to its new one)."""
    return ALIASES.get(name, name)


def get_sampler(name: str) -> Sampler:
    """The sampler registered under `name` (or an alias of it); UserError lists the names."""
    if canonical(name) not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[canonical(name)]


# Heun's last step is Euler (no second call at sigma = 0), and so is PC's (no corrector at sigma = 0). Default steps:
# NFE 35 for Heun (EDM's CIFAR-10 setting), 50 for first-order ODE steps, 100 for SDE and ancestral steps.
SAMPLERS = {
    "ddpm": Sampler(sample_ddpm, lambda n, **o: n, 100, "ddpm"),
    "heun": Sampler(sample_heun, lambda n, **o: 2 * n - 1, 18, "ode"),
    "euler": Sampler(sample_euler, lambda n, **o: n, 50, "ode"),
    "dpmpp-2m": Sampler(sample_dpmpp_2m, lambda n, **o: n, 25, "ode"),
    "ddim": Sampler(sample_ddim, lambda n, **o: n, 50, "ode"),
    "heun-churn": Sampler(sample_heun_churn, lambda n, **o: 2 * n - 1, 18, "sde"),
    "reverse-diffusion": Sampler(sample_reverse_diffusion, lambda n, **o: n, 100, "sde"),
    # k-diffusion's samplers (samplers_multistage.py, samplers_sde.py, samplers_dpm.py)
    "euler-ancestral": Sampler(sample_euler_ancestral, lambda n, **o: n, 100, "sde"),
    "lms": Sampler(sample_lms, lambda n, **o: n, 50, "ode"),
    "dpm-2": Sampler(sample_dpm_2, lambda n, **o: 2 * n - 1, 18, "ode"),
    "dpm-2-ancestral": Sampler(sample_dpm_2_ancestral, lambda n, **o: 2 * n - 1, 50, "sde"),
    "dpmpp-2s-ancestral": Sampler(sample_dpmpp_2s_ancestral, lambda n, **o: 2 * n - 1, 50, "sde"),
    "dpmpp-sde": Sampler(sample_dpmpp_sde, lambda n, **o: 2 * n - 1, 50, "sde"),
    "dpmpp-2m-sde": Sampler(sample_dpmpp_2m_sde, lambda n, **o: n, 50, "sde"),
    "dpmpp-2m-sde-heun": Sampler(sample_dpmpp_2m_sde_heun, lambda n, **o: n, 50, "sde"),
    "dpmpp-3m-sde": Sampler(sample_dpmpp_3m_sde, lambda n, **o: n, 50, "sde"),
    "dpm-fast": Sampler(sample_dpm_fast, lambda n, **o: n, 25, "ode"),
    "unipc": Sampler(sample_unipc, lambda n, **o: n, 20, "ode"),
    "dpm-adaptive": Sampler(sample_dpm_adaptive, None, 2, "ode"),          # uses the grid's ends only
    "pc": Sampler(sample_pc, lambda n, n_corrector=1, **o: n + n_corrector * (n - 1), 100, "sde"),
    "flow-euler": Sampler(sample_flow_euler, lambda n, **o: n, 50, "flow"),
    "flow-midpoint": Sampler(sample_flow_midpoint, lambda n, **o: 2 * n, 25, "flow"),
}
# Old names that saved configs (RUN/config.json's sample.sampler) and scripts may still use.
ALIASES = {"euler-maruyama": "reverse-diffusion"}
