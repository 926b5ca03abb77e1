"""SEDD's whole sampling loop against the Markov chain it defines, built with explicit matrices.

For one token on the uniform graph (Q[y, x] = 1/N for y != x) with the true score s_y(x) = p_sigma(y) / p_sigma(x),
p_sigma = exp(sigma Q) p, each step of the sampler is a known N x N transition matrix:
  * Euler (SEDD sec. 4): T[x, y] = delta_xy + dt sigma'(t) Q[x, y] s_y(x) for y != x (the diagonal makes rows sum
    to 1); negative entries cannot be drawn (SEDD's Gumbel sampler), so they count as 0 and the row is renormalised;
  * Tweedie tau-leaping (analytic): the exact reverse transition p(x_s = y | x_t = x)
    = p_s(y) exp((sigma_t - sigma_s) Q)[x, y] / p_t(x);
  * the final denoising step: the exact posterior p(x_0 = y | x_sigma(eps) = x) = p(y) exp(sigma Q)[x, y] / p_sigma(x).
The loop starts from the uniform limit on the grid t_i = linspace(1, eps, steps + 1), eps = 1e-5. So the law of the
output is start @ T_1 @ ... @ T_steps @ posterior, computed here with torch.linalg.matrix_exp; the sampler's
frequencies on 20,000 rows must match it within 5 standard errors. Positions are independent chains (product data).
"""
import pytest
import torch

from unigen.errors import UserError
from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion import sedd as SE

NS = 4  # states of the uniform graph
P0 = torch.tensor([[0.55, 0.25, 0.15, 0.05], [0.1, 0.1, 0.2, 0.6]], dtype=torch.float64)  # two positions
SMIN, SMAX = 0.01, 0.7  # small sigma_max: the uniform start is far from p_sigma(1), so the grid matters


def noise(t):
    return N.geometric(t, sigma_min=SMIN, sigma_max=SMAX)


def Q():
    q = torch.full((NS, NS), 1.0 / NS, dtype=torch.float64)
    q[range(NS), range(NS)] = -(NS - 1) / NS
    return q


def expQ(s):
    return torch.linalg.matrix_exp(float(s) * Q())  # [y, x] = P(x_s = y | x_0 = x)


def true_log_score(x, sigma):
    pt = P0 @ expQ(sigma[0]).T  # (L, NS)
    return (pt[None] / pt[torch.arange(x.shape[1]), x][..., None]).log()  # (B, L, NS)


def sig(t):
    return SMIN ** (1 - t) * SMAX ** t  # the geometric schedule written out


def chain(p, predictor, steps, eps=1e-5):
    ts = torch.linspace(1.0, eps, steps + 1, dtype=torch.float64)
    law = torch.full((NS,), 1.0 / NS, dtype=torch.float64)  # the uniform limit
    for i in range(steps):
        s, s_next = sig(ts[i]), sig(ts[i + 1])
        pt, pn = expQ(s) @ p, expQ(s_next) @ p
        if predictor == "euler":
            dsig_dt = s * torch.log(torch.tensor(SMAX / SMIN, dtype=torch.float64))
            rate = Q().T * (pt[None, :] / pt[:, None])  # [x, y] = Q[x, y] s_y(x)  (Q symmetric)
            rate.fill_diagonal_(0)
            T = torch.eye(NS, dtype=torch.float64) + (ts[i] - ts[i + 1]) * dsig_dt * (rate - torch.diag(rate.sum(1)))
            T = T.clamp(min=0)
            T = T / T.sum(1, keepdim=True)
        else:
            T = pn[None, :] * expQ(s - s_next).T / pt[:, None]  # [x, y] = p_s(y) P(x | y) / p_t(x)
        law = law @ T
    s = sig(ts[-1])
    post = p[None, :] * expQ(s).T / (expQ(s) @ p)[:, None]  # [x, y] = p(y) P(x | y) / p_sigma(x)
    return law @ post


