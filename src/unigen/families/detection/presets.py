"""The detection presets."""
from __future__ import annotations

from unigen.config import Config, SampleConfig, TrainConfig
from unigen.data.scenes import ScenesData
from unigen.families.detection.network import DetectorConfig


def shapes_detr() -> Config:
    """DETR on procedural scenes of 1-6 overlapping shapes (48x48): COCO mAP on held-out scenes.

    The paper's losses, matching, clip 0.1, weight decay 1e-4 and backbone LR = 1/10 of the transformer's; a small
    network, no dropout and torch's default initialisation (the run measured in benchmarks/detection.md), and LR
    1e-3 / 1e-4 instead of 1e-4 / 1e-5 so that a few thousand steps suffice."""
    return Config(task="detection", preset="shapes-detr", data=ScenesData(),
                  model=DetectorConfig(dropout=0.0, backbone_width=16, xavier_init=False),
                  train=TrainConfig(steps=3000, batch_size=16, lr=1e-3, weight_decay=1e-4, grad_clip=0.1,
                                    warmup_steps=0, schedule="constant", ema_decay=0.0, ckpt_every=1000,
                                    log_every=50, eval_every=0),
                  sample=SampleConfig())


PRESETS = {"shapes-detr": shapes_detr}
