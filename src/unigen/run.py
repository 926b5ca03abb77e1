"""The importable functions behind the CLI: `train`, `load`, `sample`, `evaluate`, `detect`. Tests call them directly.

A run directory holds everything needed to rebuild its model (Hugging Face style):

    RUN/config.json       the resolved Config          RUN/data_info.json   shapes/vocab the model was sized from
    RUN/model.safetensors weights                      RUN/ema.safetensors  EMA weights (what `load` prefers)
    RUN/tokenizer.json    text runs                    RUN/checkpoints/     resumable training state
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unigen import registry
from unigen.config import Config, validate
from unigen.data import from_uint8
from unigen.data import load as load_data
from unigen.errors import UserError
from unigen.io import atomic_write_json, is_leftover, jsonable, read_json
from unigen.plot import draw_boxes
from unigen.task import require, samplers
from unigen.train import checkpoint as ckpt
from unigen.train import fit
from unigen.train.distributed import make_accelerator


def get_task(name: str):
    tasks = registry.TASKS
    if name not in tasks:
        raise UserError(f"unknown task {name!r}; known: {', '.join(sorted(tasks))}")
    return tasks[name]


def check_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing run unless asked; `--overwrite` replaces it, `--resume` continues it.
    Only reads, so every process of a distributed run can check before the main one writes."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    holds_run = (out / "config.json").exists()
    if resume:
        if not holds_run:
            raise UserError(f"cannot resume: {out} holds no run (no config.json)")
        return
    if out.exists() and any(not is_leftover(p) for p in out.iterdir()):
        if overwrite and not holds_run:
            raise UserError(f"{out} holds files but no unigen run (no config.json); refusing to delete them")
        if not overwrite:
            what = "a run" if holds_run else "files"
            raise UserError(f"{out} already holds {what}; pass --resume to continue it or --overwrite to replace it")


def check_resumable(saved: Config, cfg: Config, out: Path) -> None:
    """Resuming may change training settings (steps, logging, ...), not what the weights and data are."""
    if saved.preset != cfg.preset or saved.task != cfg.task:
        raise UserError(f"{out} holds a run of preset {saved.preset!r}, not {cfg.preset!r}")
    old, new = saved.to_dict(), cfg.to_dict()
    for section in ("model", "data"):
        for k in old[section]:
            if old[section][k] != new[section].get(k):
                raise UserError(f"cannot resume {out} with {section}.{k}={new[section].get(k)!r}: "
                                f"the run was trained with {old[section][k]!r}")


def read_config(run_dir: Path) -> Config:
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    d = read_json(path, missing=f"{run_dir} is not a run directory (no config.json)")
    if not isinstance(d, dict) or not isinstance(d.get("task"), str):
        raise UserError(f"{path} is not a unigen config (no 'task' key)")
    task = get_task(d["task"])
    cfg = Config.from_dict(d, task.model_config, source=str(path))
    try:
        validate(cfg)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    return cfg


def train(cfg: Config, out: str | Path, *, resume: bool = False, overwrite: bool = False):
    """Train `cfg` into run directory `out`. Returns the `FitResult`."""
    validate(cfg)
    task = get_task(cfg.task)
    names = samplers(task)
    if cfg.sample.sampler and cfg.sample.sampler not in names:  # caught now, not after hours of training
        raise UserError(f"sample.sampler={cfg.sample.sampler!r} is not a sampler of {cfg.task}; "
                        f"known: {', '.join(names) or 'none'}")
    out = Path(out)
    acc = make_accelerator()
    check_run_dir(out, resume=resume, overwrite=overwrite)
    if resume:
        check_resumable(read_config(out), cfg, out)
    data = load_data(cfg.data, "train")
    torch.manual_seed(cfg.train.seed)
    model = task.build(cfg, data.info)
    acc.wait_for_everyone()  # every process has checked before the main one writes
    if acc.is_main_process:
        if overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", cfg.to_dict())
        atomic_write_json(out / "data_info.json", jsonable(data.info))
        if getattr(data, "tokenizer", None) is not None:
            data.tokenizer.save(out)
    acc.wait_for_everyone()

    def on_sample(m: nn.Module, step: int) -> None:
        s = cfg.sample
        task.sample(m, cfg, run_dir=out, out_dir=out / "samples" / f"step_{step:07d}", n=s.n,
                    sampler=s.sampler or names[0], steps=s.steps, seed=s.seed)

    def on_eval(m: nn.Module, step: int) -> dict:
        return task.evaluate(m, cfg, run_dir=out, quick=True)

    objectives = task.objectives(cfg) if hasattr(task, "objectives") else task.loss
    return fit(model, objectives, data, cfg.train, out, resume=resume, ema_of=getattr(task, "ema_of", None),
               on_eval=on_eval if cfg.train.eval_every and hasattr(task, "evaluate") else None,
               on_sample=on_sample if cfg.train.sample_every and names else None)


def load(run_dir: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of a run directory, in eval mode, ready for sampling: model.safetensors with the EMA
    weights (when present and `ema`) laid over it."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    task = get_task(cfg.task)
    try:
        info = read_json(run_dir / "data_info.json")
    except UserError as e:  # missing, unreadable, not UTF-8, not JSON
        raise UserError(f"{run_dir}/data_info.json is missing or corrupt: {e}") from None
    if not isinstance(info, dict):
        raise UserError(f"{run_dir}/data_info.json is corrupt: expected a JSON object")
    model = task.build(cfg, _untuple(info))
    if not (run_dir / "model.safetensors").exists():
        raise UserError(f"{run_dir} has no trained weights yet (no model.safetensors)")
    ckpt.load_run_weights(model, run_dir, ema=ema)   # the EMA (of all or part of the model) laid over the weights
    return model.to(device).eval()


def sample(run_dir: str | Path, *, sampler: str = "", steps: int = 0, n: int = 0, seed: int | None = None,
           out_dir: str | Path | None = None, **kw) -> dict[str, Any]:
    """Sample from a trained run; files go to RUN/samples/<sampler>-<steps>-seed<seed>/ unless `out_dir`."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    task = get_task(cfg.task)
    draw = require(task, "sample", cfg.task)
    names = samplers(task)
    sampler = sampler or cfg.sample.sampler or names[0]
    if sampler not in names:
        raise UserError(f"unknown sampler {sampler!r} for {cfg.task}; known: {', '.join(names)}")
    if steps < 0 or n < 0:
        raise UserError(f"--steps and --n must be >= 0, got steps={steps} n={n}")
    seed = cfg.sample.seed if seed is None else seed
    n = n or cfg.sample.n
    steps = steps or cfg.sample.steps
    out_dir = Path(out_dir) if out_dir else run_dir / "samples" / f"{sampler}-{steps or 'default'}-seed{seed}"
    model = load(run_dir)
    with torch.no_grad():
        summary = draw(model, cfg, run_dir=run_dir, out_dir=out_dir, n=n, sampler=sampler, steps=steps,
                              seed=seed, **kw)
    return {"out_dir": str(out_dir), **summary}