@pytest.mark.parametrize("predictor,steps", [("euler", 3), ("euler", 8), ("analytic", 3)])
def test_sampling_loop_draws_the_law_of_its_markov_chain(predictor, steps):
    n = 20000
    sampler = SE.sample_sedd_euler if predictor == "euler" else SE.sample_sedd_analytic
    seen = []
    out, stats = sampler(true_log_score, torch.zeros(n, 2, dtype=torch.long), steps=steps, graph="uniform",
                         n_states=NS, noise=noise, generator=torch.Generator().manual_seed(0), callback=seen.append)
    assert stats["nfe"] == steps + 1 and len(seen) == steps + 1 and torch.equal(seen[-1], out)
    for i in range(2):
        want = chain(P0[i], predictor, steps)
        assert (want - P0[i]).abs().max() > 0.02 or predictor == "euler"  # the start and grid show in the law
        freq = torch.bincount(out[:, i], minlength=NS).double() / n
        assert ((freq - want).abs() < 5 * (want * (1 - want) / n).sqrt()).all(), (i, freq, want)


def test_without_the_denoising_step_the_law_stops_at_sigma_eps():
    n, steps, eps = 20000, 3, 0.2
    out, stats = SE.sample_sedd_analytic(true_log_score, torch.zeros(n, 2, dtype=torch.long), steps=steps,
                                         graph="uniform", n_states=NS, noise=noise, eps=eps, denoise=False,
                                         generator=torch.Generator().manual_seed(1))
    assert stats["nfe"] == steps
    for i in range(2):
        p = P0[i]
        ts = torch.linspace(1.0, eps, steps + 1, dtype=torch.float64)
        law = torch.full((NS,), 1.0 / NS, dtype=torch.float64)
        for k in range(steps):
            pt, pn = expQ(sig(ts[k])) @ p, expQ(sig(ts[k + 1])) @ p
            law = law @ (pn[None, :] * expQ(sig(ts[k]) - sig(ts[k + 1])).T / pt[:, None])
        freq = torch.bincount(out[:, i], minlength=NS).double() / n
        assert ((freq - law).abs() < 5 * (law * (1 - law) / n).sqrt()).all()


def test_prompt_mask_keeps_tokens_on_the_uniform_graph():
    keep = torch.tensor([[True, False]]).expand(500, 2)
    out, _ = SE.sample_sedd_euler(true_log_score, torch.full((500, 2), 3), steps=2, graph="uniform", n_states=NS,
                                  noise=noise, prompt_mask=keep, generator=torch.Generator().manual_seed(2))
    assert (out[:, 0] == 3).all() and (out[:, 1] != 3).any()


def test_sampler_and_loss_checks():
    with pytest.raises(UserError, match=r"^steps must be positive, got 0$"):
        SE.sample_sedd_euler(true_log_score, torch.zeros(1, 2, dtype=torch.long), steps=0, graph="uniform",
                             n_states=NS)
    out, stats = SE.sample_sedd_euler(true_log_score, torch.zeros(1, 2, dtype=torch.long), steps=1, graph="uniform",
                                      n_states=NS, noise=noise)
    assert stats["nfe"] == 2
    with pytest.raises(UserError, match=r"^the uniform graph needs n_states$"):
        SE.sample_sedd_euler(true_log_score, torch.zeros(1, 2, dtype=torch.long), steps=1, graph="uniform")
    with pytest.raises(UserError, match=r"^the absorbing graph needs mask_id$"):
        SE.sedd_loss(lambda x, s: x, torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(UserError, match=r"^graph must be one of \('absorb', 'uniform'\), got 'ring'$"):
        SE.sedd_loss(lambda x, s: x, torch.zeros(1, 2, dtype=torch.long), graph="ring", mask_id=4)


def test_sedd_loss_defaults_absorbing_graph_and_plain_uniform_times():
    seen = []

    def score(x_t, sigma):
        seen.append((x_t, sigma))
        return torch.zeros(*x_t.shape, 5)
    x0 = torch.zeros(256, 3, dtype=torch.long)
    torch.manual_seed(0)
    SE.sedd_loss(score, x0, mask_id=4)  # graph "absorb" by default: x_t holds mask tokens, never other tokens
    x_t, sigma = seen[0]
    assert set(x_t.unique().tolist()) == {0, 4}
    t = -torch.expm1(-sigma.double()) / (1 - 1e-3)  # invert the log-linear schedule
    assert t.min() >= 1e-3 - 1e-6 and t.max() <= 1 + 1e-6
    cells = torch.floor((t - 1e-3) / (1 - 1e-3) * 256).long().clamp(0, 255)
    assert len(cells.unique()) < 256  # default antithetic=False: plain U[eps, 1] draws, not one per cell
