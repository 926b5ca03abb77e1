"""DPM-Solver (Lu et al. 2022, arXiv:2206.00927): fixed-order "fast" and error-controlled adaptive, in EDM variables.

With alpha = 1 and lambda = t = -ln sigma, DPM-Solver's noise-prediction updates (Algorithms 4-6 of the paper,
k-diffusion's DPMSolver class) read
    order 1:  x' = x - sigma(t') (e^h - 1) eps
    order 2:  u1 at s1 = t + r1 h, x' = x - sigma(t') (e^h - 1) eps - sigma(t') / (2 r1) (e^h - 1) (eps_1 - eps)
    order 3:  u1 at t + h/3, u2 at t + 2h/3, x' = ... - sigma(t') / r2 ((e^h - 1)/h - 1) (eps_2 - eps)
with eps = (x - D(x; sigma)) / sigma. "fast" spends a fixed NFE on steps of order 3 (ending with 2, 1 or a 2) on a
grid uniform in t; "adaptive" pairs orders (1, 2) or (2, 3), takes the difference as the local error, and steers
the step size with a PID controller (Lu et al. Alg. 5; Söderlind 2003) until it reaches sigma_min.

Both integrate from the grid's first sigma to its last positive one and then denoise once (the step to sigma = 0 of
every other sampler), so they fit the samplers.py contract; `dpm_solver_fast` / `dpm_solver_adaptive` are the
integrators alone (k-diffusion's sample_dpm_fast / sample_dpm_adaptive).

Notation
    t, h              t = -ln sigma, h = t' - t (> 0 going towards data)
    eps, eps_1, eps_2 noise predictions at t and at the intermediate points u1 (s1), u2 (s2)
    rtol, atol        the error tolerance delta = max(atol, rtol max(|x_low|, |x_prev|)), error = RMS((x_low - x_high)/delta)
    b1, b2, b3        PID exponents from pcoeff, icoeff, dcoeff divided by the order
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from unigen.errors import UserError
from unigen.families.continuous_diffusion.noise import resolve_noise
from unigen.families.continuous_diffusion.sampling import (Denoiser, ancestral_step, check_eta, check_grid, denoise,
                                                            report)


def _sigma(t: float) -> float:
    return math.exp(-t)


class _Eps:
    """eps(x, t) = (x - D(x; sigma(t))) / sigma(t), counting calls."""

    def __init__(self, D: Denoiser):
        self.D, self.nfe = D, 0

    def __call__(self, x: Tensor, t: float) -> Tensor:
        self.nfe += 1
        return (x - denoise(self.D, x, _sigma(t))) / _sigma(t)


def dpm_step(eps_fn: _Eps, x: Tensor, t: float, t_next: float, eps: Tensor, order: int, r1: float | None = None,
             cache: dict | None = None) -> Tensor:
    """One DPM-Solver step of `order` 1, 2 (r1 = 1/2 unless given) or 3 (r1 = 1/3, r2 = 2/3) from t to t_next.
    `cache` keeps eps_1 between an order-2 step with r1 = 1/3 and the order-3 step of the same t, t_next (the
    adaptive pair shares u1)."""
    cache = {} if cache is None else cache
    h = t_next - t
    x_1 = x - _sigma(t_next) * math.expm1(h) * eps
    if order == 1:
        return x_1
    r1 = r1 if r1 is not None else (0.5 if order == 2 else 1 / 3)
    s1 = t + r1 * h
    u1 = x - _sigma(s1) * math.expm1(r1 * h) * eps
    if "eps_1" not in cache:
        cache["eps_1"] = eps_fn(u1, s1)
    eps_1 = cache["eps_1"]
    if order == 2:
        return x_1 - _sigma(t_next) / (2 * r1) * math.expm1(h) * (eps_1 - eps)
    r2 = 2 / 3
    s2 = t + r2 * h
    u2 = x - _sigma(s2) * math.expm1(r2 * h) * eps - _sigma(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps_1 - eps)
    eps_2 = eps_fn(u2, s2)
    return x_1 - _sigma(t_next) / r2 * (math.expm1(h) / h - 1) * (eps_2 - eps)


def _ancestral_target(t: float, t_next: float, t_end: float, eta: float) -> tuple[float, float]:
    """(t to step to, sigma_up): the ancestral split of the step, never past t_end (k-diffusion's DPMSolver)."""
    if not eta:
        return t_next, 0.0
    sd, _ = ancestral_step(_sigma(t), _sigma(t_next), eta)
    t_ = min(t_end, -math.log(sd))
    return t_, (_sigma(t_next) ** 2 - _sigma(t_) ** 2) ** 0.5


def fast_orders(nfe: int) -> list[int]:
    """Lu et al. 2022, Sec. 3.4 (DPM-Solver-fast): orders of the steps that spend exactly `nfe` evaluations."""
    m = nfe // 3 + 1
    return [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]


def dpm_solver_fast(D: Denoiser, x: Tensor, sigma_max: float, sigma_min: float, nfe: int, *, eta: float = 0.0,
                    s_noise: float = 1.0, noise=None, generator=None, callback=None) -> Tensor:
    """DPM-Solver-fast from sigma_max to sigma_min with exactly `nfe` evaluations; returns x at sigma_min."""
    if not isinstance(nfe, int) or nfe < 1:
        raise UserError(f"DPM-Solver-fast needs a positive number of evaluations, got {nfe!r}")
    check_eta(eta, s_noise)
    noise = resolve_noise(noise, x, [sigma_max, sigma_min], generator)
    orders = fast_orders(nfe)
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    ts = torch.linspace(t_start, t_end, nfe // 3 + 2, dtype=torch.float64).tolist()
    eps_fn = _Eps(D)
    for i, order in enumerate(orders):
        t_next_, su = _ancestral_target(ts[i], ts[i + 1], t_end, eta)
        eps = eps_fn(x, ts[i])
        report(callback, i, x, _sigma(ts[i]), x - _sigma(ts[i]) * eps)
        x = dpm_step(eps_fn, x, ts[i], t_next_, eps, order)
        if su > 0:
            x = x + su * s_noise * noise(_sigma(ts[i]), _sigma(ts[i + 1]))
    return x


class PID:
    """Söderlind 2003's PID step-size controller (k-diffusion's PIDStepSizeController): h *= limiter(prod e_k^b_k)."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float, accept_safety: float,
                 eps: float = 1e-8):
        self.h, self.accept_safety, self.eps = h, accept_safety, eps
        self.b = ((pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order)
        self.errs: list[float] = []

    def propose(self, error: float) -> bool:
        """Rescale h from the new error; True when the step that produced it is accepted."""
        inv_error = 1 / (error + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b[0] * self.errs[1] ** self.b[1] * self.errs[2] ** self.b[2]
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


def check_tolerances(rtol: float, atol: float) -> None:
    if not (rtol > 0 and atol > 0):
        raise UserError(f"tolerances must be > 0, got rtol={rtol}, atol={atol}")


def dpm_solver_adaptive(D: Denoiser, x: Tensor, sigma_max: float, sigma_min: float, *, order: int = 3,
                        rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05, pcoeff: float = 0.0,
                        icoeff: float = 1.0, dcoeff: float = 0.0, accept_safety: float = 0.81, eta: float = 0.0,
                        s_noise: float = 1.0, noise=None, generator=None, callback=None) -> tuple[Tensor, dict]:
    """Lu et al. 2022, Algorithm 5 (DPM-Solver-12 / 23) from sigma_max to sigma_min; returns (x, info) with info
    {"nfe", "steps", "n_accept", "n_reject"}."""
    if order not in (2, 3):
        raise UserError(f"adaptive DPM-Solver order must be 2 or 3, got {order!r}")
    check_tolerances(rtol, atol)
    check_eta(eta, s_noise)
    noise = resolve_noise(noise, x, [sigma_max, sigma_min], generator)
    t, t_end = -math.log(sigma_max), -math.log(sigma_min)
    x_prev, eps_fn = x, _Eps(D)
    pid = PID(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}
    while t < t_end - 1e-5:
        t_next = min(t_end, t + pid.h)
        t_, su = _ancestral_target(t, t_next, t_end, eta)
        eps = eps_fn(x, t)
        D_x = x - _sigma(t) * eps
        cache: dict = {}
        x_low = dpm_step(eps_fn, x, t, t_, eps, order - 1, r1=1 / 3 if order == 3 else None, cache=cache)
        x_high = dpm_step(eps_fn, x, t, t_, eps, order, cache=cache)
        delta = torch.maximum(torch.maximum(x_low.abs(), x_prev.abs()) * rtol, x.new_tensor(atol))
        error = float(torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5)
        if pid.propose(error):
            x_prev, x = x_low, x_high + (su * s_noise * noise(_sigma(t), _sigma(t_next)) if su > 0 else 0)
            t = t_next
            info["n_accept"] += 1
        else:
            info["n_reject"] += 1
        info["steps"] += 1
        info["nfe"] = eps_fn.nfe
        report(callback, info["steps"] - 1, x, _sigma(t), D_x, error=error, h=pid.h, **info)
    return x, info


def _positive_range(sigmas: Tensor) -> tuple[list[float], float, float]:
    s = check_grid(sigmas)
    positive = [v for v in s if v > 0]
    return s, positive[0], positive[-1]


def sample_dpm_fast(D: Denoiser, x: Tensor, sigmas: Tensor, *, eta: float = 0.0, s_noise: float = 1.0, noise=None,
                    generator=None, callback=None) -> Tensor:
    """DPM-Solver-fast (Lu et al. 2022, Sec. 3.4) with n - 1 evaluations from sigmas[0] to the grid's last positive
    sigma, then x = D(x; sigma_min) if the grid ends at 0: n = len(sigmas) - 1 evaluations in all. Only the grid's
    ends are used (DPM-Solver-fast lays its own steps uniformly in t = -ln sigma)."""
    s, sigma_max, sigma_min = _positive_range(sigmas)
    callback = _numbered(callback)
    if len(s) > 2 and sigma_min < sigma_max:
        x = dpm_solver_fast(D, x, sigma_max, sigma_min, len(s) - 2 if s[-1] == 0 else len(s) - 1, eta=eta,
                            s_noise=s_noise, noise=noise, generator=generator, callback=callback)
    return _denoise_last(D, x, s, sigma_min, callback)


def _numbered(callback):
    """The callback with "i" renumbered 0, 1, 2, ... over the integrator's steps and the final denoising."""
    if callback is None:
        return None
    count = [0]

    def numbered(info: dict) -> None:
        callback({**info, "i": count[0]})
        count[0] += 1

    return numbered


def _denoise_last(D: Denoiser, x: Tensor, s: list[float], sigma_min: float, callback) -> Tensor:
    if s[-1] == 0:
        D_x = denoise(D, x, sigma_min)
        report(callback, -1, D_x, sigma_min, D_x)
        return D_x
    return x


def sample_dpm_adaptive(D: Denoiser, x: Tensor, sigmas: Tensor, *, order: int = 3, rtol: float = 0.05,
                        atol: float = 0.0078, info: dict | None = None, generator=None, callback=None,
                        **options) -> Tensor:
    """Adaptive DPM-Solver (Lu et al. 2022, Alg. 5) from sigmas[0] to the grid's last positive sigma, then
    x = D(x; sigma_min) if the grid ends at 0. The step count is the solver's choice; pass a dict as `info` to get
    {"nfe" (denoiser calls, the final one included), "steps", "n_accept", "n_reject"}. Options as dpm_solver_adaptive."""
    s, sigma_max, sigma_min = _positive_range(sigmas)
    callback = _numbered(callback)
    x, used = dpm_solver_adaptive(D, x, sigma_max, sigma_min, order=order, rtol=rtol, atol=atol,
                                  generator=generator, callback=callback, **options)
    x = _denoise_last(D, x, s, sigma_min, callback)
    if info is not None:
        info.update(used, nfe=used["nfe"] + (s[-1] == 0))
    return x
