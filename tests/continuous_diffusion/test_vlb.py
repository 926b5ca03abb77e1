"""DDPM's variational bound (vlb.py) against independent computations: torch.distributions' KL, scipy's normal
CDF, Gaussian conditioning of the joint (x_{t-1}, x_t), and Gibbs' inequality on 8-bit data whose NLL is known."""
import math

import pytest
import torch

from unigen.errors import UserError
from unigen.families.continuous_diffusion.schedules import alpha_bar_from_betas, cosine_betas, linear_betas
from unigen.families.continuous_diffusion.vlb import (betas_of, ddpm_vlb, discretized_gaussian_log_likelihood,
                                                      normal_kl, prior_kl, q_posterior, reverse_logvar, vlb_terms)

F64 = torch.float64
LEVELS = torch.arange(256, dtype=F64) * 2 / 255 - 1                   # the 8-bit levels of [-1, 1]
AB_LINEAR = alpha_bar_from_betas(linear_betas())                      # Ho et al.'s schedule, T = 1000


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2, lv1, lv2 = (torch.randn(50, generator=g, dtype=F64) for _ in range(4))
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * lv1).exp()),
                                            torch.distributions.Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), ref)


def test_discretized_gaussian_matches_scipy_and_sums_to_one():
    """Every bin's log mass against mpmath at 50 digits (tails included), and the masses of the 256 levels sum to 1."""
    mp = pytest.importorskip("mpmath").mp
    mp.dps = 50
    for mean, std in [(0.0, 0.3), (0.9, 0.01), (-0.99, 0.004), (0.5, 2.0), (0.0, 0.005)]:
        logp = discretized_gaussian_log_likelihood(LEVELS, torch.full_like(LEVELS, mean),
                                                   torch.full_like(LEVELS, 2 * math.log(std)))
        z = lambda v: (v - mean) / mp.mpf(std)                         # noqa: E731
        ref = []
        for k in range(0, 256, 5):                                     # mass = P(lo < X < hi) = P(-hi < -X < -lo)
            x = mp.mpf(2 * k) / 255 - 1
            a, b = (-mp.inf if k == 0 else z(x - mp.mpf(1) / 255)), (mp.inf if k == 255 else z(x + mp.mpf(1) / 255))
            mass = mp.ncdf(b) - mp.ncdf(a) if x < mean else mp.ncdf(-a) - mp.ncdf(-b)   # 50 digits need the near tail
            ref.append(float(mp.log(mass)))
        torch.testing.assert_close(logp[::5], torch.tensor(ref, dtype=F64), rtol=1e-9, atol=0)
        assert abs(logp.exp().sum().item() - 1) < 1e-12


def test_q_posterior_is_gaussian_conditioning_of_the_forward_process():
    """x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1}) e1, x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) e2:
    condition the joint Gaussian of (x_{t-1}, x_t) on x_t (the textbook formula, no Eq. 7)."""
    ab = alpha_bar_from_betas(cosine_betas(50))
    g = torch.Generator().manual_seed(1)
    n = torch.tensor([1, 7, 25, 49])
    x0, x_t = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64)
    mean, var = q_posterior(x0, x_t, n, ab)
    ab_prev, alpha = ab[n - 1], ab[n] / ab[n - 1]
    m1, m2 = ab_prev.sqrt()[:, None] * x0, (ab[n].sqrt())[:, None] * x0
    v1, c, v2 = 1 - ab_prev, alpha.sqrt() * (1 - ab_prev), alpha * (1 - ab_prev) + (1 - alpha)
    torch.testing.assert_close(mean, m1 + (c / v2)[:, None] * (x_t - m2))
    torch.testing.assert_close(var, v1 - c ** 2 / v2)
    torch.testing.assert_close(betas_of(ab), cosine_betas(50))


def test_reverse_variances():
    b = linear_betas()
    lv_large, lv_small = reverse_logvar(AB_LINEAR, "large"), reverse_logvar(AB_LINEAR, "small")
    torch.testing.assert_close(lv_large[1:], b[1:].log())
    tilde2 = b[1] * (1 - AB_LINEAR[0]) / (1 - AB_LINEAR[1])
    torch.testing.assert_close(lv_large[0], tilde2.log())
    assert torch.equal(lv_small[0], lv_large[0]) and (lv_small[1:] < lv_large[1:]).all()
    with pytest.raises(UserError):
        reverse_logvar(AB_LINEAR, "learned")


