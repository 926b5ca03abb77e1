"""The optimizer and the learning-rate schedule of `fit()`: AdamW with decoupled weight decay on matrices only, and
linear warm-up followed by cosine decay (or a constant rate)."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from unigen.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to `lr` over `warmup_steps`, then cosine decay to `min_lr` at `steps` (or constant)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def make_optimizer(params: nn.Module | Iterable[nn.Parameter], cfg: TrainConfig,
                   lr_scale: dict[int, float] | None = None) -> torch.optim.Optimizer:
    """AdamW over `params` (a module's parameters, or a list of them); weight decay only on matrices (not on
    biases, norms, embeddings of size 1-D). Parameters that do not require gradients are left out.

    `lr_scale` maps `id(parameter)` to a multiplier of the learning rate (DETR's backbone at 1/10 of the
    transformer's); each group keeps its multiplier as `group["lr_scale"]`, which `fit` applies at every step."""
    params = [p for p in (params.parameters() if isinstance(params, nn.Module) else params) if p.requires_grad]
    scale_of = lambda p: float((lr_scale or {}).get(id(p), 1.0))
    groups = []
    for scale in dict.fromkeys([1.0] + [scale_of(p) for p in params]):        # 1.0 first: the plain two groups
        mine = [p for p in params if scale_of(p) == scale]
        extra = {} if scale == 1.0 else {"lr_scale": scale}
        groups += [{"params": [p for p in mine if p.ndim >= 2], "weight_decay": cfg.weight_decay, **extra},
                   {"params": [p for p in mine if p.ndim < 2], "weight_decay": 0.0, **extra}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)  # one kernel: ~4x faster


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)` with every per-parameter state tensor laid out like its parameter.

    torch's loader gives the moments the layout of the saved (contiguous) tensors; the fused AdamW kernel then pairs
    the elements of a parameter with transposed strides (a `w.T` view, Glow's 1x1 convolution from a QR) with the
    wrong elements of its moments, and a resumed run silently diverges from the uninterrupted one."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, v in optimizer.state.get(p, {}).items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=v.dtype).copy_(v)   # p's strides
