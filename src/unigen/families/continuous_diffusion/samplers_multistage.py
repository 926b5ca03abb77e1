"""k-diffusion's second-order and multistep ODE samplers and their ancestral forms, in the samplers.py contract.

`sample_<name>(D, x, sigmas, *, generator=None, callback=None, **options)`; noise (ancestral steps) comes from the
`noise` source (noise.py: "gaussian" from `generator` by default, "brownian", or a callable (sigma, sigma') -> z).

Notation
    d                  dx/dsigma = (x - D_x) / sigma (EDM Eq. 3)
    sigma_mid          the geometric midpoint exp((ln sigma + ln sigma') / 2) (DPM-Solver-2's r1 = 1/2 in lambda)
    t, h               t = -ln sigma (DPM-Solver's lambda in EDM variables, where alpha = 1), h = t' - t
    sigma_down, sigma_up, eta, s_noise   the ancestral split of sampling.ancestral_step
    ds                 LMS's history of derivatives, newest last
"""
from __future__ import annotations

import math

from torch import Tensor

from unigen.errors import UserError
from unigen.families.continuous_diffusion.noise import resolve_noise
from unigen.families.continuous_diffusion.sampling import (Denoiser, ancestral_step, check_eta, check_grid, churn,
                                                            churn_gamma, denoise, report)


def _geometric_mid(a: float, b: float) -> float:
    """exp(lerp(ln a, ln b, 1/2)), written as torch.lerp computes it for weight 1/2 (k-diffusion's sigma_mid)."""
    la, lb = math.log(a), math.log(b)
    return math.exp(lb - (lb - la) * 0.5)


def _dpm2_step(D: Denoiser, x: Tensor, d: Tensor, sigma: float, sigma_to: float) -> Tensor:
    """Lu et al. 2022 (DPM-Solver-2), Algorithm 1 with r1 = 1/2 written as Karras et al.'s Euler/midpoint in sigma."""
    sigma_mid = _geometric_mid(sigma, sigma_to)
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = (x_2 - denoise(D, x_2, sigma_mid)) / sigma_mid
    return x + d_2 * (sigma_to - sigma)


def sample_dpm_2(D: Denoiser, x: Tensor, sigmas: Tensor, *, S_churn: float = 0.0, S_min: float = 0.0,
                 S_max: float = math.inf, S_noise: float = 1.0, noise=None, generator=None, callback=None) -> Tensor:
    """Lu et al. 2022 (DPM-Solver-2) steps in Karras et al. 2022's Algorithm 2 (k-diffusion's sample_dpm_2): churn,
    then the midpoint rule at the geometric mean of sigma and sigma'; the step to sigma = 0 is Euler."""
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator)
    for i in range(len(s) - 1):
        x, t_hat = churn(x, s[i], s[i + 1], churn_gamma(s[i], len(s) - 1, S_churn, S_min, S_max), S_noise, noise)
        D_x = denoise(D, x, t_hat)
        d = (x - D_x) / t_hat
        x = x + d * (s[i + 1] - t_hat) if s[i + 1] == 0 else _dpm2_step(D, x, d, t_hat, s[i + 1])
        report(callback, i, x, s[i], D_x)
    return x


def sample_dpm_2_ancestral(D: Denoiser, x: Tensor, sigmas: Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                           noise=None, generator=None, callback=None) -> Tensor:
    """DPM-Solver-2 (Lu et al. 2022) to sigma_down, then sigma_up s_noise z (k-diffusion's sample_dpm_2_ancestral)."""
    check_eta(eta, s_noise)
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator)
    for i in range(len(s) - 1):
        D_x = denoise(D, x, s[i])
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        d = (x - D_x) / s[i]
        if sigma_down == 0:
            x = x + d * (sigma_down - s[i])
        else:
            x = _dpm2_step(D, x, d, s[i], sigma_down)
            if sigma_up > 0:
                x = x + noise(s[i], s[i + 1]) * s_noise * sigma_up
        report(callback, i, x, s[i], D_x)
    return x


def lagrange_integral(nodes: list[float], j: int, a: float, b: float) -> float:
    """int_a^b prod_{k != j} (tau - t_k) / (t_j - t_k) dtau, exactly (the polynomial expanded in u = tau - a)."""
    poly = [1.0]                                                     # coefficients of u^0, u^1, ...
    for k, t_k in enumerate(nodes):
        if k == j:
            continue
        c, scale = a - t_k, 1.0 / (nodes[j] - t_k)                   # factor (u + c) / (t_j - t_k)
        poly = [scale * ((poly[m] * c if m < len(poly) else 0.0) + (poly[m - 1] if m > 0 else 0.0))
                for m in range(len(poly) + 1)]
    h = b - a
    return sum(p * h ** (m + 1) / (m + 1) for m, p in enumerate(poly))


def sample_lms(D: Denoiser, x: Tensor, sigmas: Tensor, *, order: int = 4, generator=None, callback=None) -> Tensor:
    """Linear multistep (Adams-Bashforth) in sigma (k-diffusion's sample_lms; Karras et al. 2022, Sec. 3 discusses
    it): x' = x + sum_j c_j d_{i-j}, c_j the integral over [sigma, sigma'] of the Lagrange basis on the last
    min(i + 1, order) noise levels. k-diffusion integrates with scipy's quad; here the integral is exact."""
    if not isinstance(order, int) or order < 1:
        raise UserError(f"LMS order must be a positive integer, got {order!r}")
    s = check_grid(sigmas)
    ds: list[Tensor] = []
    for i in range(len(s) - 1):
        D_x = denoise(D, x, s[i])
        ds = (ds + [(x - D_x) / s[i]])[-order:]
        nodes = [s[i - j] for j in range(len(ds))]                    # newest first
        for j, d in enumerate(reversed(ds)):
            x = x + lagrange_integral(nodes, j, s[i], s[i + 1]) * d
        report(callback, i, x, s[i], D_x)
    return x


def sample_dpmpp_2s_ancestral(D: Denoiser, x: Tensor, sigmas: Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                              noise=None, generator=None, callback=None) -> Tensor:
    """Lu et al. 2022 (DPM-Solver++), Algorithm 1 (singlestep 2S, r = 1/2) to sigma_down, then sigma_up s_noise z
    (k-diffusion's sample_dpmpp_2s_ancestral); the step to sigma_down = 0 is Euler."""
    check_eta(eta, s_noise)
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator)
    for i in range(len(s) - 1):
        D_x = denoise(D, x, s[i])
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        if sigma_down == 0:
            x = x + (x - D_x) / s[i] * (sigma_down - s[i])
        else:
            t, t_next = -math.log(s[i]), -math.log(sigma_down)
            h = t_next - t
            sigma_s = math.exp(-(t + 0.5 * h))
            x_2 = (sigma_s / math.exp(-t)) * x - math.expm1(-0.5 * h) * D_x
            x = (math.exp(-t_next) / math.exp(-t)) * x - math.expm1(-h) * denoise(D, x_2, sigma_s)
        if s[i + 1] > 0 and sigma_up > 0:
            x = x + noise(s[i], s[i + 1]) * s_noise * sigma_up
        report(callback, i, x, s[i], D_x)
    return x
