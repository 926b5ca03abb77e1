"""Noise-level grids for the samplers: decreasing 1-D float64 tensors sigma_0 > ... > sigma_{n-1} > sigma_n >= 0.

A grid with n steps has n + 1 entries; most end with an appended 0 so the sampler ends on clean data. Two
reproduce libraries exactly instead: DDIM with set_alpha_to_one=False ends at the first DDPM level, and the flow
grid with t_max = 1 starts at sigma = inf (t = 1, pure noise).

Notation
    n           number of sampler steps (grid length n + 1)
    i           step index, 0..n-1
    rho         Karras et al. 2022's warping exponent (EDM Eq. 5), 7 by default
    lambda      log signal-to-noise ratio in EDM's variables, lambda = -2 ln sigma
    T           number of discrete DDPM levels (1000)
    spacing     how DDPM timesteps are picked from 0..T-1 ("leading" | "trailing" | "linspace", as diffusers'
                `timestep_spacing`; Lin et al. 2023, Table 2); steps_offset shifts "leading" (SD uses 1)
    set_alpha_to_one   the DDPM grid's last level: 0 (True) or the first DDPM level (False, Stable Diffusion's DDIM)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from unigen.families.continuous_diffusion.schedules import (EDM, VE, ContinuousVP, DiscreteVP, Flow, Schedule, SubVP,
                                                             flow_sigma, subvp_sigma, vp_sigma)
from unigen.errors import UserError


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise UserError(f"number of sampler steps must be a positive integer, got {n!r}")


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022, Eq. 5: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho, then 0."""
    _check_n(n)
    if not 0 < sigma_min < sigma_max:
        raise UserError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)              # (n,) i / (n - 1)
    inv_max, inv_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return _append_zero((inv_max + ramp * (inv_min - inv_max)) ** rho)


