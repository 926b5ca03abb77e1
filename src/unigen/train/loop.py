"""The one training loop. It knows nothing about model families: it gets a model, one loss or several objectives,
data and a config.

    result = fit(model, task.loss, data, cfg.train, run_dir)                  # one loss
    result = fit(model, [Objective("gen", ...), Objective("disc", ...)], data, cfg.train, run_dir,
                 ema_of=lambda m: m.generator)                                # adversarial (VQGAN)

One optimisation step `s`: for each objective active at `s`, in list order (see unigen.train.objective): clear the
model's gradients; run its loss on the step's `grad_accum` micro-batches (the same ones for every objective) under
bf16 autocast if asked, back-propagating loss / grad_accum; average its parameters' gradients across processes
(unigen.train.distributed); clip them to `grad_clip`; if the loss and the gradient norm are finite, step its AdamW
at its own learning rate (`lr_at`), else stop (`nonfinite="stop"`, NonFiniteError naming the step and, with several
objectives, the objective) or skip that update (`"skip"`, counted in `FitResult.skipped`). After the step, if any
objective updated, the EMA (of `ema_of(model)`, default the whole model) is updated.

Logged lines (RUN/metrics.jsonl, TensorBoard): one objective: `step, loss, lr, grad_norm, it_s, skipped` and the
loss's extra entries, as always; several: `loss` (the first objective's), `loss/<name>`, `lr/<name>`,
`grad_norm/<name>`, `<key>/<name>` for extra entries, `it_s`, `skipped` (an objective that has not run yet has no
entries; one that did not run at this step reports its latest update).

Checkpoints hold the model, the EMA (under the full model's key names), every optimizer (`optimizer.safetensors`
for one objective, `optimizer_<name>.safetensors` for several; the same names key their hyper-parameters in
state.json) and every process's RNG state. The data order is a pure function of (seed, step) (`BatchIndices`),
training noise comes from torch's global RNG, seeded per rank and saved in every checkpoint, and the eval / sample
hooks run under `torch.random.fork_rng`, so they never disturb the training stream. A run killed at any moment and
resumed from its last checkpoint therefore reproduces the uninterrupted run bit for bit on CPU.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from unigen.config import TrainConfig
from unigen.errors import NonFiniteError, UserError
from unigen.train import checkpoint as ckpt
from unigen.train.distributed import average_gradients, broadcast_from_rank0, make_accelerator, mean_across
from unigen.train.ema import EMA, submodule_prefix
from unigen.train.logs import MetricLogger, truncate_metrics, warn
from unigen.train.objective import LossFn, Objective, as_objectives
from unigen.train.optim import load_optimizer_state, lr_at, make_optimizer
from unigen.train.precision import autocast, emulated_bf16_warning, resolve_precision
from unigen.train.progress import Progress

__all__ = ["fit", "FitResult", "BatchIndices", "lr_at", "make_optimizer", "make_accelerator"]


@dataclass
class FitResult:
    step: int                                   # optimisation steps done
    loss: float                                 # last logged training loss (of the first objective)
    skipped: int = 0                            # objective updates skipped for non-finite loss/gradient
    history: list[dict] = field(default_factory=list)   # metric lines written this call


class BatchIndices:
    """Stateless data order: micro-batch k of a run is a slice of permutation number k // batches_per_epoch.

    The global batch (`batch_size` x processes) is cut into per-rank slices, so 2 processes at batch b see exactly
    the examples that 1 process sees at batch 2b.
    """

    def __init__(self, n: int, batch_size: int, world: int, rank: int, seed: int):
        self.n, self.b, self.world, self.rank, self.seed = n, batch_size, world, rank, seed
        self.global_batch = batch_size * world
        if self.global_batch > n:
            raise UserError(f"the dataset has {n} examples, fewer than one global batch ({self.global_batch}); "
                            "lower train.batch_size")
        self.per_epoch = n // self.global_batch
        self._perm_epoch, self._perm = -1, None

    def __call__(self, k: int) -> torch.Tensor:
        epoch, j = divmod(k, self.per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        start = j * self.global_batch + self.rank * self.b
        return self._perm[start:start + self.b]


@dataclass
class _Part:
    """One objective bound to this run."""
    objective: Objective
    cfg: TrainConfig                  # TrainConfig with the objective's overrides (its own schedule clock)
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    key: str                          # "optimizer" or "optimizer_<name>": checkpoint file and state.json key
    last: dict = field(default_factory=dict)   # its latest update: loss, lr, grad_norm (tensors), logs


@dataclass
class _Run:
    """Everything one `fit()` call holds."""
    acc: object
    model: nn.Module                  # the unwrapped model, on the device
    parts: list[_Part]
    ema: EMA | None
    ema_target: nn.Module | None      # the submodule the EMA follows
    data: object
    cfg: TrainConfig
    batch_indices: BatchIndices
    run_dir: Path | None
    skipped: int = 0
    autocast: Callable = contextlib.nullcontext

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    @property
    def sparse(self) -> bool:
        """Whether some step may leave an objective out (then metric lines repeat its latest values)."""
        return len(self.parts) > 1 or any(p.objective.start or p.objective.every > 1 for p in self.parts)

    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        idx = self.batch_indices(step * self.cfg.grad_accum + micro)
        return {k: v.to(self.acc.device, non_blocking=True) for k, v in self.data.batch(idx).items()}


def fit(model: nn.Module, objectives: LossFn | Objective | list[Objective], data, cfg: TrainConfig,
        run_dir: str | Path | None = None, *, resume: bool = False,
        on_eval: Callable[[nn.Module, int], dict] | None = None,
        on_sample: Callable[[nn.Module, int], None] | None = None,
        ema_of: Callable[[nn.Module], nn.Module] | None = None) -> FitResult:
    """Train `model` for `cfg.steps` optimisation steps on `data` (a unigen Dataset).

    `objectives`: a loss function `loss(model, batch)` (one objective, "main"), or a list of `Objective`s applied
    in order within each step (see the module docstring). `run_dir` receives checkpoints, `model.safetensors`,
    `ema.safetensors`, `metrics.jsonl` and `tb/`; with `resume=True` training continues from its latest
    checkpoint. `ema_of(model)` picks the submodule that gets an EMA (default the whole model; `cfg.ema_decay=0`
    turns it off). `on_eval(model, step) -> metrics` and `on_sample(model, step)` are called on the main process
    only, in eval mode, with a model whose EMA'd part holds the EMA weights.
    """
    run = _setup(model, as_objectives(objectives), data, cfg, run_dir, ema_of)
    start = 0
    if resume and run.run_dir is not None:
        start, run.skipped = _resume(run)
    if run.main and run.run_dir is not None:
        truncate_metrics(run.run_dir / "metrics.jsonl", start)
    logger = MetricLogger(run.run_dir if run.main else None)
    progress = Progress(cfg.steps, start, enabled=run.main and cfg.progress)
    result = FitResult(step=start, loss=float("nan"), skipped=run.skipped)
    clock = {"t": time.perf_counter(), "steps": 0}
    run.model.train()
    for step in range(start, cfg.steps):
        _train_step(run, step, logger)
        done = step + 1
        clock["steps"] += 1
        progress.update(done)
        if done % cfg.log_every == 0 or done == cfg.steps:
            line = _metric_line(run, done, clock)
            logger.log(line)
            result.history.append(line)
            result.loss = line.get("loss", result.loss)
            progress.set_loss(result.loss)
        _hooks(run, done, on_eval, on_sample, logger)
        if run.run_dir is not None and (done % cfg.ckpt_every == 0 or done == cfg.steps):
            _save(run, done)
    if run.run_dir is not None and start >= cfg.steps and run.main:  # resumed a finished run: a kill may have cut
        _write_weights(run)                                          # the final weights files after the last save
    progress.close()
    logger.close()
    result.step, result.skipped = max(start, cfg.steps), run.skipped
    return result


def _setup(model: nn.Module, objectives: list[Objective], data, cfg: TrainConfig, run_dir, ema_of) -> _Run:
    acc = make_accelerator()
    rank, world = acc.process_index, acc.num_processes
    model = model.to(acc.device)
    broadcast_from_rank0(model.state_dict(keep_vars=True).values())  # the same start everywhere, as DDP
    multi = len(objectives) > 1
    parts = []
    for obj in objectives:
        settings = obj.settings(cfg)
        params = obj.parameters(model)
        parts.append(_Part(obj, settings, params, make_optimizer(params, settings, obj.lr_scales(model)),
                           f"optimizer_{obj.name}" if multi else "optimizer"))
    ema = target = None
    if cfg.ema_decay > 0:
        target = ema_of(model) if ema_of is not None else model
        ema = EMA(target, cfg.ema_decay, prefix=submodule_prefix(model, target))
    order = BatchIndices(len(data), cfg.batch_size, world, rank, cfg.seed)
    run = _Run(acc, model, parts, ema, target, data, cfg, order, Path(run_dir) if run_dir is not None else None)
    precision = resolve_precision(cfg.precision, acc.device)           # once, not per micro-batch
    run.autocast = lambda: autocast(precision, acc.device)
    if rank == 0 and (msg := emulated_bf16_warning(cfg.precision, acc.device)):
        warn(msg)
    torch.manual_seed(cfg.seed * 7919 + 104_729 * (rank + 1))  # training noise stream of this rank
    return run


# --- one optimisation step -------------------------------------------------------------------------------

def _train_step(run: _Run, step: int, logger: MetricLogger) -> None:
    updated = False
    for part in run.parts:
        if part.objective.active(step):
            updated |= _step_objective(run, part, step, logger)
    if updated and run.ema is not None:
        run.ema.update(run.ema_target)


def _step_objective(run: _Run, part: _Part, step: int, logger: MetricLogger) -> bool:
    """Accumulate, average, clip and apply one objective's gradient; False if the update was skipped."""
    lr = lr_at(step - part.objective.start, part.cfg)
    for group in part.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    accum = run.cfg.grad_accum
    run.model.zero_grad(set_to_none=True)  # nothing from another objective's backward reaches this step
    loss_sum, logs = torch.zeros((), device=run.acc.device), {}
    for micro in range(accum):
        batch = run.batch(step, micro)
        broadcast_from_rank0(run.model.buffers())  # BatchNorm statistics follow rank 0, as under DDP
        with run.autocast():
            loss, logs = _split_loss(part.objective(run.model, batch, step))
        (loss.float() / accum).backward()
        loss_sum += loss.detach().float() / accum
    average_gradients(part.params)
    max_norm = run.cfg.grad_clip if run.cfg.grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(part.params, max_norm)
    loss_mean = mean_across(loss_sum)
    part.last = {"loss": loss_mean, "lr": lr, "grad_norm": grad_norm, "logs": logs}
    finite = bool(torch.isfinite(loss_mean) and torch.isfinite(grad_norm))
    if finite:
        part.optimizer.step()
    else:
        _nonfinite(run, part, step, logger)
    run.model.zero_grad(set_to_none=True)
    return finite


