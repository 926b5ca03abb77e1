"""Masked diffusion against an exact oracle: a known distribution over all 3-token sequences of a 3-token vocabulary.

The exact SUBS denoiser is the posterior p(x_0^i = v | unmasked tokens of x_t), computed by enumeration. With it:
  * the NELBO equals -log p(x) for every x (masked diffusion = any-order autoregression, and every order of exact
    conditionals multiplies to p(x)); for any other denoiser the data-averaged NELBO exceeds the entropy;
  * the Monte-Carlo estimators agree with the exact NELBO (enumerated over all mask subsets);
  * LLaDA with random remasking and one token per step samples the joint exactly; MDLM's ancestral sampler with
    a single step samples every token independently, i.e. the product of the marginals.
"""
import itertools
import math

import numpy as np
import torch

from unigen.families.discrete_diffusion import likelihood as LK
from unigen.families.discrete_diffusion import masked as M
from unigen.families.discrete_diffusion import llada as S

V, L, MASK = 3, 3, 3
SEQS = torch.tensor(list(itertools.product(range(V), repeat=L)))  # (27, 3)
P = torch.softmax(1.5 * torch.randn(len(SEQS), generator=torch.Generator().manual_seed(0), dtype=torch.float64), 0)


def exact_logits_fn(p=P):
    onehot = torch.nn.functional.one_hot(SEQS, V).double()  # (27, L, V)

    def fn(x_t, t):
        ok = ((x_t[:, None, :] == MASK) | (x_t[:, None, :] == SEQS[None])).all(-1)  # (B, 27) consistent sequences
        w = ok.double() * p  # (B, 27)
        probs = torch.einsum("bs,slv->blv", w, onehot) / w.sum(-1)[:, None, None]  # (B, L, V)
        return torch.cat([probs.log(), torch.zeros(*x_t.shape, 1, dtype=torch.float64)], -1)
    return fn


def random_logits_fn():
    table = torch.randn((V + 1) ** L, L, V + 1, generator=torch.Generator().manual_seed(1))
    return lambda x_t, t: table[(x_t * torch.tensor([(V + 1) ** 2, V + 1, 1])).sum(-1)]


def exact_nelbo(logits_fn, x, weight):
    """sum over nonempty mask sets S of weight(|S|) * sum_{i in S} -log p(x_i | x with S masked)."""
    total = torch.zeros(len(x), dtype=torch.float64)
    for k in range(1, L + 1):
        for S_ in itertools.combinations(range(L), k):
            x_t = x.clone()
            x_t[:, list(S_)] = MASK
            logp = M.subs_log_probs(logits_fn(x_t, None), x_t, MASK).double()
            ce = -logp.gather(-1, x[..., None]).squeeze(-1)[:, list(S_)].sum(-1)
            total += weight(k) * ce
    return total


def llada_weight(k):  # E_{l ~ U{1..L}} (L/l) E_{|S| = l}: each set of size k gets (1/L)(L/k) / C(L, k)
    return 1 / (k * math.comb(L, k))


def mdlm_weight(k, t_eps=1e-3, s_eps=1e-3):
    """(1/(1-t_eps)) int_{t_eps}^1 (1/t) m^k (1-m)^(L-k) dt, m = (1 - s_eps) t: the truncated continuous NELBO's
    weight of one mask set of size k (the integrand is a polynomial; Gauss-Legendre is exact)."""
    nodes, w = np.polynomial.legendre.leggauss(16)
    t = t_eps + (1 - t_eps) * (nodes + 1) / 2
    m = (1 - s_eps) * t
    return float(np.sum(w * (1 - t_eps) / 2 * m ** k * (1 - m) ** (L - k) / t)) / (1 - t_eps)


def test_exact_denoiser_nelbo_is_the_nll_and_others_bound_the_entropy():
    nelbo = exact_nelbo(exact_logits_fn(), SEQS, llada_weight)
    torch.testing.assert_close(nelbo, -P.log(), rtol=1e-10, atol=1e-12)
    entropy = -(P * P.log()).sum()
    for fn in (random_logits_fn(), exact_logits_fn(torch.full_like(P, 1 / len(P)))):
        assert (P * exact_nelbo(fn, SEQS, llada_weight)).sum() > entropy + 1e-3


def test_stratified_mc_elbo_agrees_with_exact():
    fn = random_logits_fn()
    exact = exact_nelbo(fn, SEQS, llada_weight)
    est = LK.elbo_stratified(fn, SEQS, mask_id=MASK, n_samples=3000, batch_size=16384,
                             generator=torch.Generator().manual_seed(2))
    assert ((est["nll"] - exact).abs() < 5 * est["stderr"]).all()
    assert abs(est["nats_per_token"] - float(est["nll"].sum()) / SEQS.numel()) < 1e-12
    assert math.isclose(est["ppl"], math.exp(est["nats_per_token"]))


