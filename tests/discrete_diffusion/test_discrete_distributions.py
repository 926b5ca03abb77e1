"""What the AR and BD3 samplers generate, against brute force over every sequence of a tiny vocabulary.

A known joint P over the 3^4 sequences of 4 tokens from a 3-token vocabulary, and an exact network that answers
every query with the posterior of each position given the tokens it can see, computed by enumeration. Then:
  * AR decoding (cached or not) samples P itself: p(x_1) p(x_2 | x_1) ... is the chain rule;
  * BD3 with one MDLM step per block samples, in each block, the product of the conditional marginals given the
    finished blocks: with block size 1 that is P again; with block size 2 it is
    p(x_1 | .) p(x_2 | .) p(x_3 | x_1, x_2) p(x_4 | x_1, x_2), a different distribution, also enumerated here.
The samplers run through the family's one signature (samplers.SAMPLERS) on 20,000 rows; every frequency is
checked within 5 standard errors. (MDLM and LLaDA get the same treatment in test_discrete_exact.py; SEDD's
analytic step in test_discrete_sedd.py.)
"""
import itertools

import pytest
import torch

from unigen.families.discrete_diffusion.samplers import SAMPLERS, BlockDenoiser, CausalDenoiser

V, L, MASK, BOS = 3, 4, 3, 0
SEQS = torch.tensor(list(itertools.product(range(V), repeat=L)))  # (81, 4)
P = torch.softmax(1.5 * torch.randn(len(SEQS), generator=torch.Generator().manual_seed(0), dtype=torch.float64), 0)
N_ROWS = 20000


def posterior(ids):
    """p(x_j = v | the non-mask tokens of ids) for the first T = ids.shape[1] positions: (B, T, V)."""
    T = ids.shape[1]
    ok = ((ids[:, None, :] == MASK) | (ids[:, None, :] == SEQS[None, :, :T])).all(-1)  # (B, 81) consistent
    w = ok.double() * P
    onehot = torch.nn.functional.one_hot(SEQS[:, :T], V).double()  # (81, T, V)
    return torch.einsum("bs,stv->btv", w, onehot) / w.sum(-1)[:, None, None]


class ExactCausal:
    """next-token logits: position j of [BOS, x_1, ..., x_j] predicts x_{j+1} (cache: the tokens seen so far)."""

    def new_cache(self, B, L_):
        return {"ids": torch.zeros(B, 0, dtype=torch.long)}

    def __call__(self, ids, cache=None):
        if cache is not None:
            cache["ids"] = ids = torch.cat([cache["ids"], ids], 1)
        seq = ids[:, 1:]  # drop BOS
        out = []
        for j in range(ids.shape[1]):  # predict x_{j+1} from x_1..x_j
            if j >= L:
                out.append(torch.zeros(ids.shape[0], V, dtype=torch.float64))
                continue
            known = torch.cat([seq[:, :j], torch.full((ids.shape[0], L - j), MASK)], 1)
            out.append(posterior(known)[:, j].log())
        return torch.stack(out, 1)  # (B, T, V)


def exact_block_net(ids, level, *, mask, positions, cache=None):
    """BD3 network: each position's posterior given every non-mask token it is shown (the clean prefix and the
    noisy block), with a log-probability of -inf for the mask output. (B, T, V + 1)."""
    assert cache is None
    logp = posterior(ids).log()
    return torch.cat([logp, torch.full((*ids.shape, 1), float("-inf"), dtype=logp.dtype)], -1)


def freq(x):
    idx = (x * torch.tensor([V ** 3, V ** 2, V, 1])).sum(-1)
    return torch.bincount(idx, minlength=len(SEQS)).double() / len(x)


def assert_matches(x, p):
    f = freq(x)
    assert ((f - p).abs() < 5 * (p * (1 - p) / len(x)).sqrt() + 1e-12).all(), (f - p).abs().max()


def blockwise_product(bs):
    """Brute force: sum over the blocks of log prod_{i in block} p(x_i | earlier blocks)."""
    logq = torch.zeros(len(SEQS), dtype=torch.float64)
    for lo in range(0, L, bs):
        known = torch.cat([SEQS[:, :lo], torch.full((len(SEQS), L - lo), MASK)], 1)
        post = posterior(known)  # (81, L, V)
        for i in range(lo, lo + bs):
            logq += post[torch.arange(len(SEQS)), i, SEQS[:, i]].log()
    return logq.exp()


@pytest.mark.parametrize("use_cache", [True, False])
def test_ar_sampling_draws_the_joint(use_cache):
    canvas = torch.tensor([[BOS] + [MASK] * L]).expand(N_ROWS, L + 1).clone()
    x, stats = SAMPLERS["ar"](CausalDenoiser(ExactCausal(), MASK), canvas, steps=1, use_cache=use_cache,
                              generator=torch.Generator().manual_seed(1))
    assert (x[:, 0] == BOS).all() and stats["nfe"] == L
    assert_matches(x[:, 1:], P)


def test_ar_greedy_takes_the_argmax_of_each_exact_conditional():
    x, _ = SAMPLERS["ar"](CausalDenoiser(ExactCausal(), MASK), torch.tensor([[BOS] + [MASK] * L]), steps=1,
                          temperature=0.0)
    for i in range(L):
        known = torch.cat([x[:, 1:1 + i], torch.full((1, L - i), MASK)], 1)
        assert x[0, 1 + i] == posterior(known)[0, i].argmax()


@pytest.mark.parametrize("bs", [1, 2])
def test_bd3_one_step_per_block_draws_the_blockwise_product_of_conditionals(bs):
    want = blockwise_product(bs)
    if bs == 1:
        torch.testing.assert_close(want, P)  # the chain rule
    else:
        assert (want - P).abs().max() > 0.01  # a different distribution, so the test can tell them apart
    canvas = torch.full((N_ROWS, L), MASK)
    x, stats = SAMPLERS["bd3"](BlockDenoiser(exact_block_net, MASK, bs), canvas, steps=1, use_cache=False,
                               generator=torch.Generator().manual_seed(2))
    assert stats["nfe"] == L // bs
    assert_matches(x, want)


def test_bd3_keeps_a_prompt_block_and_conditions_on_it():
    canvas = torch.full((N_ROWS, L), MASK)
    canvas[:, :2] = torch.tensor([2, 1])
    x, _ = SAMPLERS["bd3"](BlockDenoiser(exact_block_net, MASK, 2), canvas, steps=1, use_cache=False,
                           generator=torch.Generator().manual_seed(3))
    assert (x[:, :2] == torch.tensor([2, 1])).all()
    cond = torch.where((SEQS[:, 0] == 2) & (SEQS[:, 1] == 1), P, torch.zeros_like(P))
    known = torch.tensor([[2, 1, MASK, MASK]])
    post = posterior(known)[0]  # (L, V): one step unmasks x_3 and x_4 independently given the prompt
    want = torch.where(cond > 0, post[2, SEQS[:, 2]] * post[3, SEQS[:, 3]], torch.zeros_like(P))
    assert_matches(x, want)
