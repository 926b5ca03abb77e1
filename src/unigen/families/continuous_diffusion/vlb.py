"""DDPM's variational bound on the discrete NLL of 8-bit images (Ho et al. 2020, Eq. 5, Sec. 3.3).

    -log p(x0) <= L = L_T + sum_{t=2}^{T} L_{t-1} + L_0
    L_T     = KL(q(x_T | x0) || N(0, I))                                 (prior term)
    L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p_theta(x_{t-1} | x_t))          (Eq. 5; Gaussians, Eqs. 6-7)
    L_0     = -log p_theta(x0 | x1), the discretised Gaussian decoder      (Eq. 13)
L_0 is a probability of the 8-bit levels of x0 (the bins of width 2/255 around each level of [-1, 1], the end
bins extended to +-inf), so L is an upper bound on the *discrete* NLL: bits/dim = L / (d ln 2), with no
dequantisation offset (unlike the continuous densities of likelihood.py).

The reverse process: p_theta(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I) with mu_theta = mu_tilde(x0_hat, x_t), the
posterior mean of Eq. 7 at the network's estimate x0_hat (for an eps-network x0_hat = (x_t - sqrt(1 - abar_t) eps) /
sqrt(abar_t), which makes this Eq. 11 exactly), and a fixed variance (Sec. 3.2): "large" sigma_t^2 = beta_t or
"small" sigma_t^2 = beta_tilde_t. As in the authors' code (diffusion_utils_2.py), the log-variance at t = 1 (the
decoder) is log beta_tilde_2 for both, since beta_tilde_1 = 0.

Notation (indices are 0-based: level n of a length-T `alpha_bar` is Ho's t = n + 1)
    alpha_bar   (T,) cumulative products, alpha_bar[n] = abar_{n+1}
    x_t         native noisy sample sqrt(abar) x0 + sqrt(1 - abar) eps
    x0_fn       (x_t (B, ...), n (B,) long) -> x0_hat (B, ...): the model's estimate of x0
The sum over t is estimated without bias by importance sampling, L_{t-1} / q(t) at t ~ q with q(t) proportional to
1 / (t - 1) on 2..T (`n_t` draws per image): the terms of a trained model fall roughly as 1/t, so the ratio is
nearly constant and the estimate's variance small (uniform t, as in Ho et al.'s training, gave a standard error of
0.4 bits/dim at 2 draws on 500 MNIST images; Nichol & Dhariwal 2021, Sec. 3.3, importance-sample t for the same
reason). Or the sum is exact with `full=True` (T network calls per image).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from unigen.errors import UserError

X0Fn = Callable[[Tensor, Tensor], Tensor]


def _b(v: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) against x."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats (Ho et al. 2020, Sec. 3: Gaussian KLs
    in closed form)."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1)


def _log_diff_ndtr(a: Tensor, b: Tensor) -> Tensor:
    """log(Phi(b) - Phi(a)) for a < b, accurate in both tails (the side of the mean away from the bin is used)."""
    upper = a + b > 0                                                  # bin above the mean: use Phi(-a) - Phi(-b)
    hi = torch.where(upper, -a, b)
    lo = torch.where(upper, -b, a)
    l_hi, l_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return l_hi + torch.log(-torch.expm1((l_lo - l_hi).clamp(max=-1e-300)))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, logvar: Tensor, bins: int = 256) -> Tensor:
    """Ho et al. 2020, Eq. 13: log of the N(mean, e^logvar) mass of x's bin, per element (nats).

    `x` holds levels 2k/(bins-1) - 1 of [-1, 1]; the bin of x is [x - 1/(bins-1), x + 1/(bins-1)], with the lowest
    bin's left edge at -inf and the highest bin's right edge at +inf, so the masses of the `bins` levels sum to 1.
    Computed in float64."""
    x, mean, logvar = x.double(), mean.double(), logvar.double()
    std = torch.exp(0.5 * logvar)
    half = 1.0 / (bins - 1)
    lo = torch.where(x < -1 + half / 2, torch.full_like(x, -math.inf), (x - half - mean) / std)
    hi = torch.where(x > 1 - half / 2, torch.full_like(x, math.inf), (x + half - mean) / std)
    return _log_diff_ndtr(lo, hi)


def betas_of(alpha_bar: Tensor) -> Tensor:
    """beta_t = 1 - abar_t / abar_{t-1} (abar_0 = 1): the inverse of Ho et al. 2020, Eq. 4. (T,)."""
    prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    return 1 - alpha_bar / prev


def q_posterior(x0: Tensor, x_t: Tensor, n: Tensor, alpha_bar: Tensor) -> tuple[Tensor, Tensor]:
    """Ho et al. 2020, Eqs. 6-7: mean and variance of q(x_{t-1} | x_t, x0) at levels n >= 1 (B,) (Ho's t = n + 1).
        mu_tilde = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t
        beta_tilde = (1 - abar_{t-1}) / (1 - abar_t) beta_t
    Returns (mean (B, ...), variance (B,))."""
    ab = alpha_bar.double().to(x0.device)
    ab_t, ab_prev = ab[n], ab[n - 1]
    beta = 1 - ab_t / ab_prev
    mean = _b(ab_prev.sqrt() * beta / (1 - ab_t), x0) * x0 + _b((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t), x0) * x_t
    return mean, (1 - ab_prev) / (1 - ab_t) * beta


def reverse_logvar(alpha_bar: Tensor, variance: str = "large") -> Tensor:
    """log sigma_t^2 of p_theta(x_{t-1} | x_t) for every level (T,) (Ho et al. 2020, Sec. 3.2): "large" beta_t or
    "small" beta_tilde_t, both with log beta_tilde_2 at t = 1 (diffusion_utils_2.py)."""
    ab = alpha_bar.double()
    betas = betas_of(ab)
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    tilde = (1 - ab_prev) / (1 - ab) * betas
    if variance == "large":
        v = torch.cat([tilde[1:2], betas[1:]])
    elif variance == "small":
        v = torch.cat([tilde[1:2], tilde[1:]])
    else:
        raise UserError(f"unknown reverse variance {variance!r}; choose large (beta_t) or small (beta_tilde_t)")
    return v.log()


def prior_kl(x0: Tensor, alpha_bar: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x0) || N(0, I)) summed over dimensions, nats (B,) (Ho et al. 2020, Eq. 5)."""
    ab_T = alpha_bar[-1].double()
    mean = ab_T.sqrt() * x0.double()
    kl = normal_kl(mean, torch.log(1 - ab_T).expand_as(mean), torch.zeros_like(mean), torch.zeros_like(mean))
    return kl.flatten(1).sum(1)


def vlb_terms(x0_fn: X0Fn, x0: Tensor, n: Tensor, alpha_bar: Tensor, *, variance: str = "large",
              clip: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """Ho et al. 2020, Eq. 5: the term L_{t-1} at t = n + 1 for each image, summed over dimensions (B,) nats:
    the decoder NLL L_0 (Eq. 13) where n == 0, else KL(q(x_{t-1} | x_t, x0) || p_theta(x_{t-1} | x_t)), with
    x_t ~ q(x_t | x0) drawn from `generator`. `clip` clamps x0_hat to [-1, 1] (a different, still valid model)."""
    ab = alpha_bar.double().to(x0.device)
    x0 = x0.double()
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x_t = _b(ab[n].sqrt(), x0) * x0 + _b((1 - ab[n]).sqrt(), x0) * eps
    x0_hat = x0_fn(x_t.float(), n).double()
    if clip:
        x0_hat = x0_hat.clamp(-1, 1)
    logvar = _b(reverse_logvar(ab, variance).to(x0.device)[n], x0).expand_as(x0)
    m = n.clamp(min=1)                                                 # level 0 has no posterior; masked below
    mu_theta, _ = q_posterior(x0_hat, x_t, m, ab)
    mu_q, var_q = q_posterior(x0, x_t, m, ab)
    kl = normal_kl(mu_q, _b(var_q.log(), x0).expand_as(x0), mu_theta, logvar).flatten(1).sum(1)
    # the decoder's mean mu_theta(x_1, 1) is mu_tilde with abar_0 = 1, which is x0_hat itself (Eq. 7)
    decoder = -discretized_gaussian_log_likelihood(x0, x0_hat, logvar).flatten(1).sum(1)
    return torch.where(n == 0, decoder, kl)


def ddpm_vlb(x0_fn: X0Fn, x0: Tensor, alpha_bar: Tensor, *, n_t: int = 1, full: bool = False,
             variance: str = "large", clip: bool = False, generator: torch.Generator | None = None) -> dict:
    """Ho et al. 2020, Eq. 5: the bound L per image (B,) nats, with L_T and L_0 exact and the sum over t = 2..T
    either exact (`full`: T - 1 network calls) or the mean of `n_t` importance-weighted terms L_{t-1} / q(t).

    Returns {"nll": (B,), "prior": (B,), "decoder": (B,), "diffusion": (B,), "mc_se": (B,) standard error of the
    estimate of the sum (0 when full), "bits_per_dim": (B,) = nll / (d ln 2)}; x0 must hold 8-bit levels in [-1, 1].
    """
    if alpha_bar.ndim != 1 or len(alpha_bar) < 2:
        raise UserError(f"alpha_bar must be a 1-D schedule of at least 2 levels, got shape {tuple(alpha_bar.shape)}")
    if not full and n_t < 1:
        raise UserError(f"n_t must be >= 1 Monte-Carlo timesteps per image, got {n_t}")
    T, B = len(alpha_bar), x0.shape[0]
    zeros = torch.zeros(B, dtype=torch.long, device=x0.device)
    decoder = vlb_terms(x0_fn, x0, zeros, alpha_bar, variance=variance, clip=clip, generator=generator)
    q = 1.0 / torch.arange(1, T, dtype=torch.float64, device=x0.device)   # proposal over levels 1..T-1, ~ 1/t
    q = q / q.sum()
    if full:
        levels = [zeros + k for k in range(1, T)]
    else:
        idx = torch.multinomial(q, n_t * B, replacement=True, generator=generator).view(n_t, B)   # (K, B)
        levels = list(idx + 1)
    terms = torch.stack([vlb_terms(x0_fn, x0, n, alpha_bar, variance=variance, clip=clip, generator=generator)
                         for n in levels])                               # (K, B)
    if full:
        diffusion, se = terms.sum(0), torch.zeros(B, dtype=terms.dtype, device=x0.device)
    else:
        est = terms / q[torch.stack(levels) - 1]                        # (K, B) unbiased for the sum, each
        diffusion = est.mean(0)
        se = est.std(0) / math.sqrt(n_t) if n_t > 1 else torch.full_like(diffusion, math.nan)
    prior = prior_kl(x0, alpha_bar)
    nll = prior + diffusion + decoder
    return {"nll": nll, "prior": prior, "decoder": decoder, "diffusion": diffusion, "mc_se": se,
            "bits_per_dim": nll / (x0[0].numel() * math.log(2))}
