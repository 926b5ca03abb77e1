"""What `fit()` optimises: one loss, or several objectives, each a loss with its own parameters and its own AdamW.

    fit(model, task.loss, data, cfg)                        # one objective, named "main": today's form
    fit(model, [Objective("gen", gen_loss, params=lambda m: m.generator.parameters()),
                Objective("disc", disc_loss, params=lambda m: m.discriminator.parameters(), start=10_000)],
        data, cfg)                                          # VQGAN: generator and discriminator alternate

The contract, per optimisation step `s` (0-based):
- The objectives active at `s` (`s >= start` and `(s - start) % every == 0`) run in list order; the order is the
  generator / discriminator alternation. Each one sees the same `grad_accum` micro-batches of step `s`.
- `loss(model, batch)` returns a scalar tensor, or `(scalar, {name: float})` for extra metric-line entries; it gets
  the unwrapped model (never a DDP wrapper) and draws any noise from torch's global RNG (checkpointed by `fit`).
  With `with_step=True` it is called as `loss(model, batch, step=s)`: for terms that switch on at a step, such as
  VQGAN's adversarial weight, which taming-transformers sets to 0 before `disc_start` (`adopt_weight`).
- Before an objective's first backward every gradient of the model is cleared, and only that objective's
  parameters are clipped, averaged across processes and stepped. So a generator loss that back-propagates through
  the discriminator leaves the discriminator untouched, and the discriminator's step never sees generator-loss
  gradients. Parameter sets may overlap (a shared parameter is then stepped by both optimizers).
- `params(model)` is called once with the unwrapped model (None = all of its parameters); parameters that do not
  require gradients are left out. Each objective gets its own AdamW, decay / no-decay split as `make_optimizer`.
- `lr_scale(model)` -> [(parameters, multiplier), ...] gives parameter groups their own LR, the schedule's times
  the multiplier (DETR trains its backbone at 1/10 of the transformer's LR); the log shows the unscaled LR.
- `lr`, `betas`, `weight_decay`, `warmup_steps`, `schedule`: None takes TrainConfig's value. An objective's LR
  schedule (`lr_at`) runs on its own clock, `s - start` over `steps - start` steps, so a discriminator that starts
  at step 10 000 warms up from there; with `start=0` it is TrainConfig's schedule.
- The name (letters, digits, `_`, `-`) appears in metric keys (`loss/<name>`, `lr/<name>`, `grad_norm/<name>`)
  and checkpoint files (`optimizer_<name>.safetensors`) when there are several objectives. A single objective
  logs `loss`, `lr`, `grad_norm` and saves `optimizer.safetensors`, exactly as a plain loss function does.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Union

import torch
from torch import nn

from unigen.config import TrainConfig
from unigen.errors import UserError

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], Union[torch.Tensor, tuple[torch.Tensor, dict]]]
_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class Objective:
    name: str
    loss: LossFn
    params: Callable[[nn.Module], Iterable[nn.Parameter]] | None = None   # None = every parameter of the model
    lr: float | None = None                                               # None = TrainConfig's value (same below)
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None
    schedule: str | None = None
    start: int = 0                                                        # first step that updates (disc_start)
    every: int = 1                                                        # then every `every`-th step
    with_step: bool = False                                               # call loss(model, batch, step=s)
    lr_scale: Callable[[nn.Module], Iterable[tuple[Iterable[nn.Parameter], float]]] | None = None
    # (parameters, multiplier) pairs: those parameters' LR is the schedule's times the multiplier (DETR's backbone)

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int):
        """This objective's loss on one micro-batch of optimisation step `step`."""
        return self.loss(model, batch, step=step) if self.with_step else self.loss(model, batch)

    def active(self, step: int) -> bool:
        """Whether this objective updates at (0-based) optimisation step `step`."""
        return step >= self.start and (step - self.start) % self.every == 0

    def settings(self, cfg: TrainConfig) -> TrainConfig:
        """`cfg` with this objective's overrides, its `steps` counted from `start` (the schedule's own clock)."""
        beta1, beta2 = self.betas if self.betas is not None else (cfg.beta1, cfg.beta2)
        return dataclasses.replace(
            cfg, lr=_pick(self.lr, cfg.lr), beta1=beta1, beta2=beta2,
            weight_decay=_pick(self.weight_decay, cfg.weight_decay),
            warmup_steps=_pick(self.warmup_steps, cfg.warmup_steps), schedule=_pick(self.schedule, cfg.schedule),
            steps=max(cfg.steps - self.start, 1))

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters this objective steps: `params(model)` (or all), without duplicates, each checked to be
        a parameter of `model`; those that do not require gradients are left out."""
        own = {id(p) for p in model.parameters()}
        chosen = list(model.parameters() if self.params is None else self.params(model))
        if any(id(p) not in own for p in chosen):
            raise UserError(f"objective {self.name!r}: params(model) returned a tensor that is not a parameter "
                            "of the model being trained")
        seen, out = set(), []
        for p in chosen:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        if not out:
            raise UserError(f"objective {self.name!r} has no trainable parameters")
        return out


    def lr_scales(self, model: nn.Module) -> dict[int, float]:
        """{id(parameter): LR multiplier} from `lr_scale(model)`; each multiplier must be > 0 and finite."""
        out: dict[int, float] = {}
        for params, scale in (self.lr_scale(model) if self.lr_scale is not None else ()):
            if not (isinstance(scale, (int, float)) and 0 < scale < float("inf")):
                raise UserError(f"objective {self.name!r}: an LR multiplier must be > 0 and finite, got {scale!r}")
            out.update({id(p): float(scale) for p in params})
        return out


def _pick(mine, base):
    return base if mine is None else mine


def as_objectives(objectives: LossFn | Objective | list[Objective]) -> list[Objective]:
    """A plain loss function is the single objective "main"; a list is checked (names, start, every, schedule)."""
    if isinstance(objectives, Objective):
        objectives = [objectives]
    elif callable(objectives):
        return [Objective("main", objectives)]
    objectives = list(objectives)
    if not objectives or not all(isinstance(o, Objective) for o in objectives):
        raise UserError("fit() takes a loss function or a non-empty list of Objective")
    names = [o.name for o in objectives]
    for o in objectives:
        if not isinstance(o.name, str) or not _NAME.fullmatch(o.name):
            raise UserError(f"objective name {o.name!r} must be letters, digits, '_' or '-'")
        if names.count(o.name) > 1:
            raise UserError(f"two objectives are named {o.name!r}")
        if not callable(o.loss):
            raise UserError(f"objective {o.name!r}: loss must be callable")
        if not (isinstance(o.start, int) and o.start >= 0 and isinstance(o.every, int) and o.every >= 1):
            raise UserError(f"objective {o.name!r}: start must be >= 0 and every >= 1 (got {o.start}, {o.every})")
        if o.schedule not in (None, "cosine", "constant"):
            raise UserError(f"objective {o.name!r}: schedule must be 'cosine' or 'constant', got {o.schedule!r}")
    return objectives