def _exact_x0(weights: torch.Tensor, ab: torch.Tensor):
    """E[x0 | x_t] for 1-D data on LEVELS with probabilities `weights`: Bayes over the 256 levels."""
    def x0_fn(x_t, n):
        a = ab[n].double()[:, None]                                    # (B, 1)
        logits = weights.log()[None] - (x_t.double() - a.sqrt() * LEVELS[None]) ** 2 / (2 * (1 - a))   # (B, 256)
        return (torch.softmax(logits, 1) * LEVELS[None]).sum(1, keepdim=True)
    return x0_fn


@pytest.mark.parametrize("variance", ["large", "small"])
@pytest.mark.parametrize("name, weights", [("uniform", torch.ones(256, dtype=F64) / 256),
                                           ("three levels", torch.zeros(256, dtype=F64).index_fill(0, torch.tensor([0, 100, 255]), 1 / 3))])
def test_full_bound_with_the_exact_denoiser_is_above_the_true_nll(name, weights, variance):
    """Every level x0 weighted by its probability: E[L(x0)] >= E[-log p_model(x0)] >= H(p) (Gibbs); for the
    uniform data H = 8 bits exactly. (How far above depends on the fixed variances: ~0.15 bits for uniform data with
    beta_t, ~1 bit for three levels, mostly the decoder's fixed width.) Two noise draws of every x_t per level."""
    support = weights > 0
    x0 = LEVELS[support].repeat_interleave(2)[:, None]                 # (B, 1)
    w = weights[support].repeat_interleave(2) / 2
    out = ddpm_vlb(_exact_x0(weights, AB_LINEAR), x0, AB_LINEAR, full=True, variance=variance,
                   generator=torch.Generator().manual_seed(0))
    H = -(weights[support] * weights[support].log2()).sum().item()
    assert (w * out["bits_per_dim"]).sum().item() >= H
    torch.testing.assert_close(out["nll"], out["prior"] + out["diffusion"] + out["decoder"])


def test_point_mass_bound_is_prior_plus_decoder_exactly():
    """x0 always the same image: the exact denoiser returns x0, so with sigma_t^2 = beta_tilde_t ("small") every KL
    term is exactly 0 and L = L_T + L_0, where L_0 is the N(x0, beta_tilde_2) mass of x0's bin (closed form)."""
    x0 = LEVELS[[0, 77, 128, 255]][None].repeat(3, 1)                   # (3, 4): an end level, interior, the other end
    out = ddpm_vlb(lambda x_t, n: x0.float(), x0, AB_LINEAR, n_t=8, variance="small",
                   generator=torch.Generator().manual_seed(0))
    assert out["diffusion"].abs().max().item() < 1e-9
    std = reverse_logvar(AB_LINEAR, "small")[0].mul(0.5).exp()
    Phi = torch.distributions.Normal(0.0, 1.0).cdf
    inner, end = 2 * Phi(1 / 255 / std) - 1, Phi(1 / 255 / std)         # an interior bin, an end bin (one side open)
    ref = -(2 * end.log() + 2 * inner.log())
    torch.testing.assert_close(out["decoder"], ref.expand(3))
    torch.testing.assert_close(out["nll"], out["prior"] + out["decoder"])


def test_monte_carlo_sum_is_unbiased_for_the_full_sum():
    weights = torch.ones(256, dtype=F64) / 256
    x0 = LEVELS[::32][:, None]                                         # 8 levels
    f = _exact_x0(weights, AB_LINEAR)
    full = ddpm_vlb(f, x0.repeat(32, 1), AB_LINEAR, full=True, generator=torch.Generator().manual_seed(1))
    mc = ddpm_vlb(f, x0.repeat(32, 1), AB_LINEAR, n_t=64, generator=torch.Generator().manual_seed(2))
    diff = (mc["diffusion"] - full["diffusion"]).mean().item()
    se = (mc["diffusion"].var() / len(x0.repeat(32, 1))).sqrt().item()
    assert abs(diff) < 4 * se, (diff, se)
    assert torch.isfinite(mc["mc_se"]).all() and (mc["mc_se"] > 0).all()


