"""The VAE's math against independent answers: torch.distributions' KL, brute-force sums over the pixel grid, the
exact marginal likelihood of a linear-Gaussian model, and probabilistic PCA's closed-form maximum likelihood."""
import math

import pytest
import torch

from unigen.families.autoencoders.gaussian import (bernoulli_log_prob, discretized_logistic_log_prob, iwae_bound, kl_standard_normal,
                                                   log_normal, log_standard_normal, reparameterize, split_moments)
from unigen.families.autoencoders.losses import kl_autoencoder_loss, reconstruction


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 3, 4, 4, generator=g), torch.randn(5, 3, 4, 4, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(kl_standard_normal(mu, logvar), expected)
    torch.testing.assert_close(log_normal(mu + 1, mu, logvar), q.log_prob(mu + 1).flatten(1).sum(1))


def test_bernoulli_matches_torch_distributions():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 1, 5, 5, generator=g) * 3
    b = torch.bernoulli(torch.full((4, 1, 5, 5), 0.4), generator=g)
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(b).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_log_prob(b, logits), expected)


def test_split_moments_clamps_logvar_like_ldm():
    moments = torch.cat([torch.zeros(1, 2, 1, 1), torch.tensor([-100.0, 100.0]).view(1, 2, 1, 1)], 1)
    mu, logvar = split_moments(moments)
    assert mu.shape == (1, 2, 1, 1) and logvar.flatten().tolist() == [-30.0, 20.0]


@pytest.mark.parametrize("mean,log_scale", [(0.0, -2.0), (0.9, -5.0), (-1.3, 0.5), (0.2, -9.0), (3.0, -6.0)])
def test_discretized_logistic_is_a_distribution_over_the_grid(mean, log_scale):
    """Brute force over all 256 levels in float64: probabilities are the logistic CDF differences, and sum to 1."""
    levels = 256
    x = (torch.arange(levels, dtype=torch.float64) / 127.5 - 1).view(levels, 1, 1, 1)
    lp = discretized_logistic_log_prob(x, torch.full_like(x, mean), torch.full_like(x, log_scale), levels)
    cdf = lambda v: torch.sigmoid((v - mean) / math.exp(log_scale))  # noqa: E731
    edges_hi = torch.where(x.flatten() > 0.999, torch.tensor(math.inf, dtype=torch.float64), x.flatten() + 1 / 255)
    edges_lo = torch.where(x.flatten() < -0.999, torch.tensor(-math.inf, dtype=torch.float64), x.flatten() - 1 / 255)
    expected = cdf(edges_hi) - cdf(edges_lo)
    assert math.isclose(float(lp.exp().sum()), 1.0, rel_tol=1e-9)
    big = expected > 1e-12                               # where the plain difference is accurate in float64
    torch.testing.assert_close(lp[big].exp(), expected[big], rtol=1e-6, atol=0)


def test_reconstruction_and_kl_are_summed_per_image():
    """Both terms sum over the image (no mean-reduced reconstruction beside a summed KL)."""
    x, x_hat = torch.zeros(2, 1, 3, 3), torch.full((2, 1, 3, 3), 0.5)
    mu, logvar = torch.ones(2, 4, 1, 1), torch.zeros(2, 4, 1, 1)
    loss, rec, kl = kl_autoencoder_loss(x, x_hat, mu, logvar, kl_weight=0.1, kind="l1")
    assert rec.tolist() == [4.5, 4.5] and kl.tolist() == [2.0, 2.0] and loss.tolist() == pytest.approx([4.7, 4.7])
    assert reconstruction(x, x_hat, "l2").tolist() == [2.25, 2.25]


