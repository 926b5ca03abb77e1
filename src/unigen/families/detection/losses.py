"""The set loss of DETR (Carion et al. 2020, Eq. 2 and Appendix A.2), with auxiliary decoding losses (Sec. 3.2).

For the matched permutation sigma_hat (matcher.py):

    L = sum_i [ -w(c_i) log p_hat_sigma(i)(c_i) ] / sum_i w(c_i)               cross-entropy over all N queries,
        + 1{c_i != no-object} [ lambda_L1 ||b_i - b_hat||_1 + lambda_giou (1 - GIoU) ] / N_boxes

w(no-object) = 0.1 (down-weighting the no-object class "by a factor 10"), 1 for the classes; lambda_L1 = 5,
lambda_giou = 2. The cross-entropy is a weighted mean (torch's `cross_entropy` with class weights), the box terms
are summed and divided by N_boxes, the number of target boxes in the *global* batch averaged per process
(all-reduce sum / world size, clamped >= 1), so that the average of the processes' gradients equals one process's
gradient at the whole batch. Every decoder layer's output gets the same loss with its own matching; they are summed.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from unigen.families.detection.boxes import cxcywh_to_xyxy, generalized_box_iou
from unigen.families.detection.matcher import hungarian_match

Targets = list[tuple[torch.Tensor, torch.Tensor]]   # per image: labels (T,), boxes (T, 4) cxcywh


def global_num_boxes(targets: Targets, device: torch.device | str = "cpu") -> float:
    """N_boxes: target boxes summed over the processes, divided by the number of processes, clamped >= 1."""
    n = torch.tensor([float(sum(len(labels) for labels, _ in targets))], device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(n)
        world = dist.get_world_size()
    return box_normaliser(n.item(), world)


def box_normaliser(total_boxes: float, world_size: int) -> float:
    """N_boxes from the global count: total / world size, at least 1 (a process may hold no box at all)."""
    return max(total_boxes / world_size, 1.0)


def set_loss(logits: torch.Tensor, boxes: torch.Tensor, targets: Targets, matches: Targets, num_boxes: float,
             eos_coef: float = 0.1) -> dict[str, torch.Tensor]:
    """`loss_ce`, `loss_bbox` (L1), `loss_giou` (1 - GIoU) of one decoder layer: logits (B, Q, K+1), boxes (B, Q, 4)."""
    B, Q, K1 = logits.shape
    weight = torch.ones(K1, device=logits.device)
    weight[-1] = eos_coef                                                       # the no-object class, id K
    target_class = torch.full((B, Q), K1 - 1, dtype=torch.int64, device=logits.device)
    batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)])
    query_idx = torch.cat([q for q, _ in matches])
    target_class[batch_idx, query_idx] = torch.cat([labels[t] for (labels, _), (_, t) in zip(targets, matches)])
    loss_ce = F.cross_entropy(logits.float().transpose(1, 2), target_class, weight)   # weighted mean over B * Q
    pred = boxes[batch_idx, query_idx].float()                                  # (M, 4)
    true = torch.cat([b[t] for (_, b), (_, t) in zip(targets, matches)]).float()   # (M, 4)
    loss_bbox = F.l1_loss(pred, true, reduction="none").sum() / num_boxes
    giou = torch.diag(generalized_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(true))) if len(true) else pred.sum(1)
    loss_giou = (1 - giou).sum() / num_boxes
    return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}


def detr_loss(logits: torch.Tensor, boxes: torch.Tensor, targets: Targets, weights: tuple[float, float, float] =
              (1.0, 5.0, 2.0), eos_coef: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss over decoder layers: logits (L, B, Q, K+1), boxes (L, B, Q, 4), layer L-1 the final one.

    `weights` = (lambda_cls, lambda_L1, lambda_giou) of the matching cost; the loss weighs its terms 1, lambda_L1,
    lambda_giou (the reference's weight_dict: the cross-entropy always at 1). Returns the scalar
    and, for the log, the final layer's terms and its class error (% of matched queries given the wrong class).
    """
    num_boxes = global_num_boxes(targets, logits.device)
    total = logits.new_zeros((), dtype=torch.float32)
    for layer in range(logits.shape[0]):
        matches = hungarian_match(logits[layer].detach(), boxes[layer].detach(), targets, weights)
        terms = set_loss(logits[layer], boxes[layer], targets, matches, num_boxes, eos_coef)
        total = total + terms["loss_ce"] + weights[1] * terms["loss_bbox"] + weights[2] * terms["loss_giou"]
    logs = {k: float(v.detach()) for k, v in terms.items()}
    logs["class_error"] = class_error(logits[-1], targets, matches)
    return total, logs


@torch.no_grad()
def class_error(logits: torch.Tensor, targets: Targets, matches: Targets) -> float:
    """100 - accuracy (%) of the predicted class of the matched queries (DETR's `class_error` log)."""
    pred = torch.cat([logits[b, q].argmax(-1) for b, (q, _) in enumerate(matches)])
    true = torch.cat([labels[t] for (labels, _), (_, t) in zip(targets, matches)])
    return 100.0 * (1 - (pred == true).float().mean().item()) if len(true) else 0.0
