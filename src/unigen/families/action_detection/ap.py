"""Per-frame detection metrics of online action detection, as TRN's and OadTR's evaluation code computes them.

- **per-frame AP** (TRN `lib/utils/eval_utils.py`, OadTR `compute_result_multilabel`): for each non-background
  class, scikit-learn's `average_precision_score` of the class score against "frame is of this class", over the
  frames that are not ambiguous; mAP is the mean over classes. scikit-learn's AP is sum_n (R_n - R_{n-1}) P_n at
  the *distinct* score thresholds: tied frames enter together (`average_precision`).
- **calibrated AP** (De Geest et al., "Online Action Detection", ECCV 2016, eq. 2; OadTR
  `frame_level_map_n_cap_thumos`): frames sorted by decreasing score, and at the k-th frame, if it is positive,
  with TP true and FP = k - TP false positives so far, cPrec = w TP / (w TP + FP) with w = #neg / #pos;
  cAP = mean of cPrec over the positives. The same loop with w = 1 gives the loop AP = mean of TP / k. Ties are
  ordered by frame index (a stable sort); OadTR's `np.argsort(-p)` leaves tie order unspecified, so the loop
  numbers agree with it, and with scikit-learn, on untied scores.
"""
from __future__ import annotations

import math

import torch

from unigen.errors import UserError


def _check(s: torch.Tensor, pos: torch.Tensor) -> None:
    if s.dim() != 1 or s.shape != pos.shape:
        raise UserError(f"scores and targets must be equal-length 1-D tensors, got {tuple(s.shape)} and "
                        f"{tuple(pos.shape)}")


def average_precision(s: torch.Tensor, pos: torch.Tensor) -> float:
    """scikit-learn's average precision of scores s (N,) against boolean targets pos (N,): precision P_n and recall
    R_n at each distinct threshold (ties together), AP = sum_n (R_n - R_{n-1}) P_n; nan without positives."""
    _check(s, pos)
    n_pos = int(pos.sum())
    if n_pos == 0:
        return math.nan
    order = torch.argsort(-s.double(), stable=True)
    s_sorted, hit = s.double()[order], pos[order].double()
    tp, seen = hit.cumsum(0), torch.arange(1, len(s) + 1, dtype=torch.float64)
    last = torch.ones(len(s), dtype=torch.bool)                   # last frame of each tie group = a threshold
    last[:-1] = s_sorted[1:] != s_sorted[:-1]
    precision, recall = tp[last] / seen[last], tp[last] / n_pos
    d_recall = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((d_recall * precision).sum())


def calibrated_ap(s: torch.Tensor, pos: torch.Tensor, w: float | None = None) -> tuple[float, float]:
    """(loop AP, calibrated AP) of scores s (N,) against boolean targets pos (N,), OadTR's loop: frames sorted by
    decreasing score (ties in frame order), cPrec = w TP / (w TP + FP) at each positive, w = #neg / #pos unless
    given; both nan without positives."""
    _check(s, pos)
    n_pos = int(pos.sum())
    if n_pos == 0:
        return math.nan, math.nan
    w = (len(s) - n_pos) / n_pos if w is None else w
    order = torch.argsort(-s.double(), stable=True)
    hit = pos[order]
    tp = hit.double().cumsum(0)[hit]                                # TP at each positive's rank
    k = torch.nonzero(hit).squeeze(1).double() + 1                  # its rank (1-based)
    fp = k - tp
    return float((tp / k).mean()), float((w * tp / (w * tp + fp)).mean())


def frame_map(probs: torch.Tensor, y: torch.Tensor, ambiguous: torch.Tensor | None = None,
              background: int = 0) -> dict[str, float | list[float]]:
    """mAP and cAP over the non-background classes of per-frame scores probs (N, K) against labels y (N,),
    ambiguous frames (N,) left out: {"mAP", "cAP", "AP": per class, "cAP_per_class"}; classes without a positive
    frame are left out of the means."""
    if probs.dim() != 2 or y.shape != probs.shape[:1]:
        raise UserError(f"probs must be (N, K) and labels (N,), got {tuple(probs.shape)} and {tuple(y.shape)}")
    K = probs.shape[1]
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= K):
        raise UserError(f"labels must be class ids in [0, {K}), got values in [{int(y.min())}, {int(y.max())}]")
    keep = torch.ones_like(y, dtype=torch.bool) if ambiguous is None else ~ambiguous
    p, t = probs[keep], y[keep]
    classes = [k for k in range(K) if k != background]
    ap = [average_precision(p[:, k], t == k) for k in classes]
    cap = [calibrated_ap(p[:, k], t == k)[1] for k in classes]

    def mean(xs):
        xs = [x for x in xs if not math.isnan(x)]
        return sum(xs) / len(xs) if xs else math.nan
    return {"mAP": mean(ap), "cAP": mean(cap), "AP": ap, "cAP_per_class": cap}


def onset_latency(pred: torch.Tensor, y: torch.Tensor, background: int = 0) -> tuple[list[int], int]:
    """For each action instance (a maximal run of one non-background class in y (L,)), the frames from its onset
    to the first frame inside it where the prediction pred (L,) is its class; returns (latencies of the instances
    detected, number of instances)."""
    latencies, n = [], 0
    start = 0
    for t in range(1, len(y) + 1):
        if t == len(y) or y[t] != y[start]:
            c = int(y[start])
            if c != background:
                n += 1
                hits = torch.nonzero(pred[start:t] == c)
                if len(hits):
                    latencies.append(int(hits[0]))
            start = t
    return latencies, n
