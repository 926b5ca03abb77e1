"""DPM-Solver++ for the reverse SDE (k-diffusion's dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde), in the samplers.py contract.

Lu et al. 2022 (DPM-Solver++), Sec. 5 and App. B: the data-prediction form of the reverse SDE in EDM variables
(alpha = 1, lambda = t = -ln sigma) has the exact solution
    x' = (sigma'/sigma) e^{-eta h} x + (1 - e^{-(1 + eta) h}) D + sigma' sqrt(1 - e^{-2 eta h}) z + O(derivatives of D),
with eta = 1 the reverse SDE and eta = 0 the probability-flow ODE (DPM-Solver++ itself). The multistep variants
correct D by finite differences of earlier D's (2M: one, 3M: two). Their noise defaults to a Brownian tree seeded
from `generator` (noise.py), as in k-diffusion, so that samples converge as the steps grow.

Notation
    t, h, eta_h        t = -ln sigma, h = t' - t, eta_h = eta h
    r                  ratio of the previous step to this one (h_last / h)
    D_1, D_2, h_1, h_2 the denoised values and step sizes one and two steps back
    phi_2, phi_3       phi_2(x) = (e^{-x} - 1)/x + 1, phi_3 = phi_2 / x - 1/2 at x = (1 + eta) h (Lu et al.'s varphi)
"""
from __future__ import annotations

import math

from torch import Tensor

from unigen.errors import UserError
from unigen.families.continuous_diffusion.noise import resolve_noise
from unigen.families.continuous_diffusion.sampling import (Denoiser, ancestral_step, check_eta, check_grid, denoise,
                                                            report)


def _sigma(t: float) -> float:
    return math.exp(-t)


def sample_dpmpp_sde(D: Denoiser, x: Tensor, sigmas: Tensor, *, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5,
                     noise=None, generator=None, callback=None) -> Tensor:
    """Lu et al. 2022 (DPM-Solver++), Algorithm 1 (singlestep 2S) with an ancestral step at each stage (k-diffusion's
    sample_dpmpp_sde): stage 1 to t + r h, stage 2 to t' with D_d = (1 - 1/(2r)) D + 1/(2r) D_2."""
    check_eta(eta, s_noise)
    if not 0 < r < 1:
        raise UserError(f"DPM-Solver++ SDE needs 0 < r < 1, got r={r}")
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator, default="brownian")
    for i in range(len(s) - 1):
        D_x = denoise(D, x, s[i])
        if s[i + 1] == 0:
            x = x + (x - D_x) / s[i] * (s[i + 1] - s[i])
        else:
            t, t_next = -math.log(s[i]), -math.log(s[i + 1])
            h = t_next - t
            t_mid, fac = t + h * r, 1 / (2 * r)
            sd, su = ancestral_step(_sigma(t), _sigma(t_mid), eta)
            t_d = -math.log(sd)
            x_2 = (_sigma(t_d) / _sigma(t)) * x - math.expm1(t - t_d) * D_x
            x_2 = x_2 + noise(_sigma(t), _sigma(t_mid)) * s_noise * su
            D_2 = denoise(D, x_2, _sigma(t_mid))
            sd, su = ancestral_step(_sigma(t), _sigma(t_next), eta)
            t_d = -math.log(sd)
            x = (_sigma(t_d) / _sigma(t)) * x - math.expm1(t - t_d) * ((1 - fac) * D_x + fac * D_2)
            x = x + noise(_sigma(t), _sigma(t_next)) * s_noise * su
        report(callback, i, x, s[i], D_x)
    return x


def sample_dpmpp_2m_sde(D: Denoiser, x: Tensor, sigmas: Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                        solver_type: str = "midpoint", noise=None, generator=None, callback=None) -> Tensor:
    """Lu et al. 2022 (DPM-Solver++), SDE-DPM-Solver++(2M) (k-diffusion's sample_dpmpp_2m_sde): the exact linear
    part, plus the first difference of D scaled by 1/2 (1 - e^{-(1+eta)h}) ("midpoint") or by phi_2 ("heun")."""
    if solver_type not in ("midpoint", "heun"):
        raise UserError(f"DPM-Solver++(2M) SDE solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    check_eta(eta, s_noise)
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator, default="brownian")
    D_1, h_1 = None, None
    for i in range(len(s) - 1):
        D_x = denoise(D, x, s[i])
        if s[i + 1] == 0:
            x = D_x
        else:
            h = -math.log(s[i + 1]) - -math.log(s[i])
            eta_h = eta * h
            one_minus = -math.expm1(-h - eta_h)                      # 1 - e^{-(1 + eta) h}
            x = s[i + 1] / s[i] * math.exp(-eta_h) * x + one_minus * D_x
            if D_1 is not None:
                scale = (one_minus / (-h - eta_h) + 1) if solver_type == "heun" else 0.5 * one_minus
                x = x + scale * (1 / (h_1 / h)) * (D_x - D_1)
            if eta:
                x = x + noise(s[i], s[i + 1]) * s[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
            h_1 = h
        D_1 = D_x
        report(callback, i, x, s[i], D_x)
    return x


def sample_dpmpp_2m_sde_heun(D: Denoiser, x: Tensor, sigmas: Tensor, **options) -> Tensor:
    """sample_dpmpp_2m_sde with solver_type="heun" (k-diffusion's second variant)."""
    return sample_dpmpp_2m_sde(D, x, sigmas, solver_type="heun", **options)


def sample_dpmpp_3m_sde(D: Denoiser, x: Tensor, sigmas: Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                        noise=None, generator=None, callback=None) -> Tensor:
    """Lu et al. 2022 (DPM-Solver++), third-order multistep (3M, their App. B's Taylor expansion of D in lambda) on
    the SDE (k-diffusion's sample_dpmpp_3m_sde): x' = e^{-(1+eta)h} x + (1 - e^{-(1+eta)h}) D + phi_2 d1 - phi_3 d2
    + noise, with d1, d2 the first and second divided differences of D over the last three steps."""
    check_eta(eta, s_noise)
    s = check_grid(sigmas)
    noise = resolve_noise(noise, x, s, generator, default="brownian")
    D_1 = D_2 = h_1 = h_2 = None
    h = None
    for i in range(len(s) - 1):
        D_x = denoise(D, x, s[i])
        if s[i + 1] == 0:
            x = D_x
        else:
            h = -math.log(s[i + 1]) - -math.log(s[i])
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x + -math.expm1(-h_eta) * D_x
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (D_x - D_1) / r0, (D_1 - D_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif h_1 is not None:
                x = x + phi_2 * ((D_x - D_1) / (h_1 / h))
            if eta:
                x = x + noise(s[i], s[i + 1]) * s[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
        D_1, D_2 = D_x, D_1
        h_1, h_2 = h, h_1
        report(callback, i, x, s[i], D_x)
    return x
