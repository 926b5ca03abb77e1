"""Score Entropy Discrete Diffusion (Lou et al. 2024, SEDD): ratio matching on absorbing and uniform graphs.

Notation (SEDD sections 2-3):
    N               number of states: V + 1 with the mask (absorbing, mask = `mask_id`) or V (uniform)
    Q               rate matrix, dp_t/dt = sigma'(t) Q p_t; Q[y, x] is the rate x -> y, columns sum to 0
                    absorbing: x -> mask at rate 1;  uniform: x -> y at rate 1/N for every y != x
    exp(sigma Q)    transition matrix: P(x_t = y | x_0 = x) = exp(sigma Q)[y, x]
    s_theta(x)_y    the concrete score p_t(x with one token set to y) / p_t(x); the network `score_fn(x_t, sigma)`
                    outputs its log, per position and state: (B, L, N)
    K(a)            a (log a - 1): the constant that makes the score entropy non-negative

Denoising score entropy (SEDD's L_DSE), per position with x = x_t:
    sum_{y != x} Q[x, y] ( s_y - r_y log s_y + K(r_y) ),   r_y = p(y | x_0) / p(x | x_0)
and the diffusion-weighted loss is sigma'(t) times that, t ~ U[eps, 1].

SUBS <-> score (absorbing): a SUBS denoiser p_theta(x_0 | x_t) has the log-score log p_theta(v) - log(e^sigma - 1)
at a masked position (v != mask) and 0 for v = mask (`subs_to_log_score`). Substituting it, the score entropy of a
masked token is sum_v p_v/(e^s-1) - r(log p_x0 - log(e^s-1)) + r(log r - 1) with r = 1/(e^s-1), i.e. exactly
-r log p_theta(x_0); times dsigma it is MDLM's w(t) * -log p_theta(x_0 | x_t). So `sedd_loss` on these scores equals
`mdlm_loss` on the same x_t and t.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion.categorical import sample_categorical
from unigen.families.discrete_diffusion.masked import check_tokens, q_xt
from unigen.errors import UserError

ScoreFn = Callable[[Tensor, Tensor], Tensor]
GRAPHS = ("absorb", "uniform")


def perturb(x0: Tensor, sigma: Tensor, graph: str, n_states: int, mask_id: int | None = None) -> Tensor:
    """Sample x_t ~ exp(sigma Q) x_0 per token (SEDD `sample_transition`); sigma (B,). Uses torch's global RNG."""
    move = N.move_chance(sigma)[:, None]  # (B, 1)
    if graph == "absorb":
        return q_xt(x0, move, mask_id)
    jump = torch.rand(x0.shape, device=x0.device) < move  # (B, L)
    return torch.where(jump, torch.randint_like(x0, n_states), x0)  # the uniform jump may land on x_0 itself


def score_entropy(log_score: Tensor, sigma: Tensor, x_t: Tensor, x0: Tensor, graph: str,
                  mask_id: int | None = None) -> Tensor:
    """Denoising score entropy per token (SEDD's L_DSE, with the constant K), without the sigma'(t) factor. (B, L).

    log_score (B, L, N); sigma (B,) or (B, 1). Uses e^sigma - 1 with SEDD's small-sigma expm1 branch.
    """
    graph = _check_graph(graph, mask_id)
    em1 = N.esigm1(sigma.reshape(-1, 1))[..., None]  # (B, 1, 1)
    n = log_score.shape[-1]
    if graph == "absorb":
        masked = x_t == mask_id  # (B, L); unmasked tokens have no incoming rates: their term is 0
        ls = torch.where(masked[..., None], log_score, torch.zeros_like(log_score))  # (B, L, N)
        r = 1 / em1[..., 0]  # (B, 1): r_y for y = x_0, every other ratio is 0 and contributes 0
        pos = ls.exp().masked_fill(torch.arange(n, device=ls.device) == mask_id, 0).sum(-1)  # (B, L): y != mask
        neg = r * ls.gather(-1, x0[..., None]).squeeze(-1)  # (B, L)
        return torch.where(masked, pos - neg + r * (torch.log(r) - 1), torch.zeros_like(pos))
    same = (x_t == x0)[..., None]  # (B, L, 1)
    r = torch.where(same, em1 / (n + em1), torch.ones_like(em1))  # (B, L, 1): r_y for y not in {x_t, x_0}
    r = r.expand_as(log_score).clone()  # (B, L, N)
    r.scatter_(-1, x0[..., None], torch.where(same, r[..., :1], 1 + n / em1.expand_as(same)))
    others = ~F.one_hot(x_t, n).bool()  # (B, L, N): y != x_t; Q[x, y] = 1/N there
    term = log_score.exp() - r * log_score + torch.special.xlogy(r, r) - r  # (B, L, N)
    return torch.where(others, term, torch.zeros_like(term)).sum(-1) / n


