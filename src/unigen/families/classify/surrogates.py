"""Smooth surrogates of discrete classification metrics, used as losses: soft accuracy, soft macro / micro F1 and
sigmoid-F1 (Benedict et al., "sigmoidF1: A Smooth F1 Score Surrogate Loss for Multilabel Classification", 2021,
eq. 3-5; the "metrics as losses" idea). Notation:

    p_ik = softmax(z_i / tau)_k   (multi-class)   or   sigmoid(z_ik / tau)   (multi-label, sigmoidF1's S(u))
    tp_k = sum_i p_ik y_ik        fp_k = sum_i p_ik (1 - y_ik)        fn_k = sum_i (1 - p_ik) y_ik
    F1_k = 2 tp_k / (2 tp_k + fp_k + fn_k)

The counts are sums over the batch: F1 does not decompose over samples, so the surrogate is a batch statistic.
With one-hot (0/1) p the counts are the exact confusion counts, so every surrogate equals the exact metric; as the
temperature tau -> 0 the softmax tends to the one-hot argmax and the surrogate to the exact metric. A class with
2 tp_k + fp_k + fn_k = 0 (absent from labels and predictions) scores 0, as scikit-learn's `f1_score(labels=all,
zero_division=0)` does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unigen.errors import UserError


def at_least_float32(z: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 logits (autocast) upcast to float32; float64 kept."""
    return z.to(torch.promote_types(z.dtype, torch.float32))


def soft_predictions(z: torch.Tensor, tau: float) -> torch.Tensor:
    """p = softmax(z / tau) over the last axis of logits z (B, K), in float32; tau > 0."""
    if not tau > 0:
        raise UserError(f"the surrogate temperature must be > 0, got {tau}")
    return torch.softmax(at_least_float32(z) / tau, dim=-1)                      # (B, K)


def soft_confusion(p: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft (tp_k, fp_k, fn_k), each (K,), of predictions p (B, K) in [0, 1] against 0/1 targets y (B, K)."""
    y = y.to(p.dtype)
    tp = (p * y).sum(0)
    fp = (p * (1 - y)).sum(0)
    fn = ((1 - p) * y).sum(0)
    return tp, fp, fn


def f1_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """F1 = 2 tp / (2 tp + fp + fn) elementwise, 0 where the denominator is 0 (nothing to find, nothing found)."""
    den = 2 * tp + fp + fn
    return torch.where(den > 0, 2 * tp / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(den))


def soft_macro_f1(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Macro F1 = mean_k F1_k of predictions p (B, K) against 0/1 targets y (B, K) (sigmoidF1 eq. 5, averaged)."""
    return f1_from_counts(*soft_confusion(p, y)).mean()


def soft_micro_f1(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Micro F1 = 2 sum tp / (2 sum tp + sum fp + sum fn): the counts pooled over classes first."""
    tp, fp, fn = soft_confusion(p, y)
    return f1_from_counts(tp.sum(), fp.sum(), fn.sum())


def soft_accuracy(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the probability of the true class, sum_k p_ik y_ik (B, K) -> scalar."""
    return (p * y.to(p.dtype)).sum(-1).mean()


def sigmoid_f1(z: torch.Tensor, y: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """sigmoidF1 loss for multi-label logits z (B, K) and 0/1 targets y (B, K): 1 - macro F1 of
    p = sigmoid(z / tau) (sigmoidF1 eq. 3-5 with beta = 1 / tau, eta = 0)."""
    if not tau > 0:
        raise UserError(f"the surrogate temperature must be > 0, got {tau}")
    return 1 - soft_macro_f1(torch.sigmoid(at_least_float32(z) / tau), y)


METRICS = {"soft_accuracy": soft_accuracy, "soft_macro_f1": soft_macro_f1, "soft_micro_f1": soft_micro_f1}


def surrogate_loss(z: torch.Tensor, y: torch.Tensor, metric: str, tau: float, weight: float) -> torch.Tensor:
    """(1 - w) CE(z, y) + w (1 - metric(softmax(z / tau), onehot(y))) for logits z (B, K) and labels y (B,);
    `metric` is a key of METRICS or "ce" (cross-entropy alone), w in [0, 1]."""
    if not 0 <= weight <= 1:
        raise UserError(f"the surrogate weight must be in [0, 1], got {weight}")
    ce = F.cross_entropy(at_least_float32(z), y)
    if metric == "ce":
        return ce
    if metric not in METRICS:
        raise UserError(f"loss {metric!r} is not one of: ce, {', '.join(METRICS)}")
    m = METRICS[metric](soft_predictions(z, tau), F.one_hot(y, z.shape[-1]))
    return (1 - weight) * ce + weight * (1 - m)
