"""SEDD against brute force: rate matrices Q and their exponentials exp(sigma Q) built explicitly
(torch.linalg.matrix_exp), the score-entropy definition evaluated term by term, the SUBS <-> score
correspondence (SEDD loss = MDLM loss), and the samplers with the exact score of a known factorised distribution."""
import math

import pytest
import torch

from unigen.families.discrete_diffusion import masked as M
from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion import sedd as SE
from unigen.errors import UserError

V = 4  # real tokens


def rate_matrix(graph):
    """Q[y, x] = rate x -> y, columns sum to zero."""
    if graph == "absorb":
        n = V + 1
        Q = torch.zeros(n, n, dtype=torch.float64)
        Q[V, :V] = 1.0
        Q[range(V), range(V)] = -1.0
        return Q
    Q = torch.full((V, V), 1.0 / V, dtype=torch.float64)
    Q[range(V), range(V)] = -(V - 1) / V
    return Q


def graph_of(Q):
    return "absorb" if Q.shape[0] == V + 1 else "uniform"


def brute_dse(log_score, sigma, x, x0, Q):
    """sum_{y != x} Q[x, y] (s_y - r_y log s_y + K(r_y)), r_y = P[y, x0] / P[x, x0], P = exp(sigma Q)."""
    P = torch.linalg.matrix_exp(sigma * Q)
    total = torch.tensor(0.0, dtype=torch.float64)
    for y in range(Q.shape[0]):
        if y == x or Q[x, y] == 0:
            continue
        r = P[y, x0] / P[x, x0] if (graph_of(Q) == "uniform" or y == x0) else torch.tensor(0.0, dtype=torch.float64)
        K = r * (torch.log(r) - 1) if r > 0 else torch.tensor(0.0, dtype=torch.float64)
        total = total + Q[x, y] * (log_score[y].exp() - r * log_score[y] + K)
    return total


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
@pytest.mark.parametrize("sigma", [0.01, 0.3, 0.7, 2.5])
def test_score_entropy_matches_the_definition(graph, sigma):
    Q = rate_matrix(graph)
    n = Q.shape[0]
    # every reachable (x_0, x_t): absorbing x_t in {x_0, mask}, uniform any
    pairs = [(x0, x) for x0 in range(V) for x in range(n) if graph == "uniform" or x in (x0, V)]
    x0 = torch.tensor([p[0] for p in pairs])[None]  # (1, K)
    x_t = torch.tensor([p[1] for p in pairs])[None]
    ls = torch.randn(1, len(pairs), n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = SE.score_entropy(ls, torch.tensor([sigma], dtype=torch.float64), x_t, x0, graph, mask_id=V)
    want = torch.stack([brute_dse(ls[0, k], sigma, int(x_t[0, k]), int(x0[0, k]), Q) for k in range(len(pairs))])
    torch.testing.assert_close(got[0], want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_tweedie_pieces_and_reverse_rate_match_matrix_exponentials(graph):
    Q = rate_matrix(graph)
    n = Q.shape[0]
    ds = torch.tensor(0.37, dtype=torch.float64)
    s = torch.rand(1, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.1  # scores
    x = torch.arange(n)[None]  # (1, n): one position per state
    s[0, range(n), range(n)] = 1.0  # s_x(x) = 1 by definition
    stag = SE.staggered_score(s, ds, graph, mask_id=V)
    torch.testing.assert_close(stag[0], s[0] @ torch.linalg.matrix_exp(-ds * Q).T)
    trans = SE.transp_transition(x, ds, graph, n, mask_id=V)
    torch.testing.assert_close(trans[0], torch.linalg.matrix_exp(ds * Q))  # row x: P(x | y) for every y
    rate = SE.reverse_rate(x, s, graph, mask_id=V)[0]
    want = Q * s[0]  # R(x -> y) = Q[x, y] s_y
    want[range(n), range(n)] = 0
    want[range(n), range(n)] = -want.sum(1)
    torch.testing.assert_close(rate, want)


def test_sedd_absorbing_loss_equals_mdlm_loss_through_the_subs_score():
    B, L = 6, 10
    g = torch.Generator().manual_seed(2)
    x0 = torch.randint(0, V, (B, L), generator=g)
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 1.0], dtype=torch.float64)
    x_t = M.q_xt(x0, N.move_chance(N.loglinear(t)[0])[:, None], V, generator=g)
    table = torch.randn(V + 1, L, V + 1, generator=g, dtype=torch.float64)

    def logits_fn(x, level):  # depends on the whole input so that conditioning matters
        return table[x, torch.arange(L)] + table[x.sum(1) % (V + 1), :, :].mean(1, keepdim=True)

    def score_fn(x, sigma):
        return SE.subs_to_log_score(M.subs_log_probs(logits_fn(x, None), x, V), x, sigma, V)

    mdlm = M.mdlm_loss(logits_fn, x0, V, t=t, x_t=x_t)
    sedd = SE.sedd_loss(score_fn, x0, graph="absorb", mask_id=V, t=t, x_t=x_t)
    torch.testing.assert_close(sedd, mdlm, rtol=1e-10, atol=1e-12)


def exact_log_score(p0, graph):
    """The true log concrete score of a factorised distribution p0 (L, V) at total noise sigma."""
    Q = rate_matrix(graph)
    n = Q.shape[0]
    p0n = torch.zeros(p0.shape[0], n, dtype=torch.float64)
    p0n[:, :V] = p0

    def fn(x, sigma):
        pt = p0n @ torch.linalg.matrix_exp(float(sigma[0]) * Q).T  # (L, n): p_t per position
        ratio = pt[None] / pt[torch.arange(x.shape[1]), x][..., None]  # (B, L, n)
        return ratio.log()
    return fn


P0 = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.4, 0.1]], dtype=torch.float64)