def test_iwae_is_above_elbo_and_rises_with_k_to_log_px():
    """Linear-Gaussian model p(z) = N(0, 1), p(x|z) = N(w z, s^2): log p(x) = log N(x; 0, w^2 + s^2) exactly. With a
    deliberately wrong q(z|x), E[IWAE_K] rises with K from the ELBO towards log p(x)."""
    w, s2, x = 2.0, 0.5, torch.full((1,), 1.5, dtype=torch.float64)
    log_px = -0.5 * (math.log(2 * math.pi * (w * w + s2)) + 1.5 ** 2 / (w * w + s2))
    mu, logvar = torch.full((1, 1), 0.2, dtype=torch.float64), torch.full((1, 1), -2.0, dtype=torch.float64)
    torch.manual_seed(0)
    reps, K = 2000, 256
    z = reparameterize(mu.expand(K * reps, 1), logvar.expand(K * reps, 1))          # (K reps, 1)
    log_lik = -0.5 * (math.log(2 * math.pi * s2) + (x - w * z[:, 0]) ** 2 / s2)
    log_w = (log_lik + log_standard_normal(z) - log_normal(z, mu.expand_as(z), logvar.expand_as(z))).view(K, reps)
    means = {k: float(iwae_bound(log_w[:k]).mean()) for k in (1, 4, 16, 256)}
    elbo = float(log_w.mean())
    assert means[1] == pytest.approx(elbo, abs=0.05)                # IWAE_1 is the ELBO (both Monte Carlo)
    assert elbo < means[4] < means[16] < means[256] <= log_px
    assert log_px - means[256] < 0.1 * (log_px - elbo)              # most of the gap closed at K = 256


def _ppca_max_log_likelihood(x: torch.Tensor, q: int) -> float:
    """Tipping & Bishop 1999, Eq. 7-8: sigma^2 = mean of the discarded eigenvalues of S, W = U_q (L_q - s^2 I)^1/2;
    the mean log-likelihood per point -1/2 (D log 2 pi + log|C| + tr(C^-1 S)), C = W W^T + s^2 I."""
    N, D = x.shape
    S = torch.cov(x.T, correction=0)
    L, U = torch.linalg.eigh(S)
    L, U = L.flip(0), U.flip(1)
    s2 = L[q:].mean()
    W = U[:, :q] * (L[:q] - s2).sqrt()
    C = W @ W.T + s2 * torch.eye(D, dtype=x.dtype)
    return float(-0.5 * (D * math.log(2 * math.pi) + torch.logdet(C) + torch.trace(torch.linalg.solve(C, S))))


def test_linear_gaussian_vae_reaches_the_ppca_likelihood():
    """A VAE with linear encoder mean, input-independent posterior variance, linear decoder and learned isotropic
    noise has its global optimum at pPCA's maximum likelihood, with ELBO = log p(x) there (Lucas et al. 2019,
    "Don't blame the ELBO", Sec. 4); the ELBO uses our closed-form KL and the analytic E_q log p(x|z)."""
    g = torch.Generator().manual_seed(0)
    N, D, q = 500, 5, 2
    x = torch.randn(N, q, generator=g, dtype=torch.float64) @ torch.randn(q, D, generator=g, dtype=torch.float64)
    x = x + 0.3 * torch.randn(N, D, generator=g, dtype=torch.float64) + 1.0
    A, a = torch.zeros(q, D, dtype=torch.float64, requires_grad=True), torch.zeros(q, dtype=torch.float64, requires_grad=True)
    logv = torch.zeros(q, dtype=torch.float64, requires_grad=True)
    W = (0.1 * torch.randn(D, q, generator=g, dtype=torch.float64)).requires_grad_()
    b, log_s2 = torch.zeros(D, dtype=torch.float64, requires_grad=True), torch.zeros((), dtype=torch.float64, requires_grad=True)

    def elbo():
        mu, logvar = x @ A.T + a, logv.expand(N, q)
        resid = (x - mu @ W.T - b).pow(2).sum(1) + (W.pow(2) * logv.exp()).sum()       # E_q ||x - W z - b||^2
        log_lik = -0.5 * (D * (math.log(2 * math.pi) + log_s2) + resid / log_s2.exp())
        return (log_lik - kl_standard_normal(mu, logvar)).mean()

    opt = torch.optim.LBFGS([A, a, logv, W, b, log_s2], lr=1, max_iter=2000, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -elbo()
        loss.backward()
        return loss

    opt.step(closure)
    best = _ppca_max_log_likelihood(x, q)
    assert float(elbo().detach()) == pytest.approx(best, abs=1e-6)
