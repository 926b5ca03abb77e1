"""Noise schedules in EDM's variables: x_native = s(t) (x0 + sigma(t) eps) (Karras et al. 2022, Eq. 7, Table 1).

Every schedule is described by the same few maps, so samplers and losses never branch on the schedule:

Notation
    t           the schedule's own time: the discrete index n in {0..T-1} for DDPM, t in [0, 1] for continuous VP,
                VE and flow matching, t = sigma for EDM
    sigma(t)    noise level of the scale-free variable x = x_native / s(t)          (EDM Eq. 7)
    s(t)        scale between EDM's scale-free x and the network's native input
    t(sigma)    inverse of sigma(t)
    scale(sigma) = s(t(sigma)): for VP 1 / sqrt(1 + sigma^2), for sub-VP 1 / (sigma/2 + sqrt(1 + sigma^2/4)),
                for flow 1 / (1 + sigma), else 1
    alpha_bar   DDPM's cumulative product of (1 - beta); for VP alpha_bar = s^2 = 1 / (1 + sigma^2)
    c_noise     the time input the network receives, a function of sigma (documented per schedule below)
    T           number of discrete DDPM levels (1000)

c_noise per schedule (what `net(x_in, c_noise)` sees):
    DiscreteVP    the timestep index n (fractional between levels, log-sigma interpolation as in k-diffusion)
    ContinuousVP  (M - 1) t = 999 t                              (EDM Table 1, "VP" column)
    SubVP         999 t                                          (score_sde's sub-VP models, as VP)
    VE            ln(sigma / 2)                                  (EDM Table 1, "VE" column)
    EDM           ln(sigma) / 4                                  (EDM Table 1, "EDM" column)
    Flow          t = sigma / (1 + sigma) in [0, 1]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from unigen.errors import UserError


def _as_tensor(t) -> Tensor:
    """Tensors pass through unchanged; Python numbers become float64 scalars (not the float32 default)."""
    return t if isinstance(t, Tensor) else torch.tensor(t, dtype=torch.float64)


# ---- DDPM discrete VP -------------------------------------------------------------------------------------------

def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Ho et al. 2020, Sec. 4: beta_t linear from 1e-4 to 0.02 over T = 1000 steps. Returns (T,) float64."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def scaled_linear_betas(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """Rombach et al. 2022 (Stable Diffusion's "linear", diffusers' "scaled_linear"): sqrt(beta) linear. (T,) float64."""
    return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float64) ** 2


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021, Eq. 17: alpha_bar(t) = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2), beta <= 0.999."""
    f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2   # (T+1,)
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)                   # (T,) beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}


def alpha_bar_from_betas(betas: Tensor) -> Tensor:
    """Ho et al. 2020, Eq. 4: alpha_bar_t = prod_{s<=t} (1 - beta_s)."""
    return torch.cumprod(1 - betas, dim=0)


def vp_sigma_from_alpha_bar(alpha_bar: Tensor) -> Tensor:
    """EDM Sec. 2 (VP): x_vp = sqrt(alpha_bar) (x0 + sigma eps) gives sigma = sqrt((1 - alpha_bar) / alpha_bar)."""
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def vp_scale(sigma: Tensor) -> Tensor:
    """EDM Sec. 2 (VP): s = sqrt(alpha_bar) = 1 / sqrt(1 + sigma^2)."""
    return (1 + sigma ** 2).rsqrt()


# ---- continuous VP (Song et al. 2021), VE, flow ------------------------------------------------------------------