def sedd_token_loss(score_fn: ScoreFn, x0: Tensor, t: Tensor, *, graph: str = "absorb", n_states: int | None = None,
                    mask_id: int | None = None, noise: Callable = N.loglinear, x_t: Tensor | None = None) -> Tensor:
    """Per-token terms of SEDD's diffusion-weighted denoising score entropy (Lou et al. 2024, their ELBO) at times
    t (B,): sigma'(t) L_DSE per token. (B, L). score_fn(x_t, sigma (B,)) -> log-scores (B, L, N); x_t is drawn from
    exp(sigma Q) x_0 with torch's global RNG unless given. n_states: N (default mask_id + 1 = V + 1)."""
    graph = _check_graph(graph, mask_id)
    check_tokens(x0, mask_id if graph == "absorb" else None)
    n_states = mask_id + 1 if n_states is None else n_states
    sigma, dsigma = noise(t)  # (B,), (B,)
    if x_t is None:
        x_t = perturb(x0, sigma, graph, n_states, mask_id)  # (B, L)
    log_score = score_fn(x_t, sigma)  # (B, L, N)
    if log_score.shape[-1] != n_states:
        raise UserError(f"the score network has {log_score.shape[-1]} outputs, the {graph} graph {n_states} states")
    return dsigma[:, None] * score_entropy(log_score, sigma, x_t, x0, graph, mask_id)  # (B, L)


def sedd_loss(score_fn: ScoreFn, x0: Tensor, *, graph: str = "absorb", n_states: int | None = None,
              mask_id: int | None = None, noise: Callable = N.loglinear, eps: float = 1e-3, antithetic: bool = False,
              t: Tensor | None = None, x_t: Tensor | None = None) -> Tensor:
    """SEDD training loss (Lou et al. 2024: L_DSE weighted by sigma'(t), their ELBO), in nats per token over all
    B * L tokens (SEDD's code sums over positions instead: a factor L); the terms are `sedd_token_loss`'s.
    t ~ U[eps, 1] from torch's global RNG unless given."""
    if t is None:
        t = N.sample_t(x0.shape[0], eps=eps, antithetic=antithetic, device=x0.device)  # (B,)
    return sedd_token_loss(score_fn, x0, t, graph=graph, n_states=n_states, mask_id=mask_id, noise=noise,
                           x_t=x_t).sum() / x0.numel()


def subs_to_log_score(log_probs: Tensor, x_t: Tensor, sigma: Tensor, mask_id: int) -> Tensor:
    """Log concrete score of the absorbing graph from SUBS log-probabilities (MDLM's `get_score`): at a masked
    position log p_theta(v) - log(e^sigma - 1) for v != mask and 0 for the mask; at an unmasked position 0 for
    itself, log(e^sigma - 1) for the mask and -inf elsewhere (no rates lead there). sigma (B,)."""
    log_em1 = torch.log(N.esigm1(sigma.reshape(-1, 1, 1)))  # (B, 1, 1)
    masked_rows = (log_probs - log_em1).clone()  # (B, L, N)
    masked_rows[..., mask_id] = 0.0
    clean_rows = torch.full_like(log_probs, float("-inf")).scatter(-1, x_t[..., None], 0.0)  # (B, L, N)
    clean_rows[..., mask_id] = log_em1[..., 0]
    return torch.where((x_t == mask_id)[..., None], masked_rows, clean_rows)


