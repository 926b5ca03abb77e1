"""Held-out likelihood of the discrete LMs (`unigen eval`): nats per token, perplexity exp(nats per token) and bits
per byte on the test windows, from each method's bound (its entry `bound` in task.METHODS):

    mdlm  LLaDA's stratified estimator of the NELBO (exactly l of the n tokens masked, weight n / l; lower
          variance than MDLM's continuous-time t ~ U[1e-3, 1], which is used with time_cond)  (an upper bound)
    sedd  SEDD's diffusion-weighted denoising score entropy, t ~ U[1e-3, 1]  (an upper bound)
    bd3   BD3-LM's block NELBO, per-block t ~ U[1e-3, 1]                     (an upper bound)
    ar    the exact negative log-likelihood

A bound is `bound(lm, x0 (S, T), mc, batch_size) -> (nats (S,), Monte-Carlo standard error (S,))` with `mc`
Monte-Carlo samples per sequence, drawn from torch's global RNG. In the summary `se` is the standard error over
held-out sequences (sampling and MC noise together), `mc_se` the Monte-Carlo part alone.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from unigen.errors import UserError
from unigen.families.discrete_diffusion import clipsearch as CS
from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion.ar import ar_token_nll
from unigen.families.discrete_diffusion.bd3 import bd3_nelbo
from unigen.families.discrete_diffusion.likelihood import elbo_stratified, nelbo_mdlm, summarize
from unigen.families.discrete_diffusion.network import DiscreteLM, score_denoiser, with_bos
from unigen.families.discrete_diffusion.sedd import sedd_token_loss

EVAL_EPS = 1e-3         # diffusion bounds integrate t over [EVAL_EPS, 1]
EVAL_MC = 4             # Monte-Carlo samples per held-out sequence (the benchmarks pass mc=32)
QUICK_SEQS, QUICK_MC = 8, 2
SUMMARY = ("ppl", "nats_per_token", "se", "mc_se", "bits_per_byte")  # what `heldout` reports, in this order

Bound = Callable[[DiscreteLM, Tensor, int, int], tuple[Tensor, Tensor]]


def _per_row(est: Tensor) -> tuple[Tensor, Tensor]:
    """(S, M) Monte-Carlo samples -> each row's mean and the standard error of that mean. (S,), (S,)."""
    return est.mean(dim=1), est.std(dim=1) / math.sqrt(est.shape[1])


def bound_mdlm(lm: DiscreteLM, x0: Tensor, mc: int, bs: int) -> tuple[Tensor, Tensor]:
    """The stratified estimator needs a denoiser that ignores t (it is then the same bound with eps = 0)."""
    if lm.time_cond:
        out = nelbo_mdlm(lm, x0, mask_id=lm.mask_id, n_samples=mc, batch_size=bs, eps=EVAL_EPS)
    else:
        out = elbo_stratified(lm, x0, mask_id=lm.mask_id, n_samples=mc, batch_size=bs)
    return out["nll"], out["stderr"]


def bound_sedd(lm: DiscreteLM, x0: Tensor, mc: int, bs: int) -> tuple[Tensor, Tensor]:
    """SEDD's loss terms summed per sequence, `mc` antithetic times per sequence."""
    d = score_denoiser(lm)
    S = x0.shape[0]
    ts = torch.stack([N.sample_t(mc, eps=EVAL_EPS, device=x0.device) for _ in range(S)]).flatten()  # (S*M,)
    rows = x0.repeat_interleave(mc, dim=0)  # (S*M, L)
    est = torch.cat([sedd_token_loss(d.log_score, rows[a:a + bs], ts[a:a + bs], **d.graph_kw).sum(dim=1).double()
                     for a in range(0, S * mc, bs)])  # (S*M,)
    return _per_row(est.view(S, mc))


def bound_bd3(lm: DiscreteLM, x0: Tensor, mc: int, bs: int) -> tuple[Tensor, Tensor]:
    S = x0.shape[0]
    rows = x0.repeat_interleave(mc, dim=0)  # (S*M, L)
    est = torch.cat([bd3_nelbo(lm, rows[a:a + bs], block_size=lm.config.block_size, mask_id=lm.mask_id,
                               n_samples=1, eps=EVAL_EPS, time_cond=lm.time_cond)["nll"]
                     for a in range(0, S * mc, bs)])  # (S*M,): one draw each
    return _per_row(est.view(S, mc).double())


