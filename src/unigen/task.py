"""The contract between a model family and the generic machinery (training loop, CLI, run directories).

A family (continuous diffusion, masked diffusion LM, classifier, ...) subclasses `Task` once. The training loop
only ever sees `task.loss`; the CLI only `build`, `sample` and `evaluate`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from unigen.errors import UserError

M = TypeVar("M", bound=nn.Module)


def unwrap(model: nn.Module, cls: type[M] = nn.Module, what: str = "") -> M:
    """The network inside DDP-style wrappers (which hold it as `.module`): the first `cls` on the way in, or,
    for the default `cls`, the innermost module. A UserError naming `what` if there is no `cls` inside."""
    inner = model
    while hasattr(inner, "module") and (cls is nn.Module or not isinstance(inner, cls)):
        inner = inner.module
    if not isinstance(inner, cls):
        raise UserError(f"expected {what or cls.__name__}, got {type(model).__name__}")
    return inner


class Task:
    """Glue for one family: build its network, its loss, how to sample and how to evaluate."""

    model_config: type = object       # dataclass type of `Config.model` for this family
    samplers: tuple[str, ...] = ()    # names `unigen sample --sampler` accepts; the first is the default

    def build(self, cfg, data_info: dict[str, Any]) -> nn.Module:
        """The network for `cfg.model`, sized from `data_info` (the training Dataset's `info`: image shape, vocab
        size, classes). Invalid model settings are a UserError. Called after the weights seed is set."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """Scalar training loss on one batch; noise comes from torch's global RNG (seeded and checkpointed by fit)."""
        raise NotImplementedError

    def sample(self, model: nn.Module, cfg, *, run_dir: Path, out_dir: Path, n: int, sampler: str, steps: int,
               seed: int, **kw) -> dict[str, Any]:
        """Draw `n` samples, write them under `out_dir`, return a summary (paths, NFE). `sampler` is one of
        `self.samplers`; `steps` 0 means the sampler's default. Extra options (guidance, prompt) come in `kw`."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, cfg, *, run_dir: Path, **kw) -> dict[str, float]:
        """Metrics of a trained model (the ones `unigen eval --json` prints). Unknown `kw` options are a
        UserError (e.g. `nfe_sweep=True` for a family without one)."""
        raise NotImplementedError
