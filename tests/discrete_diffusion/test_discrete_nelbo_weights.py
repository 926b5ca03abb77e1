"""The NELBO weights and time draws of MDLM and BD3-LM, computed directly from the papers' formulas.

MDLM (Sahoo et al. 2024, eq. 10): per sequence, E_t [ alpha'_t / (1 - alpha_t) sum_{i: x_t^i = mask} log p(x_0^i | x_t) ]
with alpha_t = exp(-sigma(t)); alpha'_t is taken here by autograd of the schedule's own definition, so a weight
that is only right under the log-linear schedule (where it is 1/t) fails under the geometric one.
BD3-LM (Arriola et al. 2025, sec. 5): the linear schedule alpha_t = 1 - t (mask rate t, weight 1/t) with clipped
mask rates t ~ U[beta, omega] for training; the NELBO for perplexity uses t ~ U[eps, 1].
"""
import math

import pytest
import torch

from unigen.families.discrete_diffusion import bd3 as BD
from unigen.families.discrete_diffusion import masked as M
from unigen.families.discrete_diffusion import noise as N

V, MASK = 6, 6


def alpha_and_rate(t, sigma_of_t):
    """alpha_t = exp(-sigma(t)) and -alpha'_t by autograd (float64), from a formula written here."""
    t = t.double().clone().requires_grad_(True)
    a = torch.exp(-sigma_of_t(t))
    (da,) = torch.autograd.grad(a.sum(), t)
    return a.detach(), -da


def fixed_logits(B, L, seed):
    """A denoiser that ignores its input: fixed random logits (B, L, V+1), and what it received."""
    table = torch.randn(B, L, V + 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    seen = []

    def fn(x_t, level):
        seen.append((x_t.clone(), level.clone()))
        return table.clone()
    return fn, table, seen


@pytest.mark.parametrize("cond", ["t", "sigma"])
def test_mdlm_loss_under_the_geometric_schedule_is_the_continuous_nelbo(cond):
    smin, smax = 1e-3, 8.0
    B, L = 5, 7
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V, (B, L), generator=g)
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.97], dtype=torch.float64)
    x_t = torch.where(torch.rand(B, L, generator=g) < 0.6, torch.full_like(x0, MASK), x0)
    fn, table, seen = fixed_logits(B, L, 1)
    geo = lambda tt: N.geometric(tt, sigma_min=smin, sigma_max=smax)  # noqa: E731
    got = M.mdlm_token_nll(fn, x0, t, MASK, noise=geo, cond=cond, x_t=x_t)  # (B, L)

    a, rate = alpha_and_rate(t, lambda tt: smin ** (1 - tt) * smax ** tt)
    w = rate / (1 - a)  # -alpha'_t / (1 - alpha_t)
    assert not torch.allclose(w, 1 / t, rtol=0.1)  # the geometric weight is far from log-linear's 1/t
    logp = torch.log_softmax(table[..., :V], -1)  # SUBS: no mass on the mask token
    ce = -logp.gather(-1, x0[..., None])[..., 0]  # (B, L)
    want = torch.where(x_t == MASK, w[:, None] * ce, torch.zeros_like(ce))
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)
    level = seen[0][1].double()
    torch.testing.assert_close(level, t if cond == "t" else smin ** (1 - t) * smax ** t, rtol=1e-6, atol=0)

    loss = M.mdlm_loss(fn, x0, MASK, noise=geo, cond=cond, t=t, x_t=x_t)  # normalised over all B * L tokens
    torch.testing.assert_close(loss.double(), want.sum() / (B * L), rtol=1e-6, atol=0)


def test_mdlm_forward_process_masks_at_rate_one_minus_alpha_under_the_geometric_schedule():
    """With x_t drawn by the loss itself, the masked fraction at time t is 1 - exp(-sigma(t))."""
    smin, smax = 1e-3, 3.0
    geo = lambda tt: N.geometric(tt, sigma_min=smin, sigma_max=smax)  # noqa: E731
    B, L = 4, 4000
    t = torch.tensor([0.1, 0.4, 0.7, 1.0])
    fn, _, seen = fixed_logits(B, L, 2)
    torch.manual_seed(3)
    M.mdlm_loss(fn, torch.zeros(B, L, dtype=torch.long), MASK, noise=geo, t=t)
    frac = (seen[0][0] == MASK).double().mean(1)
    p = 1 - torch.exp(-(smin ** (1 - t.double()) * smax ** t.double()))
    assert ((frac - p).abs() < 5 * (p * (1 - p) / L).sqrt() + 1e-9).all(), (frac, p)


