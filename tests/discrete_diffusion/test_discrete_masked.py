"""MDLM / LLaDA losses: SUBS invariants, the forward process, loss normalisations against closed forms."""
import math

import pytest
import torch

from unigen.families.discrete_diffusion import masked as M
from unigen.families.discrete_diffusion import noise as N
from unigen.errors import UserError

V, MASK = 7, 7


def uniform_logits_fn(record=None):
    """Logits that are uniform over the V real tokens: every masked token costs exactly log V."""
    def fn(x_t, level):
        if record is not None:
            record.append((x_t.clone(), None if level is None else level.clone()))
        return torch.zeros(*x_t.shape, V + 1)
    return fn


def test_subs_zero_mask_mass_and_carry_over():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, V + 1, generator=g) * 3
    x_t = torch.randint(0, V, (3, 5), generator=g)
    x_t[:, ::2] = MASK
    p = M.subs_log_probs(logits, x_t, MASK).exp()
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 5))
    assert (p[..., MASK] == 0).all()
    clean = x_t != MASK
    assert torch.equal(p[clean], torch.nn.functional.one_hot(x_t[clean], V + 1).float())
    # masked rows are the softmax over the real tokens only
    torch.testing.assert_close(p[~clean][:, :V], torch.softmax(logits[~clean][:, :V], -1))


def test_forward_process_extremes_keep_and_rate():
    x0 = torch.randint(0, V, (4, 1000), generator=torch.Generator().manual_seed(1))
    assert torch.equal(M.q_xt(x0, torch.tensor(0.0), MASK), x0)
    assert (M.q_xt(x0, torch.tensor(1.0), MASK) == MASK).all()
    keep = torch.zeros_like(x0, dtype=torch.bool)
    keep[:, :10] = True
    x_t = M.q_xt(x0, torch.tensor(1.0), MASK, keep)
    assert torch.equal(x_t[:, :10], x0[:, :10]) and (x_t[:, 10:] == MASK).all()
    rate = torch.tensor([[0.1], [0.5], [0.9], [0.3]])
    frac = (M.q_xt(x0, rate, MASK, generator=torch.Generator().manual_seed(2)) == MASK).double().mean(1)
    se = (rate[:, 0].double() * (1 - rate[:, 0].double()) / 1000).sqrt()
    assert ((frac - rate[:, 0]).abs() < 5 * se).all()


def test_mdlm_loss_normalises_over_all_tokens():
    # With uniform logits each masked token costs log V and carries weight 1/t: the loss is
    # sum_b (1/t_b) * #masked_b * log V / (B L)  -- over ALL tokens, not over the masked ones.
    B, L = 4, 9
    g = torch.Generator().manual_seed(3)
    x0 = torch.randint(0, V, (B, L), generator=g)
    t = torch.tensor([0.2, 0.5, 0.7, 1.0])
    x_t = M.q_xt(x0, N.move_chance(N.loglinear(t)[0])[:, None], MASK, generator=g)
    loss = M.mdlm_loss(uniform_logits_fn(), x0, MASK, t=t, x_t=x_t)
    n_masked = (x_t == MASK).sum(1).double()
    expected = ((1 / t.double()) * n_masked * math.log(V)).sum() / (B * L)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=0)


def test_mdlm_loss_conditioning_t_or_sigma():
    x0 = torch.randint(0, V, (3, 4))
    t = torch.tensor([0.25, 0.5, 0.75])
    for cond, want in (("t", t), ("sigma", N.loglinear(t)[0])):
        rec = []
        M.mdlm_loss(uniform_logits_fn(rec), x0, MASK, t=t, cond=cond)
        torch.testing.assert_close(rec[0][1], want)
    with pytest.raises(UserError):
        M.mdlm_loss(uniform_logits_fn(), x0, MASK, t=t, cond="time")


def test_mdlm_loss_samples_antithetic_times_in_range():
    rec = []
    torch.manual_seed(0)
    M.mdlm_loss(uniform_logits_fn(rec), torch.randint(0, V, (8, 3)), MASK)
    t = rec[0][1]
    assert t.min() >= 1e-3 and t.max() <= 1
    assert torch.equal(torch.floor((t - 1e-3) / (1 - 1e-3) * 8).long().sort().values, torch.arange(8))


def test_sft_loss_never_masks_prompt_and_divides_by_answer_length():
    B, L = 3, 10
    x0 = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(4))
    prompt_len = torch.tensor([2, 5, 9])
    prompt = torch.arange(L)[None, :] < prompt_len[:, None]
    t = torch.tensor([0.3, 0.6, 0.9])
    rec = []
    torch.manual_seed(5)
    loss = M.sft_loss(uniform_logits_fn(rec), x0, prompt, MASK, t=t)
    x_t = rec[0][0]
    assert torch.equal(x_t[prompt], x0[prompt])
    n_masked = (x_t == MASK).sum(1).double()
    expected = ((1 / t.double()) * n_masked * math.log(V) / (L - prompt_len).double()).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=0)
    with pytest.raises(UserError):
        M.sft_loss(uniform_logits_fn(), x0, torch.ones_like(prompt), MASK)


def test_loss_gradients_are_finite_with_a_real_network():
    torch.manual_seed(0)
    emb, head = torch.nn.Embedding(V + 1, 16), torch.nn.Linear(16, V + 1)
    loss = M.mdlm_loss(lambda x, t: head(emb(x)), torch.randint(0, V, (4, 6)), MASK)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in (*emb.parameters(), *head.parameters()))


def test_posterior_probs_absorbing_reverse_step():
    g = torch.Generator().manual_seed(6)
    x_t = torch.randint(0, V, (2, 6), generator=g)
    x_t[:, :3] = MASK
    p_x0 = M.subs_log_probs(torch.randn(2, 6, V + 1, generator=g), x_t, MASK).exp().double()
    a_t, a_s = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    q = M.posterior_probs(p_x0, x_t, a_t, a_s, MASK)
    torch.testing.assert_close(q.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    torch.testing.assert_close(q[:, :3, MASK], torch.full((2, 3), 0.3 / 0.8, dtype=torch.float64))
    torch.testing.assert_close(q[:, :3, :V], p_x0[:, :3, :V] * 0.5 / 0.8)
    assert torch.equal(q[:, 3:], torch.nn.functional.one_hot(x_t[:, 3:], V + 1).double())


def test_mask_token_in_data_is_rejected():
    x0 = torch.full((1, 3), MASK)
    with pytest.raises(UserError):
        M.mdlm_loss(uniform_logits_fn(), x0, MASK)
