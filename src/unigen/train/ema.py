"""Exponential moving average of weights, on torch's `AveragedModel`, with the usual warm-up of the decay.

decay_n = min(decay, (1 + n) / (10 + n)) after n updates, so a short run's EMA is not dominated by its random
initialisation (the warm-up used by ema-pytorch and many diffusion codebases).

The EMA may cover a submodule only (`fit(..., ema_of=lambda m: m.generator)`): its weights are then named by the
full model's keys (`generator.conv.weight`), so RUN/ema.safetensors lays over RUN/model.safetensors.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from unigen.errors import UserError
from unigen.train.checkpoint import load_state_into


class EMA:
    """EMA of a module's parameters and buffers; `.module` is the averaged copy, `prefix` its path in the model."""

    def __init__(self, model: nn.Module, decay: float, prefix: str = ""):
        self.decay, self.prefix = decay, prefix
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

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights under the full model's key names."""
        return {self.prefix + k: v for k, v in self.module.state_dict().items()}

    def load_state_dict(self, sd: dict[str, torch.Tensor], source: str) -> None:
        """Load weights saved by `state_dict`; keys outside the averaged submodule are a UserError naming `source`."""
        foreign = [k for k in sd if not k.startswith(self.prefix)]
        if foreign:
            raise UserError(f"{source} does not match this model: {len(foreign)} keys outside the averaged "
                            f"submodule {self.prefix[:-1]!r} (e.g. {foreign[:3]})")
        load_state_into(self.module, {k[len(self.prefix):]: v for k, v in sd.items()}, source)

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


def submodule_prefix(model: nn.Module, sub: nn.Module) -> str:
    """The key prefix of `sub` in `model.state_dict()`: "" for the model itself, "generator." for a child."""
    for name, m in model.named_modules():
        if m is sub:
            return f"{name}." if name else ""
    raise UserError(f"ema_of(model) returned a {type(sub).__name__} that is not the model or one of its submodules")