# ---------------------------------------------------------------------------------------------------- sampling
def reverse_rate(x_t: Tensor, score: Tensor, graph: str, mask_id: int | None = None) -> Tensor:
    """SEDD's reverse rates per unit sigma: R(x -> y) = Q[x, y] s_y for y != x, diagonal = -sum. (B, L, N)."""
    n = score.shape[-1]
    if graph == "absorb":
        rate = score * (x_t == mask_id)[..., None]  # only a masked token has incoming forward rates (1 each)
        rate = rate.clone()
        rate[..., mask_id] = 0.0
    else:
        rate = score / n  # (B, L, N)
    rate = rate.masked_fill(F.one_hot(x_t, n).bool(), 0.0)
    return rate - F.one_hot(x_t, n).to(rate) * rate.sum(-1, keepdim=True)


def staggered_score(score: Tensor, dsigma: Tensor, graph: str, mask_id: int | None = None) -> Tensor:
    """exp(-dsigma Q) s: the score moved from sigma to sigma - dsigma (SEDD's Tweedie tau-leaping). dsigma
    broadcastable to (B, 1, 1)."""
    n = score.shape[-1]
    if graph == "absorb":
        out = score * dsigma.exp()  # (B, L, N)
        out[..., mask_id] += ((1 - dsigma.exp()) * score.sum(-1, keepdim=True))[..., 0]
        return out
    epow = torch.exp(-dsigma)
    return (epow - 1) / (n * epow) * score.sum(-1, keepdim=True) + score / epow


def transp_transition(x_t: Tensor, dsigma: Tensor, graph: str, n: int, mask_id: int | None = None) -> Tensor:
    """Row x_t of exp(dsigma Q): P(x_t | x_{t - dt} = y) for every y. dsigma broadcastable to (B, 1, 1). (B, L, N)."""
    stay = torch.exp(-dsigma)  # (B, 1, 1)
    onehot = F.one_hot(x_t, n).to(stay.dtype)  # (B, L, N)
    if graph == "absorb":
        return stay * onehot + (1 - stay) * (x_t == mask_id)[..., None].to(stay.dtype)
    return (1 - stay) / n + stay * onehot


def tweedie_probs(x_t: Tensor, score: Tensor, dsigma: Tensor, graph: str, mask_id: int | None = None) -> Tensor:
    """Unnormalised p(x_{sigma - dsigma} = y | x_sigma) = (exp(-dsigma Q) s)_y exp(dsigma Q)[x, y] (SEDD's Tweedie
    tau-leaping); exact for one token under the true score. (B, L, N)."""
    n = score.shape[-1]
    return staggered_score(score, dsigma, graph, mask_id) * transp_transition(x_t, dsigma, graph, n, mask_id)


@torch.no_grad()
def sample_sedd_euler(score_fn: ScoreFn, x: Tensor, **kw) -> tuple[Tensor, dict]:
    """SEDD Euler (tau-leaping) sampler (Lou et al. 2024, sec. 4): x_{t-dt} ~ delta_x + dt sigma'(t) R_t(x, .).
    Keywords: steps, graph, mask_id, n_states, noise, eps, denoise, prompt_mask, generator, callback (see
    `_sample_sedd`)."""
    return _sample_sedd(score_fn, x, predictor="euler", **kw)