def _nonfinite(run: _Run, part: _Part, step: int, logger: MetricLogger) -> None:
    loss, grad_norm = part.last["loss"].item(), part.last["grad_norm"].item()
    what = "loss" if not torch.isfinite(part.last["loss"]) else "gradient"
    where = f" in objective {part.objective.name!r}" if len(run.parts) > 1 else ""
    if run.cfg.nonfinite == "stop":
        kept = run.run_dir / "checkpoints" if run.run_dir else "(no run dir)"
        raise NonFiniteError(f"non-finite {what} at step {step + 1}{where} (loss={loss}, grad_norm={grad_norm}); "
                             f"last good checkpoint kept in {kept}")
    run.skipped += 1
    skipped = "its update skipped" if where else "step skipped"
    logger.warn(f"step {step + 1}: non-finite {what}{where}, {skipped} ({run.skipped} so far)")


def _split_loss(out) -> tuple[torch.Tensor, dict]:
    if isinstance(out, tuple):
        return out[0], dict(out[1])
    return out, {}


# --- metric lines and hooks ------------------------------------------------------------------------------

def _metric_line(run: _Run, done: int, clock: dict) -> dict:
    """The metric line after `done` steps (see the module docstring for its keys)."""
    now = time.perf_counter()
    it_s = clock["steps"] / max(now - clock["t"], 1e-9)
    clock["t"], clock["steps"] = now, 0
    line: dict = {"step": done}
    ran = [p for p in run.parts if p.last]
    if len(run.parts) == 1:
        for p in ran:
            line.update(loss=p.last["loss"].item(), lr=p.last["lr"], grad_norm=p.last["grad_norm"].item())
        return {**line, "it_s": it_s, "skipped": run.skipped,
                **{k: float(v) for p in ran for k, v in p.last["logs"].items()}}
    if run.parts[0].last:
        line["loss"] = run.parts[0].last["loss"].item()
    for p in ran:
        n = p.objective.name
        line.update({f"loss/{n}": p.last["loss"].item(), f"lr/{n}": p.last["lr"],
                     f"grad_norm/{n}": p.last["grad_norm"].item()})
    return {**line, "it_s": it_s, "skipped": run.skipped,
            **{f"{k}/{p.objective.name}": float(v) for p in ran for k, v in p.last["logs"].items()}}