def test_terms_against_a_brute_force_loop():
    """vlb_terms at every level for one image equals KL / decoder NLL written out with torch.distributions."""
    ab = alpha_bar_from_betas(cosine_betas(20))
    x0 = LEVELS[[3, 200]][None]                                        # (1, 2)
    f = lambda x_t, n: 0.9 * x_t                                       # noqa: E731  any x0 estimate
    lv = reverse_logvar(ab, "large")
    for k in range(20):
        g1, g2 = torch.Generator().manual_seed(k), torch.Generator().manual_seed(k)
        got = vlb_terms(f, x0, torch.tensor([k]), ab, generator=g1)
        eps = torch.randn(x0.shape, generator=g2, dtype=F64)
        x_t = ab[k].sqrt() * x0 + (1 - ab[k]).sqrt() * eps
        x0_hat = 0.9 * x_t.float().double()
        if k == 0:
            d = torch.distributions.Normal(x0_hat, (0.5 * lv[0]).exp())
            mass = d.cdf(x0 + 1 / 255) - d.cdf(x0 - 1 / 255)
            mass[0, 1] = 1 - d.cdf(x0 - 1 / 255)[0, 1] if x0[0, 1] == 1 else mass[0, 1]
            ref = -mass.log().sum()
        else:
            ab_p, beta = ab[k - 1], 1 - ab[k] / ab[k - 1]
            post = lambda z: (ab_p.sqrt() * beta * z + (1 - beta).sqrt() * (1 - ab_p) * x_t) / (1 - ab[k])  # noqa: E731
            var = (1 - ab_p) / (1 - ab[k]) * beta
            ref = torch.distributions.kl_divergence(torch.distributions.Normal(post(x0), var.sqrt()),
                                                    torch.distributions.Normal(post(x0_hat), (0.5 * lv[k]).exp())).sum()
        torch.testing.assert_close(got[0], ref, msg=f"level {k}")


def test_prior_term_and_bad_input():
    x0 = torch.tensor([[1.0, -1.0, 0.0]], dtype=F64)
    ab_T = AB_LINEAR[-1]
    ref = sum(torch.distributions.kl_divergence(torch.distributions.Normal(ab_T.sqrt() * v, (1 - ab_T).sqrt()),
                                                torch.distributions.Normal(0.0, 1.0)) for v in x0[0])
    torch.testing.assert_close(prior_kl(x0, AB_LINEAR)[0], ref)
    with pytest.raises(UserError):
        ddpm_vlb(lambda x, n: x, x0, AB_LINEAR, n_t=0)
    with pytest.raises(UserError):
        ddpm_vlb(lambda x, n: x, x0, AB_LINEAR[:1])


def test_monte_carlo_sum_equals_the_full_sum_when_the_terms_do_not_depend_on_noise():
    """A point mass denoised exactly with sigma_t^2 = beta_t: mu_theta = mu_tilde, so every KL term is the variance
    mismatch alone, the same for every x_t. With T = 2 the only diffusion level is t = 2 (q = 1): the Monte-Carlo
    estimate must equal the full sum exactly (a wrong weight or a level-0 draw shows here)."""
    ab = alpha_bar_from_betas(torch.tensor([0.01, 0.3], dtype=F64))
    x0 = LEVELS[[5, 250]][None].repeat(6, 1)
    f = lambda x_t, n: x0.float()                                      # noqa: E731
    full = ddpm_vlb(f, x0, ab, full=True, variance="large", generator=torch.Generator().manual_seed(0))
    mc = ddpm_vlb(f, x0, ab, n_t=3, variance="large", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mc["diffusion"], full["diffusion"])
    beta2, tilde2 = 0.3, 0.3 * 0.01 / (1 - 0.99 * 0.7)
    ref = 2 * 0.5 * (math.log(beta2 / tilde2) + tilde2 / beta2 - 1)     # two dimensions
    torch.testing.assert_close(full["diffusion"], torch.full((6,), ref, dtype=F64))