def test_stratified_elbo_with_exact_denoiser_is_exact_per_sample():
    # with exact conditionals every stratum's estimate equals -log p(x) in expectation; the total must match
    est = LK.elbo_stratified(exact_logits_fn(), SEQS, mask_id=MASK, n_samples=300, batch_size=4096,
                             generator=torch.Generator().manual_seed(3))
    assert ((est["nll"] + P.log()).abs() < 5 * est["stderr"] + 1e-9).all()


def test_conditional_stratified_elbo_scores_only_the_answer():
    fn = exact_logits_fn()
    prompt = torch.zeros_like(SEQS, dtype=torch.bool)
    prompt[:, 0] = True
    est = LK.elbo_stratified(fn, SEQS, mask_id=MASK, n_samples=300, batch_size=4096, prompt_mask=prompt,
                             generator=torch.Generator().manual_seed(4))
    marg0 = torch.zeros(V, dtype=torch.float64).index_add_(0, SEQS[:, 0], P)
    cond_nll = -(P.log() - marg0[SEQS[:, 0]].log())  # -log p(x_1, x_2 | x_0)
    assert ((est["nll"] - cond_nll).abs() < 5 * est["stderr"] + 1e-9).all()


def test_continuous_nelbo_agrees_with_exact_truncated_integral():
    fn = random_logits_fn()
    exact = exact_nelbo(fn, SEQS, mdlm_weight)
    est = LK.nelbo_mdlm(fn, SEQS, mask_id=MASK, n_samples=20000, batch_size=16384,
                        generator=torch.Generator().manual_seed(5))
    assert ((est["nll"] - exact).abs() < 5 * est["stderr"]).all()


def _empirical(x):
    idx = (x * torch.tensor([V * V, V, 1])).sum(-1)
    return torch.bincount(idx, minlength=len(SEQS)).double() / len(x)


def _assert_matches(freq, p, n):
    assert ((freq - p).abs() < 5 * (p * (1 - p) / n).sqrt() + 1e-12).all()


def test_llada_random_one_token_per_step_samples_the_joint():
    n = 20000
    canvas = torch.full((n, L), MASK)
    x, stats = S.sample_llada(exact_logits_fn(), canvas, steps=L, mask_id=MASK, temperature=1.0, remasking="random",
                              generator=torch.Generator().manual_seed(6))
    assert stats["nfe"] == L and not (x == MASK).any()
    _assert_matches(_empirical(x), P, n)


def test_mdlm_single_step_samples_the_product_of_marginals():
    n = 20000
    x, stats = M.sample_mdlm(exact_logits_fn(), torch.full((n, L), MASK), steps=1, mask_id=MASK,
                             generator=torch.Generator().manual_seed(7))
    assert stats["nfe"] == 1 and not (x == MASK).any()
    marg = [torch.zeros(V, dtype=torch.float64).index_add_(0, SEQS[:, i], P) for i in range(L)]
    product = marg[0][SEQS[:, 0]] * marg[1][SEQS[:, 1]] * marg[2][SEQS[:, 2]]
    _assert_matches(_empirical(x), product, n)


def test_mdlm_many_steps_with_independent_data_is_exact_and_conditioning_works():
    # product data: the exact denoiser is the marginal, so parallel unmasking is exact for any number of steps
    marg = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.5, 0.4]], dtype=torch.float64)
    p = marg[0][SEQS[:, 0]] * marg[1][SEQS[:, 1]] * marg[2][SEQS[:, 2]]
    n = 20000
    x, stats = M.sample_mdlm(exact_logits_fn(p), torch.full((n, L), MASK), steps=5, mask_id=MASK,
                             generator=torch.Generator().manual_seed(8))
    assert 1 <= stats["nfe"] <= 5
    _assert_matches(_empirical(x), p, n)


def test_llada_random_with_a_prompt_samples_the_exact_conditional():
    n = 20000
    canvas = torch.full((n, L), MASK)
    canvas[:, 0] = 2
    x, _ = S.sample_llada(exact_logits_fn(), canvas, steps=L - 1, mask_id=MASK, temperature=1.0, remasking="random",
                          generator=torch.Generator().manual_seed(9))
    cond = torch.where(SEQS[:, 0] == 2, P, torch.zeros_like(P))
    _assert_matches(_empirical(x), cond / cond.sum(), n)


def test_first_hitting_samples_the_joint_one_token_per_call():
    """Zheng et al.'s first-hitting sampler (bd3lms' default) reveals one uniformly chosen masked token per call
    from the exact conditional: it samples the joint exactly."""
    n, fn, ts = 20000, exact_logits_fn(), []

    def spy(x_t, t):
        ts.append(t.double())
        return fn(x_t, t)

    x, stats = M.sample_first_hitting(spy, torch.full((n, L), MASK), mask_id=MASK,
                                      generator=torch.Generator().manual_seed(6))
    assert stats["nfe"] == L and not (x == MASK).any()
    _assert_matches(_empirical(x), P, n)
    # the time of the k-th reveal is the k-th largest of L uniforms: E = (L + 1 - k) / (L + 1)
    for k, t in enumerate(ts, start=1):
        assert abs(float(t.mean()) - (L + 1 - k) / (L + 1)) < 5 * float(t.std()) / n ** 0.5
