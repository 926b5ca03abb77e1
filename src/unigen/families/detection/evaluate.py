"""COCO-style evaluation of detections: mAP (IoU 0.50:0.95), AP50, AP75 through pycocotools' `COCOeval`, the
measurement of the DETR paper (Table 1), and DETR's post-processing of the network's outputs into detections.

Every query is a detection (as DETR's `PostProcess` feeds COCO): its score is the largest class probability
without the no-object class, its label that class, its box the predicted one in pixels.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from torch import nn

from unigen.families.detection.boxes import cxcywh_to_xyxy


@torch.no_grad()
def postprocess(logits: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]):
    """logits (B, Q, K+1), boxes (B, Q, 4) normalised cxcywh -> scores (B, Q), labels (B, Q), xyxy pixels (B, Q, 4)."""
    prob = logits.float().softmax(-1)[..., :-1]                                 # drop no-object
    scores, labels = prob.max(-1)
    h, w = size
    xyxy = cxcywh_to_xyxy(boxes.float()) * torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
    return scores, labels, xyxy


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 100):
    """The final decoder layer's detections of images x (N, C, H, W): postprocess's triple over all N."""
    was = model.training
    model.eval()
    outs = [model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    model.train(was)
    logits = torch.cat([o["logits"][-1] for o in outs])
    boxes = torch.cat([o["boxes"][-1] for o in outs])
    return postprocess(logits, boxes, tuple(x.shape[-2:]))


def coco_dicts(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
               xyxy: torch.Tensor, size: tuple[int, int], num_classes: int) -> tuple[dict, list[dict]]:
    """COCO ground truth (dataset dict) and results list; gt_boxes (N, M, 4) normalised cxcywh, labels -1 = none.

    Ids start at 1: pycocotools marks an unmatched box with id 0."""
    h, w = size
    gt_xyxy = cxcywh_to_xyxy(gt_boxes.float()) * torch.tensor([w, h, w, h], dtype=torch.float32)
    images = [{"id": i + 1, "width": w, "height": h} for i in range(len(gt_labels))]
    anns = []
    for i, j in (gt_labels >= 0).nonzero().tolist():
        x0, y0, x1, y1 = gt_xyxy[i, j].tolist()
        anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(gt_labels[i, j]) + 1,
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    cats = [{"id": k + 1, "name": str(k)} for k in range(num_classes)]
    results = [{"image_id": i + 1, "category_id": int(labels[i, q]) + 1, "score": float(scores[i, q]),
                "bbox": [float(a), float(b), float(c - a), float(d - b)]}
               for i in range(len(scores)) for q, (a, b, c, d) in enumerate(xyxy[i].tolist())]
    return {"info": {}, "images": images, "annotations": anns, "categories": cats}, results


def coco_map(gt: dict, results: list[dict]) -> dict[str, float]:
    """{"mAP", "AP50", "AP75"} of `results` against `gt` (coco_dicts' pair) by pycocotools' COCOeval (bbox)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):                             # pycocotools prints its progress
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.asarray(ev.stats, dtype=float)
    return {"mAP": float(stats[0]), "AP50": float(stats[1]), "AP75": float(stats[2])}