def logsnr_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Lu et al. 2022 (DPM-Solver), Sec. 3.3: lambda = -2 ln sigma uniform, i.e. sigma geometric from max to min."""
    _check_n(n)
    if not 0 < sigma_min < sigma_max:
        raise UserError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    lam = torch.linspace(-2 * math.log(sigma_max), -2 * math.log(sigma_min), n, dtype=torch.float64)  # (n,)
    return _append_zero(torch.exp(-lam / 2))


def polyexponential_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> Tensor:
    """k-diffusion's polyexponential grid: ln sigma_i = ln smin + (1 - i/(n-1))^rho (ln smax - ln smin); rho = 1 is
    the log-SNR (geometric) grid, rho > 1 spends more steps at low noise."""
    _check_n(n)
    if not 0 < sigma_min < sigma_max or rho <= 0:
        raise UserError(f"need 0 < sigma_min < sigma_max and rho > 0, got {sigma_min}, {sigma_max}, rho={rho}")
    ramp = torch.linspace(1, 0, n, dtype=torch.float64) ** rho       # (n,)
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def ve_sigmas(n: int, sigma_min: float = 0.02, sigma_max: float = 100.0) -> Tensor:
    """Song et al. 2021, Sec. 3.4 / EDM Table 1 (VE): t uniform in [1, 0] on the geometric VE schedule."""
    return logsnr_sigmas(n, sigma_min, sigma_max)


def vp_sigmas(n: int, beta_min: float = 0.1, beta_max: float = 20.0, eps_t: float = 1e-3) -> Tensor:
    """EDM Table 1 (VP): t_i = 1 + i/(n-1) (eps_t - 1), sigma_i = sigma_VP(t_i) (Song et al. 2021's uniform-t grid)."""
    _check_n(n)
    t = torch.linspace(1.0, eps_t, n, dtype=torch.float64)          # (n,)
    return _append_zero(vp_sigma(t, beta_min, beta_max))


def subvp_sigmas(n: int, beta_min: float = 0.1, beta_max: float = 20.0, eps_t: float = 1e-3) -> Tensor:
    """Song et al. 2021's uniform-t grid on the sub-VP schedule: t_i = 1 + i/(n-1) (eps_t - 1), sigma = 2 sinh(B/2)."""
    _check_n(n)
    t = torch.linspace(1.0, eps_t, n, dtype=torch.float64)          # (n,)
    return _append_zero(subvp_sigma(t, beta_min, beta_max))


def flow_sigmas(n: int, t_max: float = 0.999, shift: float = 1.0, t_min: float = 0.0) -> Tensor:
    """Flow matching grid in flow time t, optionally shifted (Esser et al. 2024, Eq. 23), sigma = t/(1 - t).

    t_min = 0: t_i = t_max (1 - i/n), i = 0..n (uniform down to 0). t_min > 0: diffusers' / SD3's grid,
    t = linspace(t_max, t_min, n) then 0 (FlowMatchEulerDiscreteScheduler: t_max = 1 and t_min = 1/1000 shifted once,
    shift / (1000 + shift - 1), before the whole grid is shifted).
    t_max = 1 starts at pure noise, sigma_0 = inf (the flow samplers take x = the noise there). shift > 1 spends
    more steps at high noise: t <- shift t / (1 + (shift - 1) t).
    """
    _check_n(n)
    if not (0 < t_max <= 1 and 0 <= t_min < t_max):
        raise UserError(f"flow grid needs 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    if shift <= 0:
        raise UserError(f"flow time shift must be > 0, got {shift}")
    if t_min == 0:
        t = t_max * (1 - torch.arange(n + 1, dtype=torch.float64) / n)   # (n + 1,) ends at exactly 0
    else:
        t = torch.cat([torch.linspace(t_max, t_min, n, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    t = shift * t / (1 + (shift - 1) * t)
    return torch.where(t < 1, flow_sigma(t), torch.full_like(t, math.inf))


def ddpm_timesteps(T: int, n: int, spacing: str = "leading", steps_offset: int = 0) -> Tensor:
    """Lin et al. 2023, Table 2 (diffusers' `timestep_spacing`): n of the T DDPM indices, decreasing. (n,) long."""
    _check_n(n)
    if n > T:
        raise UserError(f"cannot take {n} steps from a schedule with {T} levels")
    if spacing == "leading":
        ts = torch.arange(n, dtype=torch.float64) * (T // n) + steps_offset
    elif spacing == "trailing":
        ts = torch.round(T - torch.arange(n, dtype=torch.float64) * (T / n)) - 1
    elif spacing == "linspace":
        ts = torch.round(torch.linspace(0, T - 1, n, dtype=torch.float64))
    else:
        raise UserError(f"unknown timestep spacing {spacing!r}; choose leading, trailing or linspace")
    return ts.long().sort(descending=True).values


def ddpm_sigmas(schedule: DiscreteVP, n: int, spacing: str = "leading", steps_offset: int = 0,
                set_alpha_to_one: bool = True) -> Tensor:
    """Ho et al. 2020's discrete levels sigma_t = sqrt((1 - alpha_bar_t)/alpha_bar_t) at `ddpm_timesteps`, then the
    final level: 0 (alpha_bar = 1), or with set_alpha_to_one=False (Stable Diffusion's DDIM, diffusers'
    DDIMScheduler option) the first level sigma_0 = sqrt(beta_0 / (1 - beta_0)) > 0, where sampling stops."""
    if not isinstance(schedule, DiscreteVP):
        raise UserError(f"ddpm_sigmas needs a discrete DDPM schedule, got {type(schedule).__name__}")
    ts = ddpm_timesteps(schedule.T, n, spacing, steps_offset)
    if ts.max() >= schedule.T:
        raise UserError(f"steps_offset={steps_offset} puts a timestep past the last level {schedule.T - 1}")
    last = schedule.sigmas[:1] if not set_alpha_to_one else schedule.sigmas.new_zeros(1)
    if not set_alpha_to_one and ts.min() == 0:
        raise UserError("set_alpha_to_one=False ends on level 0, so the grid may not contain it (use steps_offset=1)")
    return torch.cat([schedule.sigmas[ts], last])


def default_sigmas(schedule: Schedule, n: int) -> Tensor:
    """The grid each schedule's paper samples with: DDPM trailing levels, Song's uniform t (VP) or geometric (VE)
    grid, EDM's rho = 7 grid, uniform flow time."""
    builders = {
        DiscreteVP: lambda: ddpm_sigmas(schedule, n, "trailing"),
        ContinuousVP: lambda: vp_sigmas(n, schedule.beta_min, schedule.beta_max, schedule.eps_t),
        SubVP: lambda: subvp_sigmas(n, schedule.beta_min, schedule.beta_max, schedule.eps_t),
        VE: lambda: ve_sigmas(n, schedule.sigma_min, schedule.sigma_max),
        EDM: lambda: karras_sigmas(n, schedule.sigma_min, schedule.sigma_max),
        Flow: lambda: flow_sigmas(n, schedule.t_max),
    }
    if type(schedule) not in builders:
        raise UserError(f"no default grid for schedule {type(schedule).__name__}")
    return builders[type(schedule)]()