@pytest.mark.parametrize("graph,noise", [("absorb", N.loglinear),
                                         ("uniform", lambda t: N.geometric(t, 1e-4, 20.0))])
def test_analytic_sampler_with_the_true_score_is_exact_per_token(graph, noise):
    n = 20000
    x = torch.full((n, 3), V)
    out, stats = SE.sample_sedd_analytic(exact_log_score(P0, graph), x, steps=6, graph=graph, mask_id=V,
                                         n_states=V + (graph == "absorb"), noise=noise,
                                         generator=torch.Generator().manual_seed(3))
    assert stats["nfe"] == 7 and out.max() < V
    for i in range(3):
        freq = torch.bincount(out[:, i], minlength=V).double() / n
        assert ((freq - P0[i]).abs() < 5 * (P0[i] * (1 - P0[i]) / n).sqrt()).all()


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_euler_step_is_first_order_in_the_step(graph):
    # one token, exact score: the Tweedie step is the exact reverse transition, Euler's error is O(dsigma^2)
    fn = exact_log_score(P0[:1], graph)
    n = V + (graph == "absorb")
    x = torch.tensor([[V if graph == "absorb" else 1]])
    sigma = torch.tensor([0.8], dtype=torch.float64)
    score = fn(x, sigma).exp()
    errors = []
    for ds in (0.02, 0.01, 0.005):
        ds = torch.tensor(ds, dtype=torch.float64)
        exact = SE.tweedie_probs(x, score, ds, graph, V)
        euler = torch.nn.functional.one_hot(x, n).double() + ds * SE.reverse_rate(x, score, graph, V)
        torch.testing.assert_close(exact.sum(-1), torch.ones(1, 1, dtype=torch.float64))
        errors.append(float((euler - exact).abs().max()))
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(o - 2) < 0.1 for o in orders), orders


@pytest.mark.parametrize("sampler", [SE.sample_sedd_euler, SE.sample_sedd_analytic])
def test_samplers_leave_no_mask_and_keep_the_prompt(sampler):
    x = torch.full((64, 3), V)
    x[:, 0] = 2
    out, _ = sampler(exact_log_score(P0, "absorb"), x, steps=5, mask_id=V, generator=torch.Generator().manual_seed(4))
    assert not (out == V).any() and (out[:, 0] == 2).all()
    keep = torch.zeros(64, 3, dtype=torch.bool)
    keep[:, 0] = True
    out, _ = sampler(exact_log_score(P0, "uniform"), torch.full((64, 3), 1), steps=5, graph="uniform", n_states=V,
                     prompt_mask=keep, noise=lambda t: N.geometric(t, 1e-4, 20.0),
                     generator=torch.Generator().manual_seed(5))
    assert (out[:, 0] == 1).all() and out.max() < V


def test_sedd_loss_runs_on_both_graphs_and_checks_inputs():
    torch.manual_seed(0)
    x0 = torch.randint(0, V, (4, 5))
    for graph, n in (("absorb", V + 1), ("uniform", V)):
        loss = SE.sedd_loss(lambda x, s: torch.zeros(*x.shape, n), x0, graph=graph, n_states=n, mask_id=V)
        assert torch.isfinite(loss) and loss >= 0
    with pytest.raises(UserError):
        SE.sedd_loss(lambda x, s: torch.zeros(*x.shape, V + 1), x0, graph="absorb")  # no mask id
    with pytest.raises(UserError):
        SE.sedd_loss(lambda x, s: torch.zeros(*x.shape, V + 1), x0, graph="uniform", n_states=V)
    with pytest.raises(UserError):
        SE.score_entropy(torch.zeros(1, 1, V), torch.ones(1), x0[:1, :1], x0[:1, :1], graph="random")


@pytest.mark.parametrize("sampler", [SE.sample_sedd_euler, SE.sample_sedd_analytic])
def test_the_denoising_step_on_the_absorbing_graph(sampler):
    """The last step is a Tweedie step from sigma(eps) to 0 that never draws the mask: with eps = 0.5 and one
    predictor step most tokens are still masked before it (denoise=False shows them), none after; it scores at
    sigma(eps), the grid's last level (the predictor's levels are sigma(1) .. ); it draws from the generator only.
    The score is the true one halved on the real tokens: with the true score the mask's Tweedie weight is exactly 0
    anyway, a learned score leaves it positive."""
    true = exact_log_score(P0, "absorb")
    levels = []

    def spy(x, sigma):
        levels.append(float(sigma[0]))
        log_s = true(x, sigma)
        log_s[..., :V] -= math.log(2)
        return log_s

    x = torch.full((400, 3), V)
    kept, _ = sampler(spy, x, steps=1, mask_id=V, eps=0.5, denoise=False, generator=torch.Generator().manual_seed(1))
    assert (kept == V).float().mean() > 0.3
    levels.clear()
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(sampler(spy, x, steps=1, mask_id=V, eps=0.5, generator=torch.Generator().manual_seed(1))[0])
    assert not (runs[0] == V).any() and torch.equal(runs[0], runs[1])
    sigma_1, sigma_eps = (float(N.loglinear(torch.tensor(t, dtype=torch.float64))[0]) for t in (1.0, 0.5))
    assert levels[:2] == pytest.approx([sigma_1, sigma_eps], rel=1e-6)
