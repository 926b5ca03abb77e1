"""What every sampler shares: the grid check, the denoiser call, the step report, the ancestral split.

Notation
    sigma, sigma_next   sigma_i, sigma_{i+1} on the grid
    eta                 how much of a step is stochastic (0: the ODE step, 1: the ancestral / DDPM posterior step)
    sigma_down          the noise level a deterministic step goes to before fresh noise is added
    sigma_up            std of the fresh noise, sigma_down^2 + sigma_up^2 = sigma_next^2
    gamma, t_hat        EDM Algorithm 2's churn: t_hat = (1 + gamma) sigma
"""
from __future__ import annotations

import math
from typing import Callable

from torch import Tensor

from unigen.errors import UserError

Denoiser = Callable[..., Tensor]


def check_grid(sigmas: Tensor, increasing: bool = False, allow_inf_start: bool = False) -> list[float]:
    """Validate a noise-level grid and return it as Python floats (double precision step coefficients).

    A decreasing grid may end at 0 (clean samples) or above it (Stable Diffusion's DDIM with
    set_alpha_to_one=False ends at the first DDPM level; the sampler then returns x at that noise level).
    `allow_inf_start`: the first level may be inf (flow samplers starting at t = 1)."""
    if not isinstance(sigmas, Tensor) or sigmas.ndim != 1 or sigmas.numel() < 2:
        raise UserError("sigmas must be a 1-D tensor with at least two noise levels")
    s = sigmas.double().tolist()
    if not all(math.isfinite(v) for v in s[1 if allow_inf_start and s[0] == math.inf else 0:]):
        raise UserError("sigmas must be finite (for flow models start below t = 1, see grids.flow_sigmas)")
    pairs = list(zip(s[:-1], s[1:]))
    if increasing and (s[0] <= 0 or any(b <= a for a, b in pairs)):
        raise UserError("sigmas must be strictly increasing and start above 0")
    if not increasing and (s[-1] < 0 or any(b >= a for a, b in pairs)):
        raise UserError("sigmas must be strictly decreasing and end at 0 or above")
    return s


def denoise(D: Denoiser, x: Tensor, sigma: float) -> Tensor:
    """D(x; sigma) with sigma as a (B,) tensor of x's dtype."""
    return D(x, x.new_full((x.shape[0],), sigma))


def report(callback, i: int, x: Tensor, sigma: float, D_x: Tensor, **extra) -> None:
    """callback({"i", "x", "sigma", "denoised", ...}) after step i, if there is a callback."""
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "denoised": D_x, **extra})


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Ho et al. 2020's posterior split in EDM variables (as k-diffusion's get_ancestral_step): (sigma_down, sigma_up)
    with sigma_up = min(sigma', eta sigma' sqrt(1 - sigma'^2 / sigma^2)), sigma_down = sqrt(sigma'^2 - sigma_up^2)."""
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
    return (sigma_next ** 2 - sigma_up ** 2) ** 0.5, sigma_up


def churn_gamma(sigma: float, n_steps: int, S_churn: float, S_min: float, S_max: float) -> float:
    """Karras et al. 2022, Algorithm 2, line 4: gamma = min(S_churn / N, sqrt(2) - 1) for sigma in [S_min, S_max]."""
    return min(S_churn / n_steps, math.sqrt(2) - 1) if S_min <= sigma <= S_max else 0.0


def churn(x: Tensor, sigma: float, sigma_next: float, gamma: float, S_noise: float, noise) -> tuple[Tensor, float]:
    """Karras et al. 2022, Algorithm 2, lines 5-6: raise x from sigma to t_hat = (1 + gamma) sigma with fresh noise
    (the noise source's draw for the step sigma -> sigma_next)."""
    t_hat = sigma * (1 + gamma)
    if gamma > 0:
        x = x + math.sqrt(t_hat ** 2 - sigma ** 2) * S_noise * noise(sigma, sigma_next)
    return x, t_hat


def check_eta(eta: float, s_noise: float = 1.0) -> None:
    if not (eta >= 0 and s_noise >= 0):
        raise UserError(f"eta and s_noise must be >= 0, got eta={eta}, s_noise={s_noise}")