def _hooks(run: _Run, done: int, on_eval, on_sample, logger: MetricLogger) -> None:
    cfg = run.cfg
    if on_eval is not None and ((cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps):
        metrics = _run_hook(run, lambda m: on_eval(m, done))
        if run.main and metrics:
            logger.log({"step": done, **{f"eval/{k}": v for k, v in metrics.items()}})
    if on_sample is not None and cfg.sample_every and done % cfg.sample_every == 0:
        _run_hook(run, lambda m: on_sample(m, done))


def _run_hook(run: _Run, fn):
    """Run an eval/sample hook on the main process, in eval mode, with the EMA weights, under no_grad and without
    touching the training RNG stream; every module's train/eval mode is restored afterwards."""
    out = None
    if run.main:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), _ema_model(run) as model:
            modes = [(m, m.training) for m in model.modules()]
            model.eval()
            try:
                out = fn(model)
            finally:
                for m, training in modes:
                    m.training = training
    run.acc.wait_for_everyone()
    return out


@contextlib.contextmanager
def _ema_model(run: _Run):
    """The model the hooks see: the EMA copy when it averages the whole model; the training model with the EMA
    weights swapped into the averaged submodule (and swapped back after) when it averages a part."""
    if run.ema is None:
        yield run.model
    elif run.ema_target is run.model:
        yield run.ema.module
    else:
        saved = {k: v.clone() for k, v in run.ema_target.state_dict().items()}
        run.ema_target.load_state_dict(run.ema.module.state_dict())
        try:
            yield run.model
        finally:
            run.ema_target.load_state_dict(saved)


