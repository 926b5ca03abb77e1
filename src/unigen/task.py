"""The contract between a model family and the generic machinery (training loop, CLI, run directories).

A family subclasses `Task` once. Two things are required, the rest are capabilities a family offers when it can:

    required    model_config                 the dataclass of `Config.model` for this family
                build(cfg, data_info)        -> nn.Module (parameters only: no noise, no loss inside)
                loss(model, batch)           -> scalar | (scalar, logs); noise from torch's global RNG
    optional    objectives(cfg)              -> [unigen.train.Objective, ...]: several optimizers (GANs); without
                                                it `fit` trains `loss` with one optimizer
                ema_of(model)                -> the submodule that gets an EMA (default: the whole model)
    capability  sample(model, cfg, *, run_dir, out_dir, n, sampler, steps, seed, **kw) -> summary dict
                  with `samplers`: the names `--sampler` accepts, the default first
                evaluate(model, cfg, *, run_dir, quick=False, **kw) -> {metric: float}
                embed(model, cfg, batch) -> Tensor          representations (MAE, CLIP, CPC, ...)
                detect(model, cfg, batch) -> list[dict]     boxes / segments (DETR, online action detection)
                act(model, cfg, observation) -> dict        an agent's next action (GUI agent)

The CLI asks for a capability with `require(task, "sample", ...)`, which returns the bound method or raises a
UserError that names what the family can do instead (`unigen sample` on a classifier run exits 2 with it).
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
from torch import nn

from unigen.errors import UserError

M = TypeVar("M", bound=nn.Module)

CAPABILITIES = {
    "sample": "draw samples",
    "evaluate": "evaluate",
    "embed": "embed inputs",
    "detect": "detect objects or actions",
    "act": "act",
}


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
    """Glue for one family: build its network and its loss; capabilities (see the module docstring) are methods a
    subclass defines when the family has them."""

    model_config: type = object

    def build(self, cfg, data_info: dict[str, Any]) -> nn.Module:
        """The network for `cfg.model`, sized from `data_info` (the training Dataset's `info`: image shape, vocab
        size, classes). Invalid model settings are a UserError. Called after the weights seed is set."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """Scalar training loss on one batch; noise comes from torch's global RNG (seeded and checkpointed by fit)."""
        raise NotImplementedError


def capabilities(task: Task) -> tuple[str, ...]:
    """The capabilities `task` offers, in `CAPABILITIES` order."""
    return tuple(name for name in CAPABILITIES if callable(getattr(task, name, None)))


def samplers(task: Task) -> tuple[str, ...]:
    """The sampler names of a task that can sample (the default first); () for one that cannot."""
    return tuple(getattr(task, "samplers", ())) if "sample" in capabilities(task) else ()


def require(task: Task, capability: str, name: str = "") -> Callable:
    """`task`'s method for `capability`, or a UserError saying that this family (`name`) cannot do it and what
    it can do instead."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; known: {', '.join(CAPABILITIES)}")
    if capability in capabilities(task):
        return getattr(task, capability)
    has = capabilities(task)
    what = f"task {name!r}" if name else type(task).__name__
    extra = " (it has no samplers)" if capability == "sample" else ""
    raise UserError(f"{what} cannot {CAPABILITIES[capability]}{extra}; it can: {', '.join(has) or 'only train'}")
