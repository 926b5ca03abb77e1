"""SEDD's two predictors, Euler and Tweedie tau-leaping ("analytic"), one step against brute force, through the
sampler registry (`samplers.SAMPLERS["sedd-euler" / "sedd-analytic"]`, what `unigen sample --sampler` runs).

From a masked token x = m with concrete score s (s_m = 1: the network's own entry is log 0, as SEDD's
`scale_by_sigma` model and ours), one step from sigma = sigma(t) to sigma - ds, ds = sigma(t) - sigma(t - dt):
  * Euler (SEDD `EulerPredictor`):       p(y) = dt sigma'(t) Q[m, y] s_y for y != m, the rest stays;
  * Tweedie (SEDD `AnalyticPredictor`): p(y) oc (exp(-ds Q) s)_y exp(ds Q)[m, y],
built here from an explicit Q and torch.linalg.matrix_exp, not from sedd.py's closed forms.
On the absorbing graph the move probabilities are dt sigma'(t) s_y against (e^ds - 1) s_y. Under the log-linear
schedule, sigma(t) = -log(1 - (1 - eps) t), e^ds - 1 = (1 - eps) dt / (1 - (1 - eps) t) = dt sigma'(t) exactly: the
two predictors are the same Markov chain, so with shared noise they draw the same samples (benchmarks/
text_quality.md, section 5, saw byte-identical SEDD samples). Under the geometric schedule, or on the uniform
graph, they differ, and there the test tells them apart.
"""
import pytest
import torch

from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion import sedd as SE
from unigen.families.discrete_diffusion.samplers import SAMPLERS, ScoreDenoiser

V = 3  # real tokens; the absorbing graph's mask is state V


def rate_matrix(graph: str) -> torch.Tensor:
    """Q[y, x] = rate x -> y (columns sum to 0): absorbing e_mask 1^T - I with the mask's column 0 (it stays);
    uniform 1 1^T / N - I."""
    if graph == "absorb":
        Q = -torch.eye(V + 1, dtype=torch.float64)
        Q[V] += 1.0
        Q[:, V] = 0.0
        return Q
    return torch.full((V, V), 1.0 / V, dtype=torch.float64) - torch.eye(V, dtype=torch.float64)


def make_score(graph: str, n: int):
    """A fixed log-score (not a true score), shaped like the networks': log s_y(x) = a[x, y] (- log(e^sigma - 1)
    on the absorbing graph, as `sedd_log_score`), log s_x(x) = 0. Small enough that no step saturates."""
    g = torch.Generator().manual_seed(3)
    table = torch.randn(n, n, generator=g, dtype=torch.float64) - (2.0 if graph == "absorb" else 0.5)  # [x, y]
    table[range(n), range(n)] = 0.0

    def log_score(x, sigma):  # x (B, L), sigma (B,) -> (B, L, n)
        out = table[x].float()
        if graph == "absorb":
            out = out - torch.log(N.esigm1(sigma.float()))[:, None, None]
        return out.scatter(-1, x[..., None], 0.0)
    return log_score


def score_at(log_score, x: int, sigma: float) -> torch.Tensor:
    """The score vector s(x) (n,) the sampler sees at sigma (the same float32 values, in float64)."""
    return log_score(torch.tensor([[x]]), torch.tensor([sigma]))[0, 0].double().exp()


def brute_step(graph: str, noise, x: int, log_score, t0: float, t1: float) -> dict:
    """The one-step laws of both predictors from state x, from t0 to t1."""
    Q = rate_matrix(graph)
    n = Q.shape[0]
    sig0, dsig = (float(v) for v in noise(torch.tensor(t0, dtype=torch.float64)))
    s = score_at(log_score, x, sig0)  # (n,)
    ds = sig0 - float(noise(torch.tensor(t1, dtype=torch.float64))[0])
    euler = torch.zeros(n, dtype=torch.float64)
    for y in range(n):  # reverse rate x -> y is the forward rate y -> x times s_y
        euler[y] = (t0 - t1) * dsig * Q[x, y] * s[y] if y != x else 0.0
    euler[x] = 1 - euler.sum()
    tweedie = (torch.linalg.matrix_exp(-ds * Q) @ s) * torch.linalg.matrix_exp(ds * Q)[x, :]
    return {name: p.clamp(min=0) / p.clamp(min=0).sum() for name, p in (("sedd-euler", euler),
                                                                        ("sedd-analytic", tweedie))}