# --- checkpoints -----------------------------------------------------------------------------------------

def _save(run: _Run, step: int) -> None:
    acc = run.acc
    rng = acc.gather(torch.get_rng_state().unsqueeze(0).to(acc.device)).cpu()  # (world, N) uint8
    if acc.is_main_process:
        files = {"model": run.model.state_dict()}
        state = {"skipped": run.skipped, "world_size": acc.num_processes}
        for part in run.parts:
            files[part.key], state[part.key] = ckpt.optimizer_to_flat(part.optimizer)
        files["rng"] = {"cpu": rng}
        if run.sparse:  # the latest values of objectives that do not run every step go on being logged
            state["latest"] = {p.objective.name: _latest_to_json(p.last) for p in run.parts if p.last}
        if run.ema is not None:
            files["ema"] = run.ema.state_dict()
            state["ema_updates"] = run.ema.updates
        if torch.cuda.is_available():
            files["rng"]["cuda"] = torch.cuda.get_rng_state()
        ckpt.save_checkpoint(run.run_dir, step, files, state, run.cfg.keep_last)
        _write_weights(run)
    acc.wait_for_everyone()


def _latest_to_json(last: dict) -> dict:
    return {"loss": last["loss"].item(), "lr": last["lr"], "grad_norm": last["grad_norm"].item(),
            "logs": {k: float(v) for k, v in last["logs"].items()}}


