"""Box arithmetic of DETR (Carion et al. 2020, Sec. 3.1 and Appendix A.1): format changes, IoU and generalized IoU.

Notation: boxes are (cx, cy, w, h) as the network predicts them (sigmoid, normalised to the image) or corners
(x0, y0, x1, y1). GIoU (Rezatofighi et al. 2019, Algorithm 1): GIoU = IoU - |C \\ (A u B)| / |C|, with C the
smallest box enclosing A and B; 1 for identical boxes, in (-1, 1], and never above IoU.
"""
from __future__ import annotations

import torch

from unigen.errors import UserError


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre / size -> corners."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) corners -> centre / size."""
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


def area(b: torch.Tensor) -> torch.Tensor:
    """(N, 4) corners -> (N,) areas."""
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise IoU (N, M) and union (N, M) of corner boxes a (N, 4), b (M, 4)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])                          # (N, M, 2)
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])                          # (N, M, 2)
    inter = (rb - lt).clamp(min=0).prod(-1)                                     # (N, M)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return inter / union, union


def check_corners(b: torch.Tensor, what: str) -> None:
    """UserError unless every box (N, 4) has x1 > x0 and y1 > y0 and finite coordinates (GIoU needs |C| > 0)."""
    if not torch.isfinite(b).all():
        raise UserError(f"{what}: box coordinates must be finite")
    bad = ~((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise UserError(f"{what}: degenerate box {b[i].tolist()} (needs x1 > x0 and y1 > y0)")


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU (N, M) of corner boxes a (N, 4), b (M, 4); degenerate boxes are a UserError."""
    check_corners(a, "generalized_box_iou")
    check_corners(b, "generalized_box_iou")
    iou, union = box_iou(a, b)
    lt = torch.minimum(a[:, None, :2], b[None, :, :2])
    rb = torch.maximum(a[:, None, 2:], b[None, :, 2:])
    enclosing = (rb - lt).prod(-1)                                              # |C| (N, M), > 0
    return iou - (enclosing - union) / enclosing
