"""Image classification: the family behind `vit-mnist`, `mlp-digits` and `mlp-shapes` (build / loss / evaluate).

The loss and the accuracy are `unigen.metrics.classification`'s, shared with the MNIST feature network of the
Frechet distance; `random_shift` is this family's training augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unigen.config import Config
from unigen.data import load as load_data
from unigen.errors import UserError
from unigen.families.classify.surrogates import METRICS, soft_macro_f1, surrogate_loss
from unigen.metrics.classification import accuracy, cross_entropy
from unigen.models.vit import ViT, vit_config
from unigen.task import Task, unwrap


@dataclass
class ClassifierConfig:
    arch: str = "vit"           # vit | mlp
    size: str = "tiny"          # vit: a size preset of unigen.models.vit.vit_config
    patch: int = 4              # vit: patch side (must divide the image side)
    pool: str = "cls"           # vit: cls | mean
    pos: str = "learned"        # vit: learned | rope2d
    hidden: int = 256           # mlp: hidden width
    dropout: float = 0.0
    shift: int = 0              # training augmentation: random translation by up to `shift` pixels (0: none)
    loss: str = "ce"            # ce | soft_accuracy | soft_macro_f1 | soft_micro_f1 (surrogates.py)
    surrogate_weight: float = 1.0   # w in (1 - w) CE + w (1 - soft metric); unused with loss=ce
    temperature: float = 1.0    # tau of the surrogate's softmax(z / tau); -> 0 approaches the exact metric


class MLPClassifier(nn.Module):
    """Two hidden layers of GELU; the baseline for tiny images (digits)."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, num_classes)


class ClassifyTask(Task):
    model_config = ClassifierConfig

    def build(self, cfg: Config, data_info: dict) -> nn.Module:
        m: ClassifierConfig = cfg.model
        if "num_classes" not in data_info:
            raise UserError(f"dataset {cfg.data.name!r} has no labels; classification needs digits, mnist or shapes")
        c, h, w = data_info["shape"]
        k = data_info["num_classes"]
        if m.patch < 1 or m.hidden < 1:
            raise UserError(f"model.patch and model.hidden must be >= 1, got patch={m.patch} hidden={m.hidden}")
        if not 0 <= m.dropout < 1:
            raise UserError(f"model.dropout must be in [0, 1), got {m.dropout}")
        if not 0 <= m.shift < min(h, w):
            raise UserError(f"model.shift must be in [0, {min(h, w)}) for {h}x{w} images, got {m.shift}")
        if m.arch == "mlp":
            net = MLPClassifier(c * h * w, m.hidden, k, m.dropout)
        elif m.arch == "vit":
            if h % m.patch or w % m.patch:
                raise UserError(f"model.patch={m.patch} does not divide the image size {h}x{w}")
            net = ViT(vit_config(m.size, image_size=h, patch=m.patch, channels=c, num_classes=k, pool=m.pool,
                                 pos=m.pos, dropout=m.dropout))
        else:
            raise UserError(f"model.arch={m.arch!r} is not one of: vit, mlp")
        if m.loss != "ce" and m.loss not in METRICS:
            raise UserError(f"model.loss={m.loss!r} is not one of: ce, {', '.join(METRICS)}")
        if not (0 <= m.surrogate_weight <= 1 and m.temperature > 0):
            raise UserError(f"model.surrogate_weight must be in [0, 1] and model.temperature > 0, "
                            f"got {m.surrogate_weight} and {m.temperature}")
        net.train_shift = m.shift  # read by `loss`; a training policy, not a weight
        net.train_loss = (m.loss, m.temperature, m.surrogate_weight)
        return net

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        x = random_shift(batch["x"], getattr(unwrap(model), "train_shift", 0))
        metric, tau, w = getattr(unwrap(model), "train_loss", ("ce", 1.0, 1.0))
        logits = model(x)                                                       # (B, K)
        ce, logs = cross_entropy(logits, batch["y"])
        return (ce, logs) if metric == "ce" else (surrogate_loss(logits, batch["y"], metric, tau, w), logs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, cfg: Config, *, run_dir: Path, quick: bool = False, **kw) -> dict:
        if kw:
            raise UserError(f"classification eval has no option(s) {', '.join(kw)}")
        data = load_data(cfg.data, "test")
        n = min(len(data), 2000) if quick else len(data)
        b = data.batch(torch.arange(n))
        model.eval()
        device = next(model.parameters()).device
        pred = torch.cat([model(x.to(device)).argmax(-1).cpu() for x in b["x"].split(500)])   # (n,)
        k = data.info["num_classes"]
        return {"accuracy": accuracy(model, data, limit=n),
                "macro_f1": soft_macro_f1(F.one_hot(pred, k).double(), F.one_hot(b["y"], k)).item()}


def random_shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """Translate each image of x (B, C, H, W) by its own integer offset in [-k, k]^2, filling with the edge pixels
    (the background for MNIST), as in the random-crop-after-padding augmentation. Offsets from torch's global RNG."""
    if k == 0:
        return x
    B, C, H, W = x.shape
    padded = F.pad(x, (k, k, k, k), mode="replicate")                     # (B, C, H + 2k, W + 2k)
    dy, dx = torch.randint(0, 2 * k + 1, (2, B, 1), device=x.device)      # (B, 1) each
    rows = dy + torch.arange(H, device=x.device)                          # (B, H)
    cols = dx + torch.arange(W, device=x.device)                          # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


TASK = ClassifyTask()
