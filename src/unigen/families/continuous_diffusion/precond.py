"""Every network becomes EDM's denoiser D(x; sigma) here, and only here (Karras et al. 2022, Eq. 7 and Table 1).

The contract: `D(x, sigma, **cond) -> x0_hat` with x in EDM's scale-free variables (x = x_native / s) and sigma a
(B,) tensor. A network is called as `net(x_in, c_noise, **cond)` (the backbones' `forward(x, c_noise, y=None)`),
with x_in its native input and c_noise its time input (`schedule.c_noise`, documented per schedule in schedules.py).

Notation
    x           scale-free noisy sample, x = x0 + sigma eps
    s           scale of the schedule at sigma: x_native = s x (VP: 1/sqrt(1 + sigma^2), flow: 1/(1 + sigma), else 1)
    F           raw network output (eps, x0, v, score or flow velocity, in the network's native variables)
    D_x         the denoised estimate x0_hat
    c_skip, c_out, c_in, c_noise, sigma_data     EDM's preconditioning (EDM Table 1, Sec. 5)
    alpha, sigma_n = s, s sigma: the native signal and noise coefficients, x_native = alpha x0 + sigma_n eps

Parameterizations (F -> D_x):
    "x0"     D_x = F
    "eps"    D_x = x - sigma F                                   (Ho et al. 2020; EDM Table 1 VP: c_out = -sigma)
    "sigma-score"  D_x = x + sigma F, F = sigma_n grad log p = -eps   (EDM Table 1 VE: c_skip = 1, c_out = +sigma,
             c_in = 1; what EDM's VEPrecond and score_sde's NCSN++ before its 1/sigma scaling output)
    "v"      D_x = (x - sigma F / s) / (1 + sigma^2)             (Salimans & Ho 2022, v = alpha eps - sigma_n x0)
    "score"  D_x = x + s sigma^2 F                               (Song et al. 2021, F = grad log p(x_native))
    "flow"   D_x = (x - sigma F) / (1 + sigma) = x_t - t F       (Lipman/Liu et al. 2023, F = eps - x0; Flow only)
    "edm"    D_x = c_skip x + c_out F(c_in x, c_noise)           (EDM Eq. 7, Table 1)
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from unigen.families.continuous_diffusion.schedules import Flow, Schedule
from unigen.errors import UserError

Denoiser = Callable[..., Tensor]


def append_dims(v: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against x."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def c_skip(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM Table 1 / Eq. 7: c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)."""
    return sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)


def c_out(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM Table 1 / Eq. 7: c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)."""
    return sigma * sigma_data * (sigma ** 2 + sigma_data ** 2).rsqrt()


def c_in(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM Table 1 / Eq. 7: c_in = 1 / sqrt(sigma^2 + sigma_data^2)."""
    return (sigma ** 2 + sigma_data ** 2).rsqrt()


def D_from_x0(x: Tensor, sigma: Tensor, F: Tensor, s: Tensor) -> Tensor:
    """x0-prediction: the network's output is already x0_hat."""
    return F


def D_from_eps(x: Tensor, sigma: Tensor, F: Tensor, s: Tensor) -> Tensor:
    """Ho et al. 2020, Eq. 15 in EDM variables: x0_hat = x - sigma eps_hat (EDM Table 1, c_skip = 1, c_out = -sigma)."""
    return x - sigma * F


def D_from_sigma_score(x: Tensor, sigma: Tensor, F: Tensor, s: Tensor) -> Tensor:
    """EDM Table 1 (VE column): x0_hat = x + sigma F, F = sigma_n grad log p(x_native) = -eps (c_out = +sigma), so a
    VE network ported from EDM (VEPrecond) or score_sde (NCSN++ without scale_by_sigma) works unchanged."""
    return x + sigma * F


def D_from_v(x: Tensor, sigma: Tensor, F: Tensor, s: Tensor) -> Tensor:
    """Salimans & Ho 2022, App. D: x0_hat = (alpha x_native - sigma_n v) / (alpha^2 + sigma_n^2), with alpha = s,
    sigma_n = s sigma."""
    return (x - sigma * F / s) / (1 + sigma ** 2)


def D_from_score(x: Tensor, sigma: Tensor, F: Tensor, s: Tensor) -> Tensor:
    """Tweedie (the optimum of Song et al. 2021, Eq. 7): alpha x0_hat = x_native + sigma_n^2 grad log p, so
    x0_hat = x + s sigma^2 F."""
    return x + s * sigma ** 2 * F


def D_from_flow(x: Tensor, sigma: Tensor, F: Tensor, s: Tensor) -> Tensor:
    """Liu et al. 2023 (rectified flow), v = eps - x0: x0_hat = x_t - t v, x_t = x/(1+sigma), t = sigma/(1+sigma)."""
    return (x - sigma * F) / (1 + sigma)


PARAMETERIZATIONS = {
    "x0": D_from_x0,
    "eps": D_from_eps,
    "v": D_from_v,
    "score": D_from_score,
    "sigma-score": D_from_sigma_score,
    "flow": D_from_flow,
    "edm": None,            # EDM's c_skip / c_out / c_in preconditioning, handled in make_denoiser
}


def make_denoiser(net: Callable[..., Tensor], parameterization: str, schedule: Schedule,
                  sigma_data: float = 0.5) -> Denoiser:
    """EDM Eq. 7: wrap `net(x_in, c_noise, **cond)` as D(x, sigma, **cond) -> x0_hat in EDM's scale-free variables.

    `parameterization` names what the network predicts (see the module docstring); `schedule` gives the input
    scale s(sigma) (for "edm": c_in) and the time input c_noise(sigma). `sigma_data` is used by "edm" only.
    """
    if parameterization not in PARAMETERIZATIONS:
        raise UserError(f"unknown parameterization {parameterization!r}; choose one of: {', '.join(PARAMETERIZATIONS)}")
    if parameterization == "flow" and not isinstance(schedule, Flow):
        raise UserError(f"parameterization 'flow' needs the flow schedule, got {type(schedule).__name__}")
    adapt = PARAMETERIZATIONS[parameterization]

    def D(x: Tensor, sigma: Tensor, **cond) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])  # (B,)
        sig = append_dims(sigma, x)                                   # (B, 1, ..., 1)
        c_noise = schedule.c_noise(sigma)                             # (B,)
        if adapt is None:
            F = net(c_in(sig, sigma_data) * x, c_noise, **cond)       # (B, ...)
            return c_skip(sig, sigma_data) * x + c_out(sig, sigma_data) * F
        s = schedule.scale(sig)                                       # (B, 1, ..., 1)
        return adapt(x, sig, net(s * x, c_noise, **cond), s)

    return D
