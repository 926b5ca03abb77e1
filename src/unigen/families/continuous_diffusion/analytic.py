"""Data distributions whose diffusion is solvable in closed form: oracles for tests, baselines for benchmarks.

For data x0 ~ N(mu, Sigma) the noisy marginal is p(x; sigma) = N(mu, Sigma + sigma^2 I), the ideal denoiser is
Tweedie's posterior mean D(x; sigma) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu), and the probability-flow ODE
dx/dsigma = (x - D) / sigma moves x along x(sigma) = mu + (Sigma + sigma^2)^(1/2) (Sigma + sigma_0^2)^(-1/2) (x0 - mu)
(all matrices share Sigma's eigenvectors). A Gaussian mixture's ideal denoiser is the responsibility-weighted sum
of its components' denoisers.

Notation
    mu, cov (Sigma)     mean (d,) and covariance (d, d)
    lam, U              eigenvalues (d,) and eigenvectors (d, d) of Sigma
    sigma               noise level: a float or a (B,) tensor
    x                   (B, d) points in EDM's scale-free variables
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


def _sigma_col(sigma, x: Tensor) -> Tensor:
    return torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1)   # (B or 1, 1)


@dataclass(frozen=True)
class Gaussian:
    """x0 ~ N(mu, cov) in d dimensions, with exact denoiser, ODE flow and noisy log-density."""

    mu: Tensor                                    # (d,)
    cov: Tensor                                   # (d, d) symmetric positive definite
    lam: Tensor = field(init=False, repr=False)   # (d,)
    U: Tensor = field(init=False, repr=False)     # (d, d)

    def __post_init__(self):
        lam, U = torch.linalg.eigh(self.cov.double())
        object.__setattr__(self, "lam", lam)
        object.__setattr__(self, "U", U)

    @classmethod
    def isotropic(cls, mu, std: float, d: int = 1) -> "Gaussian":
        """N(mu 1, std^2 I_d)."""
        mu = torch.as_tensor(mu, dtype=torch.float64).expand(d).clone()
        return cls(mu, std ** 2 * torch.eye(d, dtype=torch.float64))

    def _spectral(self, x: Tensor, gain: Tensor) -> Tensor:
        """mu + U diag(gain) U^T (x - mu), gain (B or 1, d)."""
        U, mu = self.U.to(x), self.mu.to(x)
        return mu + ((x - mu) @ U * gain) @ U.T                       # (B, d)

    def denoiser(self, x: Tensor, sigma) -> Tensor:
        """Tweedie: E[x0 | x] = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)."""
        lam = self.lam.to(x)
        return self._spectral(x, lam / (lam + _sigma_col(sigma, x) ** 2))

    def ode(self, x: Tensor, sigma_from, sigma_to) -> Tensor:
        """Exact probability-flow ODE map from noise level sigma_from to sigma_to."""
        lam = self.lam.to(x)
        return self._spectral(x, ((lam + _sigma_col(sigma_to, x) ** 2) / (lam + _sigma_col(sigma_from, x) ** 2)).sqrt())

    def log_prob(self, x: Tensor, sigma) -> Tensor:
        """log N(x; mu, Sigma + sigma^2 I), (B,)."""
        var = self.lam.to(x) + _sigma_col(sigma, x) ** 2                # (B or 1, d)
        c = (x - self.mu.to(x)) @ self.U.to(x)                        # (B, d)
        return -0.5 * ((c ** 2 / var).sum(1) + var.log().sum(1) + x.shape[1] * math.log(2 * math.pi))

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> Tensor:
        z = torch.randn((n, self.mu.numel()), generator=generator, dtype=torch.float64)
        return (self.mu + (z * self.lam.sqrt()) @ self.U.T).to(dtype)   # (n, d)


@dataclass(frozen=True)
class GaussianMixture:
    """x0 ~ sum_k w_k N(mu_k, cov_k); component k is also class k for class-conditional denoising."""

    weights: Tensor                               # (K,) summing to 1
    components: tuple[Gaussian, ...]

    @property
    def num_classes(self) -> int:
        return len(self.components)

    def log_prob(self, x: Tensor, sigma) -> Tensor:
        """log p(x; sigma) = logsumexp_k (log w_k + log N(x; mu_k, Sigma_k + sigma^2 I)), (B,)."""
        return torch.logsumexp(self._joint(x, sigma), dim=1)

    def _joint(self, x: Tensor, sigma) -> Tensor:
        logw = self.weights.to(x).log()
        return torch.stack([lw + g.log_prob(x, sigma) for lw, g in zip(logw, self.components)], dim=1)  # (B, K)

    def denoiser(self, x: Tensor, sigma, y: Tensor | None = None) -> Tensor:
        """E[x0 | x] = sum_k p(k | x) D_k(x); with labels y (B,), E[x0 | x, k = y], and y = K (null) unconditional."""
        resp = torch.softmax(self._joint(x, sigma), dim=1)            # (B, K)
        if y is not None:
            onehot = torch.nn.functional.one_hot(y.clamp(max=self.num_classes - 1), self.num_classes).to(x)
            resp = torch.where((y < self.num_classes)[:, None], onehot, resp)
        D_k = torch.stack([g.denoiser(x, sigma) for g in self.components], dim=1)     # (B, K, d)
        return (resp[:, :, None] * D_k).sum(1)                        # (B, d)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> tuple[Tensor, Tensor]:
        """n points and their component labels."""
        k = torch.multinomial(self.weights.double(), n, replacement=True, generator=generator)   # (n,)
        xs = torch.stack([g.sample(n, generator) for g in self.components], dim=1)              # (n, K, d)
        return xs[torch.arange(n), k].to(dtype), k