@torch.no_grad()
def sample_sedd_analytic(score_fn: ScoreFn, x: Tensor, **kw) -> tuple[Tensor, dict]:
    """SEDD Tweedie tau-leaping ("analytic") sampler (Lou et al. 2024, sec. 4): x_{t-dt} ~ (exp(-ds Q) s)_y
    exp(ds Q)[x, y], ds = sigma(t) - sigma(t - dt); exact for a single token under the true score. Keywords as
    `sample_sedd_euler`. On the absorbing graph (score of the mask entry 1) it moves a mask to y with probability
    (e^ds - 1) s_y against Euler's dt sigma'(t) s_y; under the log-linear schedule the two are equal, e^ds - 1 =
    (1 - eps) dt / (1 - (1 - eps) t) = dt sigma'(t), so both samplers draw the same samples from the same noise
    (as SEDD's own `EulerPredictor` and `AnalyticPredictor` would). They differ under the geometric schedule and
    on the uniform graph."""
    return _sample_sedd(score_fn, x, predictor="analytic", **kw)


def _sample_sedd(score_fn: ScoreFn, x: Tensor, *, steps: int, predictor: str, graph: str = "absorb",
                 mask_id: int | None = None, n_states: int | None = None, noise: Callable = N.loglinear,
                 eps: float = 1e-5, denoise: bool = True, prompt_mask: Tensor | None = None,
                 generator: torch.Generator | None = None,
                 callback: Callable[[Tensor], None] | None = None) -> tuple[Tensor, dict]:
    """SEDD's predictor loop from t = 1 to eps, then an analytic denoising step at eps (mask probability zeroed).

    x (B, L): absorbing: mask_id where to generate, other tokens are kept; uniform: tokens outside `prompt_mask`
    are first redrawn from the uniform limit (n_states, default mask_id + 1). score_fn gets sigma (B,).
    callback(x) is called with the current tokens after every step.
    """
    graph = _check_graph(graph, mask_id)
    if steps <= 0:
        raise UserError(f"steps must be positive, got {steps}")
    if n_states is None and mask_id is None:
        raise UserError("the uniform graph needs n_states")
    n = (mask_id + 1) if n_states is None else n_states
    fixed = (x != mask_id) if graph == "absorb" and prompt_mask is None else prompt_mask
    x0 = x.clone()
    if graph == "uniform":
        limit = torch.randint(0, n, x.shape, generator=generator, device=x.device)
        x = limit if fixed is None else torch.where(fixed, x, limit)
    B = x.shape[0]
    ts = torch.linspace(1.0, eps, steps + 1, dtype=torch.float64, device=x.device)

    def scores(x, sigma):  # sigma: 0-dim float64
        return score_fn(x, sigma.float().expand(B)).double().exp()  # (B, L, N)

    for i in range(steps):
        sigma, dsig_dt = noise(ts[i])
        if predictor == "euler":
            rate = reverse_rate(x, scores(x, sigma), graph, mask_id)  # (B, L, N)
            probs = F.one_hot(x, n).double() + (ts[i] - ts[i + 1]) * dsig_dt * rate
        else:
            probs = tweedie_probs(x, scores(x, sigma), sigma - noise(ts[i + 1])[0], graph, mask_id)
        x = sample_categorical(probs.clamp(min=0), generator)  # (B, L)
        x = x if fixed is None else torch.where(fixed, x0, x)
        if callback is not None:
            callback(x)
    if denoise:  # Tweedie step from sigma(eps) to 0, never to the mask
        sigma = noise(ts[-1])[0]
        probs = tweedie_probs(x, scores(x, sigma), sigma, graph, mask_id)
        if graph == "absorb":
            probs[..., mask_id] = 0.0
        x = sample_categorical(probs.clamp(min=0), generator)
        x = x if fixed is None else torch.where(fixed, x0, x)
        if callback is not None:
            callback(x)
    return x, {"nfe": steps + int(denoise)}


def _check_graph(graph: str, mask_id: int | None) -> str:
    if graph not in GRAPHS:
        raise UserError(f"graph must be one of {GRAPHS}, got {graph!r}")
    if graph == "absorb" and mask_id is None:
        raise UserError("the absorbing graph needs mask_id")
    return graph
