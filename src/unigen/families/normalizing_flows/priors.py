"""Base distributions of the flows, with temperature-scaled sampling (Kingma & Dhariwal 2018, Sec. 6 and Fig. 8:
samples drawn from N(mu, (T sigma)^2); T < 1 trades diversity for quality).

    StandardPrior("gaussian" | "logistic")   N(0, I) (RealNVP) or the standard logistic (NICE, Sec. 3.4)
    LearnedPrior(shape)                      Glow's `learntop`: N(mu, sigma^2) with mu, log sigma learned, start 0
    SplitPrior(c_cond, c_out)                Glow's `split2d_prior`: p(z_i | h_i) = N(mu(h_i), sigma(h_i)^2) from a
                                             zero-initialised conv of the half that carries on (h_i)

`log_prob(z, cond)` returns (B,) summed over everything but the batch; `sample(n, shape, T, generator, cond)`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unigen.errors import UserError
from unigen.families.normalizing_flows.coupling import ZeroConv2d

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: Tensor, mu: Tensor | float = 0.0, log_sigma: Tensor | float = 0.0) -> Tensor:
    """sum over non-batch dims of log N(z; mu, exp(log_sigma)^2) -> (B,)."""
    log_sigma = torch.as_tensor(log_sigma, dtype=z.dtype, device=z.device)
    lp = -0.5 * (LOG_2PI + 2 * log_sigma + ((z - mu) * (-log_sigma).exp()) ** 2)
    return lp.flatten(1).sum(1)


def logistic_log_prob(z: Tensor) -> Tensor:
    """NICE eq. (3) / Sec. 3.4: log p(z) = -(softplus(z) + softplus(-z)) per dimension, summed -> (B,)."""
    return -(F.softplus(z) + F.softplus(-z)).flatten(1).sum(1)


def _noise(kind: str, shape: tuple, generator: torch.Generator | None, device) -> Tensor:
    if kind == "logistic":
        u = torch.rand(shape, generator=generator, device=device).clamp(1e-6, 1 - 1e-6)
        return torch.log(u) - torch.log1p(-u)
    return torch.randn(shape, generator=generator, device=device)


class StandardPrior(nn.Module):
    def __init__(self, kind: str = "gaussian"):
        super().__init__()
        if kind not in ("gaussian", "logistic"):
            raise UserError(f"prior {kind!r} is not gaussian or logistic")
        self.kind = kind

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        return logistic_log_prob(z) if self.kind == "logistic" else gaussian_log_prob(z)

    def sample(self, n: int, shape: tuple, temperature: float, generator=None, cond=None, device="cpu") -> Tensor:
        return temperature * _noise(self.kind, (n, *shape), generator, device)


class LearnedPrior(nn.Module):
    """N(mu, sigma^2) per entry of one example's shape; mu = log sigma = 0 at the start."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(shape))
        self.log_sigma = nn.Parameter(torch.zeros(shape))

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        return gaussian_log_prob(z, self.mu, self.log_sigma)

    def sample(self, n: int, shape: tuple, temperature: float, generator=None, cond=None, device="cpu") -> Tensor:
        eps = torch.randn((n, *shape), generator=generator, device=device)
        return self.mu + temperature * self.log_sigma.exp() * eps


class SplitPrior(nn.Module):
    """Glow's conditional prior of the factored-out half: (mu, log sigma) = ZeroConv2d(h) interleaved (0::2, 1::2)."""

    def __init__(self, c_cond: int, c_out: int):
        super().__init__()
        self.conv = ZeroConv2d(c_cond, 2 * c_out)

    def _moments(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        h = self.conv(cond)
        return h[:, 0::2], h[:, 1::2]

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        mu, log_sigma = self._moments(cond)
        return gaussian_log_prob(z, mu, log_sigma)

    def sample(self, n: int, shape: tuple, temperature: float, generator=None, cond=None, device="cpu") -> Tensor:
        mu, log_sigma = self._moments(cond)
        eps = torch.randn(mu.shape, generator=generator, device=device)
        return mu + temperature * log_sigma.exp() * eps
