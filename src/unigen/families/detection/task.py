"""DETR object detection (Carion et al. 2020): the family behind `shapes-detr` (build / loss / evaluate / detect).

The loss is `losses.detr_loss` on the targets of the batch (checked: a box outside the image or a class id out of
range is a one-line UserError); the backbone's LR is `model.backbone_lr_scale` times the transformer's through
`Objective.lr_scale`. `evaluate` gives COCO mAP / AP50 / AP75 on the held-out split through pycocotools;
`detect` returns the boxes, labels and scores of the queries above a score threshold.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from unigen.config import Config
from unigen.data import load as load_data
from unigen.errors import UserError
from unigen.families.detection.evaluate import coco_dicts, coco_map, predict
from unigen.families.detection.losses import detr_loss
from unigen.families.detection.network import DETR, DetectorConfig
from unigen.families.detection.targets import check_targets, targets_from_batch
from unigen.task import Task, unwrap
from unigen.train import Objective

QUICK_IMAGES = 200          # held-out images scored by the quick evaluation during training


def check_config(m: DetectorConfig, data_info: dict) -> None:
    """UserError for a model config that cannot work on this data."""
    if "num_classes" not in data_info or "max_boxes" not in data_info:
        raise UserError(f"dataset {data_info.get('name')!r} has no boxes; detection needs data.name=scenes")
    sizes = {k: getattr(m, k) for k in ("d_model", "heads", "enc_layers", "dec_layers", "ffn", "queries",
                                        "backbone_width")}
    if any(v < 1 for v in sizes.values()):
        raise UserError(f"model sizes must be >= 1, got {sizes}")
    if m.d_model % m.heads or m.d_model % 4:
        raise UserError(f"model.d_model={m.d_model} must be a multiple of 4 and of model.heads={m.heads}")
    if m.backbone_width % 8:
        raise UserError(f"model.backbone_width={m.backbone_width} must be a multiple of 8 (GroupNorm groups)")
    if m.queries < data_info["max_boxes"]:
        raise UserError(f"model.queries={m.queries} must be >= the most objects in an image "
                        f"({data_info['max_boxes']})")
    if not 0 <= m.dropout < 1 or not 0 < m.eos_coef <= 1 or m.backbone_lr_scale <= 0 or m.backbone_stages < 0:
        raise UserError("need 0 <= model.dropout < 1, 0 < model.eos_coef <= 1, model.backbone_lr_scale > 0, "
                        "model.backbone_stages >= 0")
    if min(m.cost_class, m.cost_bbox, m.cost_giou) < 0:
        raise UserError("model.cost_class, cost_bbox and cost_giou must be >= 0")


class DetectionTask(Task):
    model_config = DetectorConfig

    def build(self, cfg: Config, data_info: dict) -> nn.Module:
        check_config(cfg.model, data_info)
        net = DETR(cfg.model, data_info["shape"][0], data_info["num_classes"])
        net.weights = (cfg.model.cost_class, cfg.model.cost_bbox, cfg.model.cost_giou)   # policy, not weights
        net.eos_coef = cfg.model.eos_coef
        return net

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        net = unwrap(model, DETR)
        targets = targets_from_batch(batch["boxes"], batch["box_labels"], net.class_embed.out_features - 1)
        out = model(batch["x"])
        return detr_loss(out["logits"], out["boxes"], targets, net.weights, net.eos_coef)

    def objectives(self, cfg: Config) -> list[Objective]:
        """One AdamW; the backbone at `backbone_lr_scale` times the LR (the paper: 1e-5 vs 1e-4)."""
        scale = cfg.model.backbone_lr_scale
        return [Objective("main", self.loss, lr_scale=lambda m: [(unwrap(m, DETR).backbone.parameters(), scale)])]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, cfg: Config, *, run_dir: Path, quick: bool = False, **kw) -> dict:
        if kw:
            raise UserError(f"detection eval has no option(s) {', '.join(kw)}")
        data = load_data(cfg.data, "test")
        t = data.tensors
        n = min(QUICK_IMAGES, len(data)) if quick else len(data)
        k = data.info["num_classes"]
        check_targets(t["boxes"][:n], t["box_labels"][:n], k)
        scores, labels, xyxy = predict(unwrap(model, DETR), t["x"][:n])
        gt, results = coco_dicts(t["boxes"][:n], t["box_labels"][:n], scores, labels, xyxy,
                                 tuple(t["x"].shape[-2:]), k)
        return {**coco_map(gt, results), "images": n}

    @torch.no_grad()
    def detect(self, model: nn.Module, cfg: Config, batch: dict, threshold: float = 0.5) -> list[dict]:
        """Per image of batch["x"] (B, C, H, W): {"boxes": [[x0, y0, x1, y1] pixels], "labels", "scores"} of the
        queries whose score (top class probability, no-object excluded) is at least `threshold`."""
        if not 0 <= threshold <= 1:
            raise UserError(f"--threshold must be in [0, 1], got {threshold}")
        scores, labels, xyxy = predict(unwrap(model, DETR), batch["x"])
        out = []
        for s, l, b in zip(scores, labels, xyxy):
            keep = (s >= threshold).nonzero().flatten()
            keep = keep[s[keep].argsort(descending=True)]
            out.append({"boxes": b[keep].tolist(), "labels": l[keep].tolist(), "scores": s[keep].tolist()})
        return out


TASK = DetectionTask()