def _latest_from_json(d: dict) -> dict:
    """Exact: the floats were float32 values, which JSON's shortest float64 repr keeps."""
    return {**d, "loss": torch.tensor(d["loss"], dtype=torch.float64),
            "grad_norm": torch.tensor(d["grad_norm"], dtype=torch.float64)}


def _write_weights(run: _Run) -> None:
    """RUN/model.safetensors and RUN/ema.safetensors: the latest weights, what `unigen.load` reads."""
    ckpt.atomic_save_safetensors(run.model.state_dict(), run.run_dir / "model.safetensors")
    if run.ema is not None:
        ckpt.atomic_save_safetensors(run.ema.state_dict(), run.run_dir / "ema.safetensors")


def _resume(run: _Run) -> tuple[int, int]:
    """Restore the newest intact checkpoint; returns (step, skipped). No checkpoint yet: start at step 0.

    A damaged newer checkpoint (truncated or altered file) is renamed to `damaged-step_*` with a warning naming
    the problem, and training resumes from the previous intact one. If none is intact it is a UserError.
    """
    acc, run_dir = run.acc, run.run_dir
    path, state, files, damaged = ckpt.resumable_checkpoint(run_dir)
    if path is None and damaged:
        raise UserError(f"cannot resume: no intact checkpoint in {run_dir / 'checkpoints'} ({damaged[0][1]}); "
                        "pass --overwrite to start again")
    acc.wait_for_everyone()  # every process has read its checkpoint before the main one renames damaged ones
    if acc.is_main_process:
        for folder, why in damaged:
            dest = ckpt.set_aside(folder)
            warn(f"{why}; renamed it to {dest.name} and resuming from {path.name}")
        ckpt.remove_leftovers(run_dir)
    acc.wait_for_everyone()
    if path is None:
        return 0, 0
    try:
        return _restore(run, path, state, files)
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"checkpoint {path} does not fit this run: {' '.join(str(e).split())}") from None


def _restore(run: _Run, path: Path, state: dict, files: dict) -> tuple[int, int]:
    ckpt.load_state_into(run.model, files["model"], f"{path}/model.safetensors")
    saved = sorted(k for k in files if k == "optimizer" or k.startswith("optimizer_"))
    wanted = sorted(part.key for part in run.parts)
    if saved != wanted:
        raise UserError(f"checkpoint {path} holds {', '.join(saved) or 'no optimizer'} but this run has "
                        f"{', '.join(wanted)}: it was trained with other objectives")
    for part in run.parts:
        load_optimizer_state(part.optimizer, ckpt.optimizer_from_flat(files[part.key], state[part.key]))
        if part.objective.name in state.get("latest", {}):
            part.last = _latest_from_json(state["latest"][part.objective.name])
    if run.ema is not None:
        if "ema" not in files:
            raise UserError(f"{path} has no EMA weights but train.ema_decay > 0")
        run.ema.load_state_dict(files["ema"], f"{path}/ema.safetensors")
        run.ema.updates = state["ema_updates"]
    rng, world, rank = files["rng"]["cpu"], run.acc.num_processes, run.acc.process_index
    if state["world_size"] == world:
        torch.set_rng_state(rng[rank].clone())
        if "cuda" in files["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(files["rng"]["cuda"])
    else:  # a different number of processes cannot replay the same noise; continue deterministically
        torch.manual_seed(int(state["step"]) * 1_000_003 + rank)
    return int(state["step"]), int(state.get("skipped", 0))