def capture(level_of_x_t=True):
    """A BD3 model that predicts uniformly over the V real tokens and records its inputs."""
    seen = []

    def model(ids, level, *, mask, positions):
        seen.append((ids.clone(), None if level is None else level.clone()))
        return torch.zeros(*ids.shape, V + 1)
    return model, seen


@pytest.mark.parametrize("antithetic", [True, False])
def test_bd3_clipped_training_draws_mask_rates_uniformly_in_beta_omega(antithetic):
    beta, omega, bs = 0.3, 0.8, 4
    B, n = 64, 64  # 1024 block mask rates
    model, seen = capture()
    torch.manual_seed(0)
    BD.bd3_loss(model, torch.zeros(B, n, dtype=torch.long), block_size=bs, mask_id=MASK, beta=beta, omega=omega,
                antithetic=antithetic, time_cond=True)
    ids, level = seen[0]
    t = level[:, :n]  # (B, n): the x_t half carries its block's rate; the x_0 half is clean, level 0
    assert (level[:, n:] == 0).all()
    assert (t.view(B, n // bs, bs) == t.view(B, n // bs, bs)[..., :1]).all()  # one rate per block
    tb = t[:, ::bs].flatten().double().sort().values  # (1024,)
    assert tb.min() >= beta and tb.max() <= omega
    k = len(tb)
    cdf = (tb - beta) / (omega - beta)  # U[beta, omega]'s CDF at the sorted draws
    ks = ((torch.arange(1, k + 1) / k - cdf).abs().max()).item()
    if antithetic:  # stratified: one draw in each of k equal cells of [beta, omega]
        cell = torch.floor(cdf * k).long().sort().values
        assert torch.equal(cell.clamp(max=k - 1), torch.arange(k)), "not one draw per cell"
    else:
        assert ks < 1.63 / math.sqrt(k)  # Kolmogorov-Smirnov at the 1% level
        cell = torch.floor(cdf * k).long().clamp(max=k - 1)
        assert len(cell.unique()) < k  # plain uniform draws: some cells empty, unlike the stratified ones


def test_bd3_loss_is_the_block_nelbo_with_weight_one_over_t():
    """Each masked token of block b costs log V (uniform prediction) times 1/t_b; unmasked ones cost 0; the mean is
    over all B * n tokens. The masked fraction of a block is its rate t_b (alpha_t = 1 - t)."""
    bs, B, n = 8, 2, 4000
    t = torch.tensor([[0.35, 0.6, 0.75, 0.5] * (n // bs // 4)] * B)  # (B, n_blocks) given rates
    model, seen = capture()
    torch.manual_seed(1)
    loss = BD.bd3_loss(model, torch.zeros(B, n, dtype=torch.long), block_size=bs, mask_id=MASK, t=t)
    x_t = seen[0][0][:, :n]
    masked = (x_t == MASK).double().view(B, n // bs, bs).sum(-1)  # (B, n_blocks)
    want = (masked * math.log(V) / t.double()).sum() / (B * n)
    torch.testing.assert_close(loss.double(), want, rtol=1e-6, atol=0)
    for rate in (0.35, 0.6, 0.75, 0.5):
        frac = masked[t == rate].sum() / ((t == rate).sum() * bs)
        assert abs(frac - rate) < 5 * math.sqrt(rate * (1 - rate) / ((t == rate).sum().item() * bs))


def test_bd3_nelbo_draws_unclipped_rates_in_eps_one():
    bs, B, n = 2, 32, 32
    model, seen = capture()
    out = BD.bd3_nelbo(model, torch.zeros(B, n, dtype=torch.long), block_size=bs, mask_id=MASK, n_samples=2,
                       time_cond=True, generator=torch.Generator().manual_seed(2))
    assert len(seen) == 2
    tb = torch.cat([lv[:, :n:bs].flatten() for _, lv in seen]).double()
    assert tb.min() >= 1e-3 and tb.max() <= 1.0 and tb.max() > 0.99 and tb.min() < 0.01
    # uniform prediction: the per-sequence bound is log V * sum_b (masked in b) / t_b, averaged over the 2 draws
    want = sum((x[:, :n] == MASK).double().view(B, -1, bs).sum(-1).mul(math.log(V)).div(lv[:, :n:bs].double())
               .sum(-1) for x, lv in seen) / 2
    torch.testing.assert_close(out["nll"], want, rtol=1e-6, atol=0)
