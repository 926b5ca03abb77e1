"""Hungarian matching of DETR (Carion et al. 2020, Eq. 1 and Appendix A.1): the permutation of the N predictions
that minimises sum_i L_match(y_i, yhat_sigma(i)), with

    L_match = -lambda_cls * p_hat(c_i) + lambda_L1 * ||b_i - b_hat||_1 + lambda_giou * (-GIoU(b_i, b_hat))

(lambda = 1, 5, 2 in the paper). The class term uses the probability, not its log, as the paper says. The
assignment is scipy's `linear_sum_assignment` (the one third-party import of this family's math, done lazily, as
the reference does); the costs are pure torch.
"""
from __future__ import annotations

import torch

from unigen.families.detection.boxes import cxcywh_to_xyxy, generalized_box_iou


def match_cost(logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               w_class: float = 1.0, w_l1: float = 5.0, w_giou: float = 2.0) -> torch.Tensor:
    """Cost matrix (Q, T) between Q predictions (logits (Q, K+1), cxcywh boxes (Q, 4)) and T targets."""
    prob = logits.float().softmax(-1)                                          # (Q, K+1)
    cost_class = -prob[:, labels]                                              # (Q, T)
    cost_l1 = torch.cdist(boxes.float(), target.float(), p=1)                  # (Q, T)
    cost_giou = -generalized_box_iou(cxcywh_to_xyxy(boxes.float()), cxcywh_to_xyxy(target.float()))
    return w_class * cost_class + w_l1 * cost_l1 + w_giou * cost_giou


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, boxes: torch.Tensor, targets: list[tuple[torch.Tensor, torch.Tensor]],
                    weights: tuple[float, float, float] = (1.0, 5.0, 2.0)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each image b: (query indices, target indices), both (T_b,) int64, the optimal one-to-one assignment.

    logits (B, Q, K+1), boxes (B, Q, 4) cxcywh; targets[b] = (labels (T_b,), boxes (T_b, 4) cxcywh), T_b <= Q.
    """
    from scipy.optimize import linear_sum_assignment

    out = []
    for b, (labels, target) in enumerate(targets):
        if len(labels) == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            out.append((empty, empty))
            continue
        cost = match_cost(logits[b], boxes[b], labels, target, *weights)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
    return out
