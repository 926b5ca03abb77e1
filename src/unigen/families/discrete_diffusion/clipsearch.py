"""BD3-LM's data-driven noise schedule (Arriola et al. 2025, sec. 5 "Data-driven noise schedules"): the clipped
range [beta, omega] of the per-block mask rate t_b ~ U[beta, omega] whose loss estimator has the lowest variance,
found by a grid search over held-out batches as bd3lms does at the end of each validation epoch
(`Diffusion.validation_step` / `_clipped_schedule_search`, grid of `Metrics.init_valid_vars`).

Notation (BD3-LM eq. 8-10 with the clipped schedule of sec. 5):
    l_b(x; beta, omega) = (1/B') sum_{i in block b} 1[x_t^i = m] (1/t_b) (-log p_theta(x^i | x_t^b, x^{<b}))
                          the loss of block b (nats per token), t_b ~ U[beta, omega], x_t^b ~ q(. | x^b) (resampled
                          into [beta, omega] when the model trains with resampling, as in bd3lms)
    Var(beta, omega)    = (1/K) sum_k  var_{(x, b) in batch k} l_b(x; beta, omega)
                          the unbiased variance of the block losses of one batch, averaged over K batches
    (beta*, omega*)     = argmin_{grid} Var(beta, omega)
    grid                = {(eps, 1)} + {(max(i, eps), i + w) : w in widths, i = 0, delta, ..., 1 - w}, eps = 1e-3
                          (bd3lms' released script: widths 0.5, 0.6, 0.7, 0.8, 0.9 and delta 0.05: 36 intervals)

The loss weight is the NELBO's 1/t_b for every interval (bd3lms switches to 1 when beta > 0.5; we keep 1/t, see
benchmarks/text_quality.md "BD3-LM as bd3lms trains it"). Only (eps, 1) is the NELBO; the other means are the
clipped losses, reported beside their variances.
"""
from __future__ import annotations

import torch
from torch import Tensor

from unigen.errors import UserError
from unigen.families.discrete_diffusion.bd3 import EPS, bd3_loss_terms

WIDTHS = (0.5, 0.6, 0.7, 0.8, 0.9)  # bd3lms README / scripts: algo.clip_search_widths
DELTA = 0.05                        # bd3lms configs/algo/bd3lm.yaml: clip_search_delta
MAX_BATCHES = 100                   # bd3lms: "only report variance over 100 batches"


def clip_grid(widths=WIDTHS, delta: float = DELTA, eps: float = EPS) -> list[tuple[float, float]]:
    """bd3lms' candidate intervals: (eps, 1), then for each width w the windows [max(i, eps), i + w] with
    i = 0, delta, ..., 1 - w (both ends included), in that order and without repeats."""
    if not 0 < delta <= 1:
        raise UserError(f"the grid step delta must be in (0, 1], got {delta}")
    grid = {(eps, 1.0): None}
    for w in widths:
        if not 0 < w <= 1:
            raise UserError(f"clip search widths must be in (0, 1], got {w}")
        for k in range(round((1 - w) / delta) + 1):
            lo = round(k * delta, 10)
            grid[(max(lo, eps), round(lo + w, 10))] = None
    return list(grid)


def check_interval(beta: float, omega: float) -> None:
    """A candidate [beta, omega] needs 0 < beta < omega <= 1 (beta > 0: the weight 1/t is finite)."""
    if not (0 < beta < omega <= 1):
        raise UserError(f"a clipping interval needs 0 < beta < omega <= 1, got beta={beta}, omega={omega}")


def block_losses(model, x0: Tensor, *, beta: float, omega: float, block_size: int, mask_id: int,
                 **kw) -> Tensor:
    """l_b(x; beta, omega) for every sequence and block of x0 (B, n): the per-token loss terms of
    `bd3.bd3_loss_terms` (kw: time_cond, resample, ignore_bos, antithetic, t, x_t) averaged within each block,
    as bd3lms' `nlls.reshape(B, -1, block_size).mean(-1)`. (B, n_blocks)."""
    check_interval(beta, omega)
    terms = bd3_loss_terms(model, x0, block_size=block_size, mask_id=mask_id, beta=beta, omega=omega, **kw)
    return terms.view(x0.shape[0], -1, block_size).mean(dim=-1)  # (B, n_blocks)


def batch_variance(losses: Tensor) -> float:
    """The unbiased variance of all block losses of one batch (bd3lms' `agg_var.var()`). losses (B, n_blocks)."""
    if losses.numel() < 2:
        raise UserError("the variance of the loss needs at least two blocks per batch")
    return float(losses.double().var())


def choose(table: list[dict]) -> dict:
    """The row of lowest variance ("var"); the first such row on ties (bd3lms' strict `<`)."""
    if not table:
        raise UserError("the clip search has no candidate interval")
    best = table[0]
    for row in table[1:]:
        if row["var"] < best["var"]:
            best = row
    return best
