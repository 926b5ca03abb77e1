"""Ground truth of a detection batch: padded tensors -> per-image (labels, boxes), checked (DETR's input contract).

A batch holds `boxes` (B, M, 4) normalised (cx, cy, w, h) and `box_labels` (B, M) with -1 for padding. Class ids
run 0..K-1 (num_classes K = max id + 1; the network adds the no-object class K itself, detr issue #108). Boxes
must lie inside the image (corners in [0, 1]) with positive width and height.
"""
from __future__ import annotations

import torch

from unigen.errors import UserError
from unigen.families.detection.boxes import check_corners, cxcywh_to_xyxy

Targets = list[tuple[torch.Tensor, torch.Tensor]]


def check_targets(boxes: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    """UserError (one line) for a class id outside [0, K) or -1, or a box outside the image or degenerate."""
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:2]:
        raise UserError(f"detection targets need boxes (B, M, 4) and box_labels (B, M); got "
                        f"{tuple(boxes.shape)} and {tuple(labels.shape)}")
    real = labels >= 0
    bad = (labels < -1) | (labels >= num_classes)
    if bad.any():
        raise UserError(f"box label {int(labels[bad][0])} is out of range: class ids must be in [0, {num_classes}) "
                        "(or -1 for padding)")
    corners = cxcywh_to_xyxy(boxes[real].float())                              # (N, 4)
    check_corners(corners, "target boxes")
    eps = 1e-6                                                                  # float rounding of cx +- w / 2
    outside = ((corners < -eps) | (corners > 1 + eps)).any(1)
    if outside.any():
        raise UserError(f"target box {boxes[real][outside][0].tolist()} (cx, cy, w, h) lies outside the image: "
                        "corners must be in [0, 1]")


def targets_from_batch(boxes: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Targets:
    """Checked per-image (labels (T_b,), boxes (T_b, 4)) from padded boxes (B, M, 4) and labels (B, M)."""
    check_targets(boxes, labels, num_classes)
    return [(labels[b][labels[b] >= 0], boxes[b][labels[b] >= 0].float()) for b in range(labels.shape[0])]