def vp_sigma(t: Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> Tensor:
    """EDM Table 1 (VP): sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), beta_d = beta_max - beta_min."""
    beta_d = beta_max - beta_min
    return torch.expm1(0.5 * beta_d * t ** 2 + beta_min * t).sqrt()


def vp_sigma_inv(sigma: Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> Tensor:
    """EDM Table 1 (VP), inverse: t = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d."""
    beta_d = beta_max - beta_min
    return ((beta_min ** 2 + 2 * beta_d * torch.log1p(sigma ** 2)).sqrt() - beta_min) / beta_d


def vp_integral(t: Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> Tensor:
    """Song et al. 2021, Eq. 11 / App. B: B(t) = int_0^t beta(u) du = beta_min t + beta_d t^2 / 2."""
    return beta_min * t + 0.5 * (beta_max - beta_min) * t ** 2


def subvp_sigma(t: Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> Tensor:
    """Song et al. 2021, Eq. 12 (sub-VP SDE): alpha = e^{-B/2}, sigma_n = 1 - e^{-B}, so in EDM variables
    sigma = sigma_n / alpha = e^{B/2} - e^{-B/2} = 2 sinh(B(t) / 2)."""
    return 2 * torch.sinh(0.5 * vp_integral(t, beta_min, beta_max))


def subvp_sigma_inv(sigma: Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> Tensor:
    """Sub-VP, inverse: B = 2 asinh(sigma / 2), t = (sqrt(beta_min^2 + 2 beta_d B) - beta_min) / beta_d."""
    beta_d = beta_max - beta_min
    return ((beta_min ** 2 + 4 * beta_d * torch.asinh(0.5 * sigma)).sqrt() - beta_min) / beta_d


def subvp_scale(sigma: Tensor) -> Tensor:
    """Sub-VP: s = alpha solves sigma = 1/alpha - alpha, alpha = 1 / (sigma/2 + sqrt(1 + sigma^2/4))."""
    return 1 / (0.5 * sigma + (1 + 0.25 * sigma ** 2).sqrt())


def ve_sigma(t: Tensor, sigma_min: float = 0.02, sigma_max: float = 100.0) -> Tensor:
    """Song et al. 2021, Sec. 3.4 (VE SDE): sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in [0, 1]."""
    return sigma_min * (sigma_max / sigma_min) ** t


def ve_sigma_inv(sigma: Tensor, sigma_min: float = 0.02, sigma_max: float = 100.0) -> Tensor:
    """Song et al. 2021, Sec. 3.4 (VE SDE), inverse: t = ln(sigma / sigma_min) / ln(sigma_max / sigma_min)."""
    return torch.log(sigma / sigma_min) / math.log(sigma_max / sigma_min)


def flow_sigma(t: Tensor) -> Tensor:
    """Rectified flow (Liu et al. 2023): x_t = (1 - t) x0 + t eps = (1 - t)(x0 + sigma eps) with sigma = t / (1 - t)."""
    return t / (1 - t)


def flow_t(sigma: Tensor) -> Tensor:
    """Rectified flow (Liu et al. 2023), inverse of sigma = t / (1 - t): t = sigma / (1 + sigma)."""
    return sigma / (1 + sigma)


# ---- schedule objects: the same five maps for every schedule -----------------------------------------------------

@dataclass(frozen=True, eq=False)
class DiscreteVP:
    """DDPM's discrete VP schedule (Ho et al. 2020): T levels sigma_n = sqrt((1 - alpha_bar_n) / alpha_bar_n)."""

    alpha_bar: Tensor                                   # (T,) float64, decreasing
    log_sigmas: Tensor = field(init=False, repr=False)  # (T,) increasing in n

    def __post_init__(self):
        object.__setattr__(self, "log_sigmas", vp_sigma_from_alpha_bar(self.alpha_bar.double()).log())

    @property
    def T(self) -> int:
        return self.alpha_bar.numel()

    @property
    def sigmas(self) -> Tensor:
        """All T levels, increasing in n (float64)."""
        return self.log_sigmas.exp()

    @property
    def sigma_min(self) -> float:
        return self.log_sigmas[0].exp().item()

    @property
    def sigma_max(self) -> float:
        return self.log_sigmas[-1].exp().item()

    def sigma(self, t: Tensor) -> Tensor:
        """sigma_n at (possibly fractional) index n, interpolating ln sigma linearly between levels."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.T - 1)
        ls = self.log_sigmas.to(t.device)
        lo = t.floor().long().clamp(max=self.T - 2)
        w = t - lo
        return ((1 - w) * ls[lo] + w * ls[lo + 1]).exp()

    def t(self, sigma: Tensor) -> Tensor:
        """Fractional index n of sigma (inverse of `sigma`); clamped to [0, T - 1] outside the trained range."""
        log_sigma = torch.as_tensor(sigma, dtype=torch.float64).log()
        ls = self.log_sigmas.to(log_sigma.device)
        lo = (torch.searchsorted(ls, log_sigma.contiguous()) - 1).clamp(0, self.T - 2)
        w = ((log_sigma - ls[lo]) / (ls[lo + 1] - ls[lo])).clamp(0, 1)
        return lo + w

    def s(self, t: Tensor) -> Tensor:
        return vp_scale(self.sigma(t))

    def scale(self, sigma: Tensor) -> Tensor:
        return vp_scale(sigma)

    def c_noise(self, sigma: Tensor) -> Tensor:
        """The DDPM timestep index n (what DDPM's U-Net embeds), fractional off the grid."""
        return self.t(sigma).to(sigma.dtype)


@dataclass(frozen=True)
class ContinuousVP:
    """Song et al. 2021, Eq. 11 (VP SDE, beta(t) = beta_min + t (beta_max - beta_min)) in EDM's variables."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    eps_t: float = 1e-3                                 # smallest t used for sampling (Song et al. 2021, App. C)

    @property
    def sigma_min(self) -> float:
        return vp_sigma(torch.tensor(self.eps_t, dtype=torch.float64), self.beta_min, self.beta_max).item()

    @property
    def sigma_max(self) -> float:
        return vp_sigma(torch.tensor(1.0, dtype=torch.float64), self.beta_min, self.beta_max).item()

    def sigma(self, t: Tensor) -> Tensor:
        return vp_sigma(_as_tensor(t), self.beta_min, self.beta_max)

    def t(self, sigma: Tensor) -> Tensor:
        return vp_sigma_inv(_as_tensor(sigma), self.beta_min, self.beta_max)

    def s(self, t: Tensor) -> Tensor:
        return vp_scale(self.sigma(t))

    def scale(self, sigma: Tensor) -> Tensor:
        return vp_scale(sigma)

    def c_noise(self, sigma: Tensor) -> Tensor:
        """EDM Table 1 (VP): c_noise = (M - 1) t with M = 1000."""
        return 999 * self.t(sigma)


@dataclass(frozen=True)
class SubVP:
    """Song et al. 2021, Eq. 12 (sub-VP SDE): dx = -beta/2 x dt + sqrt(beta (1 - e^{-2 B(t)})) dw, with the VP
    schedule's beta(t). Marginal x_native = alpha x0 + (1 - alpha^2) eps with alpha = e^{-B/2}: the same mean as VP and
    a smaller variance. In EDM variables sigma = 2 sinh(B/2) and s = alpha; the network sees c_noise = 999 t as
    score_sde's sub-VP models do."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    eps_t: float = 1e-3

    @property
    def sigma_min(self) -> float:
        return subvp_sigma(torch.tensor(self.eps_t, dtype=torch.float64), self.beta_min, self.beta_max).item()

    @property
    def sigma_max(self) -> float:
        return subvp_sigma(torch.tensor(1.0, dtype=torch.float64), self.beta_min, self.beta_max).item()

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + _as_tensor(t) * (self.beta_max - self.beta_min)

    def diffusion_sq(self, t: Tensor) -> Tensor:
        """g(t)^2 = beta(t) (1 - e^{-2 B(t)}) (Song et al. 2021, Eq. 12)."""
        t = _as_tensor(t)
        return self.beta(t) * -torch.expm1(-2 * vp_integral(t, self.beta_min, self.beta_max))

    def sigma(self, t: Tensor) -> Tensor:
        return subvp_sigma(_as_tensor(t), self.beta_min, self.beta_max)

    def t(self, sigma: Tensor) -> Tensor:
        return subvp_sigma_inv(_as_tensor(sigma), self.beta_min, self.beta_max)

    def s(self, t: Tensor) -> Tensor:
        return subvp_scale(self.sigma(t))

    def scale(self, sigma: Tensor) -> Tensor:
        return subvp_scale(sigma)

    def c_noise(self, sigma: Tensor) -> Tensor:
        """999 t, as for VP (score_sde's sub-VP models take the same time labels)."""
        return 999 * self.t(sigma)


@dataclass(frozen=True)
class VE:
    """Song et al. 2021, Eq. 9 / Sec. 3.4 (VE SDE): s = 1, sigma geometric in t between sigma_min and sigma_max."""

    sigma_min: float = 0.02
    sigma_max: float = 100.0

    def sigma(self, t: Tensor) -> Tensor:
        return ve_sigma(_as_tensor(t), self.sigma_min, self.sigma_max)

    def t(self, sigma: Tensor) -> Tensor:
        return ve_sigma_inv(_as_tensor(sigma), self.sigma_min, self.sigma_max)

    def s(self, t: Tensor) -> Tensor:
        return torch.ones_like(_as_tensor(t))

    def scale(self, sigma: Tensor) -> Tensor:
        return torch.ones_like(sigma)

    def c_noise(self, sigma: Tensor) -> Tensor:
        """EDM Table 1 (VE): c_noise = ln(sigma / 2)."""
        return torch.log(0.5 * sigma)


@dataclass(frozen=True)
class EDM:
    """Karras et al. 2022, Table 1 (EDM column): sigma(t) = t, s(t) = 1, sigma in [0.002, 80]."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def sigma(self, t: Tensor) -> Tensor:
        return _as_tensor(t)

    def t(self, sigma: Tensor) -> Tensor:
        return _as_tensor(sigma)

    def s(self, t: Tensor) -> Tensor:
        return torch.ones_like(_as_tensor(t))

    def scale(self, sigma: Tensor) -> Tensor:
        return torch.ones_like(sigma)

    def c_noise(self, sigma: Tensor) -> Tensor:
        """EDM Table 1: c_noise = ln(sigma) / 4."""
        return 0.25 * torch.log(sigma)


@dataclass(frozen=True)
class Flow:
    """Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023): x_t = (1 - t) x0 + t eps.

    s(t) = 1 - t and sigma(t) = t / (1 - t). t = 1 would be sigma = inf, so sampling starts at t_max < 1
    (sigma_max = t_max / (1 - t_max) = 999 by default) and the caller draws x = sigma_max eps, i.e. x_t = t_max eps.
    """

    t_min: float = 1e-3
    t_max: float = 0.999

    @property
    def sigma_min(self) -> float:
        return self.t_min / (1 - self.t_min)

    @property
    def sigma_max(self) -> float:
        return self.t_max / (1 - self.t_max)

    def sigma(self, t: Tensor) -> Tensor:
        return flow_sigma(_as_tensor(t))

    def t(self, sigma: Tensor) -> Tensor:
        return flow_t(_as_tensor(sigma))

    def s(self, t: Tensor) -> Tensor:
        return 1 - _as_tensor(t)

    def scale(self, sigma: Tensor) -> Tensor:
        return 1 / (1 + sigma)

    def c_noise(self, sigma: Tensor) -> Tensor:
        """Flow time t = sigma / (1 + sigma) in [0, 1]."""
        return flow_t(sigma)


Schedule = DiscreteVP | ContinuousVP | SubVP | VE | EDM | Flow


def ddpm_linear(T: int = 1000) -> DiscreteVP:
    """Ho et al. 2020, Sec. 4: linear betas 1e-4..0.02 over T = 1000."""
    return DiscreteVP(alpha_bar_from_betas(linear_betas(T)))


def ddpm_scaled_linear(T: int = 1000) -> DiscreteVP:
    """Rombach et al. 2022 (latent diffusion / Stable Diffusion): scaled-linear betas 0.00085..0.012 over T = 1000."""
    return DiscreteVP(alpha_bar_from_betas(scaled_linear_betas(T)))


def ddpm_cosine(T: int = 1000) -> DiscreteVP:
    """Nichol & Dhariwal 2021, Eq. 17: the cosine schedule."""
    return DiscreteVP(alpha_bar_from_betas(cosine_betas(T)))


def get_schedule(name: str) -> Schedule:
    """The schedule registered under `name`, with its paper's defaults; UserError lists the names."""
    if name not in SCHEDULES:
        raise UserError(f"unknown noise schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    return SCHEDULES[name]()


SCHEDULES = {
    "ddpm-linear": ddpm_linear,
    "ddpm-cosine": ddpm_cosine,
    "ddpm-scaled-linear": ddpm_scaled_linear,
    "vp": ContinuousVP,
    "subvp": SubVP,
    "ve": VE,
    "edm": EDM,
    "flow": Flow,
}
