"""Training objectives of the autoencoders, per example (B,) and summed over each example's dimensions.

    reconstruction          |x - x_hat|_1 or |x - x_hat|_2^2 summed per image (LDM's `rec_loss`, Rombach et al. 2022,
                            `contperceptual.py`: summed over pixels, then averaged over the batch)
    kl_autoencoder_loss     rec + kl_weight KL(q(z|x) || N(0, I)) (LDM's KL-reg autoencoder, Sec. 3, weight ~1e-6)
    vae_negative_elbo       -log p(x|z) + KL with one reparameterised z (Kingma & Welling 2014, Eq. 10)
"""
from __future__ import annotations

from torch import Tensor

from unigen.families.autoencoders.gaussian import (bernoulli_log_prob, discretized_logistic_log_prob,
                                                   kl_standard_normal)


def reconstruction(x: Tensor, x_hat: Tensor, kind: str = "l1") -> Tensor:
    """Per-image reconstruction error (B,), summed over pixels: l1 |x - x_hat| or l2 (x - x_hat)^2."""
    d = x_hat - x
    return (d.abs() if kind == "l1" else d.pow(2)).flatten(1).sum(1)


def kl_autoencoder_loss(x: Tensor, x_hat: Tensor, mu: Tensor, logvar: Tensor, kl_weight: float,
                        kind: str = "l1") -> tuple[Tensor, Tensor, Tensor]:
    """(loss, rec, kl), each (B,): loss = rec + kl_weight KL, both summed per image as in LDM."""
    rec = reconstruction(x, x_hat, kind)
    kl = kl_standard_normal(mu, logvar)
    return rec + kl_weight * kl, rec, kl


def log_likelihood(x: Tensor, params: Tensor, likelihood: str, levels: int = 256) -> Tensor:
    """log p(x|z) per example (B,). logistic: x in [-1, 1] on `levels` values, params (B, 2, ...) = mean,
    log-scale; bernoulli: x in {0, 1}, params (B, 1, ...) = logits."""
    if likelihood == "logistic":
        return discretized_logistic_log_prob(x, params[:, 0], params[:, 1], levels)
    return bernoulli_log_prob(x, params[:, 0])
