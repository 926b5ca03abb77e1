"""Classification metrics and the cross-entropy objective shared by every classifier (the classify family, the
MNIST feature network of the Frechet distance)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy of logits (B, K) against labels y (B,), computed in float32, and the batch's top-1
    accuracy as a log entry `train_acc`."""
    loss = F.cross_entropy(logits.float(), y)
    acc = (logits.argmax(-1) == y).float().mean()
    return loss, {"train_acc": acc.item()}


@torch.no_grad()
def accuracy(model: nn.Module, data, batch_size: int = 500, limit: int | None = None) -> float:
    """Top-1 accuracy of `model` on the first `limit` (default all) examples of a labelled Dataset."""
    model.eval()
    n = len(data) if limit is None else min(limit, len(data))
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, n, batch_size):
        b = data.batch(torch.arange(i, min(i + batch_size, n)))
        correct += (model(b["x"].to(device)).argmax(-1).cpu() == b["y"]).sum().item()
    return correct / n
