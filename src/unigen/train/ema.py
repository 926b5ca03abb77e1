"""Exponential moving average of weights, on torch's `AveragedModel`, with the usual warm-up of the decay.

decay_n = min(decay, (1 + n) / (10 + n)) after n updates, so a short run's EMA is not dominated by its random
initialisation (the warm-up used by ema-pytorch and many diffusion codebases).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class EMA:
    """EMA of a module's parameters and buffers; `.module` is the averaged copy."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=self._avg, use_buffers=True)
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def updates(self) -> int:
        """Number of updates so far (AveragedModel's `n_averaged`; restored on resume)."""
        return int(self.averaged.n_averaged)

    @updates.setter
    def updates(self, n: int) -> None:
        self.averaged.n_averaged.fill_(n)

    def _avg(self, ema_params, params, num_averaged):
        n = int(num_averaged)
        d = min(self.decay, (1 + n) / (10 + n))
        floats = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if floats:
            e, p = zip(*floats)
            torch._foreach_lerp_(list(e), list(p), 1 - d)
        for e, p in zip(ema_params, params):
            if not e.is_floating_point():
                e.copy_(p)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)