def nll_ar(lm: DiscreteLM, x0: Tensor, mc: int, bs: int) -> tuple[Tensor, Tensor]:
    nll = torch.cat([ar_token_nll(lm, with_bos(x0[a:a + bs], lm.bos_id), lm.mask_id).double().sum(dim=1)
                     for a in range(0, x0.shape[0], bs)])  # (S,) exact
    return nll, torch.zeros_like(nll)


@torch.no_grad()
def heldout(lm: DiscreteLM, bound: Bound, data, *, seqs: int, mc: int, batch_size: int, seed: int,
            exact: bool = False) -> tuple[dict[str, float], Tensor]:
    """`bound` on the first `seqs` windows of `data` (a test Dataset; at most all of them) with `mc` Monte-Carlo
    samples each, after seeding torch's global RNG with `seed`. Returns the metrics of `unigen eval` (SUMMARY,
    "seqs", "mc_samples", "tokens", "exact": whether the bound is the exact NLL) and each window's nats (S,)."""
    S = min(seqs, len(data))
    x0 = data.batch(torch.arange(S))["ids"].to(next(lm.parameters()).device)  # (S, T)
    torch.manual_seed(seed)
    nll, mc_se = bound(lm, x0, mc, batch_size)  # (S,), (S,)
    pixels = bool(data.info.get("pixels"))  # one token = one 8-bit pixel = one dimension (data/pixels.py)
    n_bytes = x0.numel() if pixels else sum(len(data.tokenizer.decode(row).encode("utf-8")) for row in x0.tolist())
    out = summarize(nll, torch.full_like(nll, x0.shape[1]), mc_se=mc_se, n_bytes=n_bytes)
    metrics = {k: out[k] for k in SUMMARY}
    if pixels:  # bits per byte of pixels is bits/dim, with its standard error
        metrics.update(bits_per_dim=metrics.pop("bits_per_byte"), bits_per_dim_se=out["se"] / math.log(2))
    return {**metrics, "seqs": S, "mc_samples": 0 if exact else mc, "tokens": S * x0.shape[1],
            "exact": float(exact)}, nll


@torch.no_grad()
def search_clipping(lm: DiscreteLM, data, grid: list[tuple[float, float]], *, batches: int, batch_size: int,
                seed: int, antithetic: bool = True) -> dict:
    """BD3-LM's data-driven clipped schedule (`clipsearch`): for each of the first `batches` test batches of
    `batch_size` windows (bd3lms' order: batches outer, intervals inner, one draw each from torch's global RNG seeded
    with `seed`), the block losses of every interval of `grid` under the run's training options (resample,
    ignore_bos). Returns {"table": rows beta, omega, nelbo (mean nats/token), var (`clipsearch.batch_variance`
    averaged over batches)}, "best": the row of lowest variance, "batches", "batch_size"}."""
    m = lm.config
    K = min(batches, len(data) // batch_size)
    if K < 1:
        raise UserError(f"the clip search needs at least one test batch of {batch_size} windows "
                        f"(the test split has {len(data)})")
    for beta, omega in grid:
        CS.check_interval(beta, omega)
    device = next(lm.parameters()).device
    torch.manual_seed(seed)
    var, mean = torch.zeros(len(grid), dtype=torch.float64), torch.zeros(len(grid), dtype=torch.float64)
    for k in range(K):
        x0 = data.batch(torch.arange(k * batch_size, (k + 1) * batch_size))["ids"].to(device)  # (B, T)
        for j, (beta, omega) in enumerate(grid):
            losses = CS.block_losses(lm, x0, beta=beta, omega=omega, block_size=m.block_size, mask_id=lm.mask_id,
                                     time_cond=lm.time_cond, resample=m.resample, ignore_bos=m.ignore_bos,
                                     antithetic=antithetic)  # (B, n_blocks)
            var[j] += CS.batch_variance(losses) / K
            mean[j] += float(losses.double().mean()) / K
    table = [{"beta": b, "omega": o, "nelbo": float(mean[j]), "var": float(var[j])} for j, (b, o) in enumerate(grid)]
    return {"table": table, "best": CS.choose(table), "batches": K, "batch_size": batch_size}