def first_step_probs(monkeypatch, sampler: str, d: ScoreDenoiser, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The normalised probabilities the registry's sampler draws its first step from (its first categorical)."""
    seen = []

    def record(probs, generator=None):
        seen.append(probs.clone())
        return SE.sample_categorical.__wrapped__(probs, generator)
    record.__wrapped__ = SE.sample_categorical
    monkeypatch.setattr(SE, "sample_categorical", record)
    SAMPLERS[sampler](d, x, steps=steps, generator=torch.Generator().manual_seed(0))
    monkeypatch.undo()
    p = seen[0].clamp(min=0).double()
    return p / p.sum(-1, keepdim=True)  # (B, L, n)


def geometric(sigma_max: float):
    return lambda t: N.geometric(t, sigma_min=1e-2, sigma_max=sigma_max)


CASES = [("absorb", N.loglinear), ("absorb", geometric(3.0)), ("uniform", geometric(1.5))]


@pytest.mark.parametrize("graph,noise", CASES, ids=["absorb-loglinear", "absorb-geometric", "uniform-geometric"])
def test_one_step_of_each_predictor_is_its_brute_force_law(monkeypatch, graph, noise):
    n = V + 1 if graph == "absorb" else V
    log_score = make_score(graph, n)
    d = ScoreDenoiser(log_score, mask_id=V, graph=graph, n_states=n, noise=noise)
    steps, eps = 4, 1e-5  # the samplers' grid: linspace(1, eps, steps + 1)
    t0, t1 = 1.0, 1.0 - (1.0 - eps) / steps
    x = torch.full((1, 6), V, dtype=torch.long)  # V marks the positions to generate (the absorbing graph's mask)
    laws = {}
    for sampler in ("sedd-euler", "sedd-analytic"):
        got = first_step_probs(monkeypatch, sampler, d, x, steps)[0]  # (L, n)
        if graph == "absorb":
            want = brute_step(graph, noise, V, log_score, t0, t1)[sampler]
            assert torch.allclose(got, want.expand_as(got), atol=1e-9, rtol=0), (sampler, got[0], want)
        else:  # the uniform sampler first redraws every position from the uniform limit with its generator
            start = torch.Generator().manual_seed(0)
            x_start = torch.randint(0, n, x.shape, generator=start)[0]
            want = torch.stack([brute_step(graph, noise, int(v), log_score, t0, t1)[sampler] for v in x_start])
            assert torch.allclose(got, want, atol=1e-9, rtol=0), (sampler, got, want)
        laws[sampler] = want.reshape(-1, n)[0]
    tv = 0.5 * float((laws["sedd-euler"] - laws["sedd-analytic"]).abs().sum())
    if graph == "absorb" and noise is N.loglinear:
        assert tv < 1e-12  # dt sigma'(t) = e^ds - 1: the same chain
    else:
        assert tv > 0.02, tv  # the case tells the two apart


def test_on_absorbing_loglinear_the_two_samplers_draw_the_same_samples():
    """What section 5 of text_quality.md saw with the trained text-sedd run: same noise, same samples, at any step
    count (the identity holds step by step), while the geometric schedule makes them differ."""
    n = V + 1
    log_score = make_score("absorb", n)
    x = torch.full((64, 8), V, dtype=torch.long)
    for noise, same in ((N.loglinear, True), (geometric(3.0), False)):
        d = ScoreDenoiser(log_score, mask_id=V, graph="absorb", n_states=n, noise=noise)
        for steps in (3, 16):
            a, _ = SAMPLERS["sedd-euler"](d, x, steps=steps, generator=torch.Generator().manual_seed(1))
            b, _ = SAMPLERS["sedd-analytic"](d, x, steps=steps, generator=torch.Generator().manual_seed(1))
            assert torch.equal(a, b) == same, (noise, steps)