def evaluate(run_dir: str | Path, *, quick: bool = False, **kw) -> dict[str, Any]:
    """Metrics of a trained run, also written to RUN/eval.json, or with `quick` (the family's small sample sizes,
    seconds on a toy run; what `unigen eval` does without --full) to RUN/eval_quick.json, so that a quick look never
    overwrites a full measurement. A word2vec `query` is an answer, not metrics, and writes neither."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    measure = require(get_task(cfg.task), "evaluate", cfg.task)
    model = load(run_dir)
    if kw.get("judge"):  # a second run that scores this one's samples (text: generative perplexity)
        kw.update(judge=load(kw["judge"]), judge_dir=Path(kw["judge"]))
    with torch.random.fork_rng(devices=[]):
        metrics = measure(model, cfg, run_dir=run_dir, quick=quick, **kw)
    if "query" not in kw and not kw.get("clip_search"):  # the clip search writes RUN/clip_search.json itself
        atomic_write_json(run_dir / ("eval_quick.json" if quick else "eval.json"), jsonable(metrics))
    return metrics


def read_image(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """A PNG/JPEG file as uint8 (H, W, C) of exactly the run's image `shape` (C, H, W); else a one-line UserError."""
    from PIL import Image, UnidentifiedImageError
    c, h, w = shape
    try:
        with Image.open(path) as im:
            img = im.convert("RGB" if c == 3 else "L")
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None
    if img.size != (w, h):
        raise UserError(f"image {path} is {img.size[0]}x{img.size[1]} pixels; this run's model takes {w}x{h}")
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(h, w, c)


def detect(run_dir: str | Path, image: str | Path, *, out: str | Path | None = None,
           threshold: float = 0.5) -> dict[str, Any]:
    """Detections of a run on one image file, drawn into `out` (default RUN/detections/<image name>.png)."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    find = require(get_task(cfg.task), "detect", cfg.task)
    info = _untuple(read_json(run_dir / "data_info.json", "data_info.json"))
    pixels = read_image(image, info["shape"])                                   # (H, W, C) uint8
    model = load(run_dir)
    found = find(model, cfg, {"x": from_uint8(pixels.permute(2, 0, 1)[None])}, threshold=threshold)[0]
    names = info.get("class_names") or [str(k) for k in range(info["num_classes"])]
    found["names"] = [names[k] for k in found["labels"]]
    found["boxes"] = [[round(v, 2) for v in box] for box in found["boxes"]]
    out = Path(out) if out else run_dir / "detections" / f"{Path(image).stem}.png"
    captions = [f"{n} {s:.2f}" for n, s in zip(found["names"], found["scores"])]
    draw_boxes(pixels if pixels.shape[-1] == 3 else pixels.expand(-1, -1, 3), found["boxes"], captions, out)
    return {"out": str(out), **found}


def _untuple(info: dict) -> dict:
    """JSON turns tuples into lists; shapes are tuples in memory."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in info.items()}
