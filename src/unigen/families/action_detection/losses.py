"""Training losses of the online action detectors, on one clip: the frames T-1 before the scored ones (the
window's history), the n scored frames, and l_d frames after them whose labels train the anticipation.

    current     cross-entropy of each scored frame's scores against its label           (every model)
    future      cross-entropy of the i-th anticipated step against the label i+1 frames ahead, i < l_d
                (TRN's decoder, OadTR's decoder; Xu et al. Sec. 3.3, Wang et al. eq. 8)
    frame       cross-entropy of a linear classifier of each frame's own feature (every model): it trains the
                frame CNN on single frames, the stand-in for the papers' features from a per-frame trained
                two-stream network, so that every head starts from the same kind of features
    early       IDN's early-embedding cross-entropy on every window frame (Eun et al. Sec. 3.2)
    contrast    IDN's contrastive loss between x~_t and x~_0: d^2 for same labels, max(0, m - d)^2 otherwise

Ambiguous frames carry no label: they are left out of every term, as of the evaluation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unigen.families.action_detection.windows import windows

IGNORE = -100


def masked_labels(y: torch.Tensor, ambiguous: torch.Tensor) -> torch.Tensor:
    """Labels y (B, L) with ambiguous frames replaced by IGNORE."""
    return y.masked_fill(ambiguous, IGNORE)


def ce(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of scores (..., K) against labels (...), IGNORE left out (0 if nothing is left)."""
    y = y.reshape(-1)
    if not (y != IGNORE).any():
        return scores.sum() * 0
    return F.cross_entropy(scores.reshape(-1, scores.shape[-1]).float(), y, ignore_index=IGNORE)


def contrastive(emb: torch.Tensor, y_win: torch.Tensor, margin: float) -> torch.Tensor:
    """IDN's contrastive term: embeddings emb (N, T, e) of windows whose last frame is x_0, labels y_win (N, T)."""
    d = (emb - emb[:, -1:]).float().norm(dim=-1)[:, :-1]                            # (N, T - 1)
    y_t, y_0 = y_win[:, :-1], y_win[:, -1:]
    valid = (y_t != IGNORE) & (y_0 != IGNORE)
    if not valid.any():
        return emb.sum() * 0
    same = (y_t == y_0).float()
    term = same * d ** 2 + (1 - same) * F.relu(margin - d) ** 2
    return term[valid].mean()


def detection_loss(out: dict[str, torch.Tensor], y: torch.Tensor, ambiguous: torch.Tensor, T: int, n: int,
                   l_d: int, margin: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum of the terms above that the model's outputs `out` call for; y, ambiguous (B, T - 1 + n + l_d)."""
    lab = masked_labels(y, ambiguous)
    first = T - 1
    terms = {"current": ce(out["scores"], lab[:, first: first + n])}
    if "frame" in out:                                                                # (B, T - 1 + n, K)
        terms["frame"] = ce(out["frame"], lab[:, : first + n])
    if "future" in out:                                                               # (B, n, l_d, K)
        ahead = torch.stack([lab[:, first + 1 + i: first + 1 + i + n] for i in range(l_d)], 2)   # (B, n, l_d)
        terms["future"] = ce(out["future"], ahead)
    if "emb" in out:                                                                  # IDN
        y_win = windows(lab[:, : first + n, None], T, n)[..., 0]                     # (B, n, T)
        terms["early"] = ce(out["early"], y_win)
        terms["contrast"] = contrastive(out["emb"].flatten(0, 1), y_win.flatten(0, 1), margin)
    total = sum(terms.values())
    return total, {k: float(v.detach()) for k, v in terms.items()}
