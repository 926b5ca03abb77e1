"""Run by tests/test_distributed.py under torchrun (and once without): trains a fixed model, saves its weights."""
import sys

import torch
from torch import nn

from unigen.config import TrainConfig
from unigen.train import fit
from unigen.train.checkpoint import atomic_save_safetensors


class Regression:
    def __init__(self, n=512, d=8):
        g = torch.Generator().manual_seed(0)
        self.tensors = {"x": torch.randn(n, d, generator=g)}
        self.tensors["y"] = torch.sin(self.tensors["x"] @ torch.randn(d, 1, generator=g))

    def __len__(self):
        return 512

    def batch(self, idx):
        return {k: v[idx] for k, v in self.tensors.items()}


def loss(model, batch):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean()


if __name__ == "__main__":
    out, batch_size = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
    cfg = TrainConfig(steps=15, batch_size=batch_size, lr=3e-2, ema_decay=0, grad_clip=0.5, progress=False)
    fit(model, loss, Regression(), cfg)
    import os
    if int(os.environ.get("RANK", "0")) == 0:
        atomic_save_safetensors(model.state_dict(), out)
