"""The variational autoencoder's math (Kingma & Welling 2014, "Auto-Encoding Variational Bayes"): the diagonal
Gaussian posterior, the closed-form KL to N(0, I) (App. B), the reparameterisation (Sec. 2.4), the decoder
likelihoods, the ELBO (Eq. 3) and the importance-weighted bound (Burda et al. 2016, Eq. 8).

Every per-example quantity is summed over all of the example's dimensions, so the reconstruction term and the KL
term are on the same scale (a mean-reduced reconstruction beside a summed KL is the classic posterior-collapse
bug); batch reductions happen in the caller.

    mu, logvar            the posterior q(z|x) = N(mu, diag(exp(logvar))), logvar clamped to [-30, 20]
    x                     images in [-1, 1] on a grid of `levels` values (8-bit: 256)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0        # as LDM's / diffusers' DiagonalGaussianDistribution


def split_moments(moments: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 2C, ...) -> mu (B, C, ...), logvar (B, C, ...) clamped to [LOGVAR_MIN, LOGVAR_MAX]."""
    mu, logvar = moments.chunk(2, dim=1)
    return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


def _sum(t: Tensor) -> Tensor:
    return t.flatten(1).sum(1)                                          # (B,)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, e^logvar) || N(0, I)) per example (B,): -1/2 sum(1 + logvar - mu^2 - e^logvar) (K&W App. B)."""
    return _sum(0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar))


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) from torch's global RNG (K&W Sec. 2.4)."""
    eps = torch.randn_like(mu) if eps is None else eps
    return mu + (0.5 * logvar).exp() * eps


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(e^logvar)) per example (B,)."""
    return _sum(-0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()))


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I) per example (B,)."""
    return _sum(-0.5 * (math.log(2 * math.pi) + z.pow(2)))


def discretized_logistic_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor, levels: int = 256) -> Tensor:
    """log P(x) per example (B,) of images x in [-1, 1] on a grid of `levels` values, each pixel the mass of its
    bin [x - 1/(levels-1), x + 1/(levels-1)] under a logistic(mean, e^log_scale), the outer bins extended to
    -inf / +inf (Salimans et al. 2017, PixelCNN++, Sec. 2.1, one logistic per pixel); sums to 1 over the grid."""
    half = 1.0 / (levels - 1)
    inv_s = torch.exp(-log_scale)
    plus, minus = inv_s * (x - mean + half), inv_s * (x - mean - half)
    # F(plus) - F(minus) = S(-minus) - S(-plus) (S the sigmoid): on each side of the mean take the form whose two
    # terms are not both near 1, and compute log(S(a) - S(b)) = log S(a) + log(-expm1(log S(b) - log S(a)))
    right = x > mean
    la = F.logsigmoid(torch.where(right, -minus, plus))
    lb = F.logsigmoid(torch.where(right, -plus, minus))
    log_inner = la + torch.log(-torch.expm1((lb - la).clamp(max=-1e-30)))
    lp = torch.where(x < -1 + half / 2, F.logsigmoid(plus), torch.where(x > 1 - half / 2, F.logsigmoid(-minus), log_inner))
    return _sum(lp)


def bernoulli_log_prob(b: Tensor, logits: Tensor) -> Tensor:
    """log P(b) per example (B,) of binary pixels b in {0, 1} under Bernoulli(sigmoid(logits))."""
    return -_sum(F.binary_cross_entropy_with_logits(logits, b, reduction="none"))


def elbo(log_px_z: Tensor, kl: Tensor) -> Tensor:
    """The evidence lower bound per example, E_q[log p(x|z)] - KL(q(z|x) || p(z)) (K&W Eq. 3, one z sample)."""
    return log_px_z - kl


def iwae_bound(log_w: Tensor) -> Tensor:
    """log (1/K) sum_k w_k per example (B,) from log importance weights (K, B), log w_k = log p(x, z_k) - log q(z_k|x)
    with z_k ~ q(z|x) (Burda et al. 2016, Eq. 8); >= the ELBO in expectation, rising with K to log p(x)."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def bits_per_dim(nll_nats: Tensor, dims: int) -> Tensor:
    """-log P(x) in nats per example -> bits per dimension."""
    return nll_nats / (dims * math.log(2))
