"""Reconstruction and generation quality of trained autoencoder runs, beside a trivial baseline, on the test split.

    python -m benchmarks.autoencoders --run shapes-kl=RUN_DIR --run mnist-vae=RUN_DIR ... [--out DIR] [--threads 1]

Each RUN_DIR was written by `unigen train PRESET --out RUN_DIR [overrides]` (the overrides are in its config.json
and in benchmarks/autoencoders.md). For every run: `unigen eval` on the whole test split (PSNR, FD or FD on pixels,
VAE bounds, code usage / perplexity, prior bits and sample FD), the training budget (steps x batch), the median
training speed logged in metrics.jsonl and the wall time of the run (config.json to model.safetensors).
Baseline per dataset ("area f"): each test image averaged over f x f blocks (f = the autoencoder's factor: the
same spatial compression, 1 number per block and channel) and upsampled back (nearest), scored like the runs.
DIR/autoencoders.json holds everything, DIR/autoencoders.md the table.

    python -m benchmarks.autoencoders --speed shapes-kl,mnist-vae,... [--first-stage VQ_RUN_DIR]

times single optimisation steps of each preset (every objective, its precision, its batch), interleaved in one
process: 4 rounds of one step per preset in turn, median of the last 3 (data loading and evaluation excluded).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.harness import log, machine, start  # noqa: E402
from unigen import run as R  # noqa: E402
from unigen.config import apply_overrides  # noqa: E402
from unigen.data import load  # noqa: E402
from unigen.families.autoencoders import evaluate as E  # noqa: E402
from unigen.registry import TASKS, get_preset  # noqa: E402
from unigen.train.objective import Objective  # noqa: E402
from unigen.train.precision import autocast  # noqa: E402

KEYS = ("psnr", "fd", "fd_pixels", "code_usage", "code_perplexity", "bits_per_dim", "nelbo_bits_per_dim",
        "code_bits_per_dim", "uniform_code_bits_per_dim", "sample_fd", "sample_fd_pixels")


def baseline(cfg, f: int) -> dict:
    """PSNR and FD of block-average-then-upsample reconstructions of the test split."""
    x = load(cfg.data, "test").tensors["x"]
    x_hat = F.interpolate(F.avg_pool2d(x, f), scale_factor=f, mode="nearest")
    return {"psnr": float(E.psnr(x, x_hat).mean()), **E.frechet(x_hat, x), "n_eval": len(x)}


def training(run_dir: Path) -> dict:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    speeds = [d["it_s"] for d in lines if "it_s" in d]
    wall = (run_dir / "model.safetensors").stat().st_mtime - (run_dir / "config.json").stat().st_mtime
    return {"steps": lines[-1]["step"], "median_it_s": statistics.median(speeds) if speeds else None,
            "wall_minutes": wall / 60}


def _setup(preset: str, first_stage: str, overrides: tuple[str, ...] = ()):
    cfg = apply_overrides(get_preset(preset), list(overrides))
    if cfg.task == "code_prior":
        cfg = apply_overrides(cfg, [f"model.first_stage={first_stage}"])
    task, data = TASKS[cfg.task], load(cfg.data, "train")
    torch.manual_seed(0)
    net = task.build(cfg, data.info)
    objs = task.objectives(cfg) if hasattr(task, "objectives") else [Objective("main", task.loss)]
    opts = [torch.optim.AdamW([p for p in (o.params(net) if o.params else net.parameters()) if p.requires_grad])
            for o in objs]
    return cfg, net, list(zip(objs, opts)), data.batch(torch.arange(cfg.train.batch_size))


def _step(cfg, net, pairs, batch) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one optimisation step."""
    t0, c0 = time.perf_counter(), time.process_time()
    for o, opt in pairs:
        with autocast(cfg.train.precision, "cpu"):
            out = o.loss(net, batch, step=10**6) if o.with_step else o.loss(net, batch)
        opt.zero_grad()
        (out[0] if isinstance(out, tuple) else out).backward()
        opt.step()
    return time.perf_counter() - t0, time.process_time() - c0


def speed(presets: list[str], first_stage: str, rounds: int = 4, overrides: tuple[str, ...] = ()) -> dict:
    """Seconds per optimisation step of each preset, interleaved; and the preset's budget in minutes. Also the
    process's CPU seconds per step: with 1 torch thread that is about what the step takes on a core of its own,
    however loaded the machine is (the quiet-machine estimate, cache sharing aside)."""
    setups = {p: _setup(p, first_stage, overrides) for p in presets}
    times: dict[str, list[tuple[float, float]]] = {p: [] for p in presets}
    for _ in range(rounds):
        for p in presets:
            times[p].append(_step(*setups[p]))
    out = {}
    for p in presets:
        s, cpu = (statistics.median(t[i] for t in times[p][1:]) for i in (0, 1))
        steps = setups[p][0].train.steps
        out[p] = {"s_per_step": s, "cpu_s_per_step": cpu, "steps": steps, "minutes": s * steps / 60,
                  "cpu_minutes": cpu * steps / 60, "precision": setups[p][0].train.precision}
    return out


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def markdown(results: dict, command: str) -> str:
    lines = [f"Command: `{command}`  ", f"Machine: {machine()}", "",
             "| run | preset | steps x batch | s/step (median) | wall min | " + " | ".join(KEYS) + " |",
             "|---|---|---|---|---|" + "---|" * len(KEYS)]
    for name, r in results.items():
        t = r.get("train", {})
        speed = f"{1 / t['median_it_s']:.2f}" if t.get("median_it_s") else "-"
        budget = f"{t['steps']} x {r['batch']}" if t else "-"
        wall = f"{t['wall_minutes']:.1f}" if t else "-"
        cells = " | ".join(_fmt(r["metrics"].get(k, "")) for k in KEYS)
        lines.append(f"| {name} | {r['preset']} | {budget} | {speed} | {wall} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.autoencoders", description=__doc__.split("\n")[0])
    p.add_argument("--run", action="append", default=[], help="PRESET=RUN_DIR of a finished `unigen train` run")
    p.add_argument("--out", default="outputs/autoencoders", help="folder for autoencoders.json / .md")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--speed", default="", help="comma-separated presets: time their optimisation steps instead")
    p.add_argument("--first-stage", default="", help="--speed of a code prior: its VQ run directory")
    p.add_argument("--set", action="append", default=[], help="--speed: an override for every preset, e.g. "
                   "train.precision=bf16")
    args = p.parse_args(argv)
    out, command = start("benchmarks.autoencoders", args.out, args.threads, argv)
    if args.speed:
        res = speed([s for s in args.speed.split(",") if s], args.first_stage, overrides=tuple(args.set))
        (out / "speed.json").write_text(json.dumps(res, indent=2))
        line = lambda k, v: (f"{k}: {v['s_per_step']:.3f} s/step x {v['steps']} = {v['minutes']:.1f} min; CPU "
                             f"{v['cpu_s_per_step']:.3f} s/step = {v['cpu_minutes']:.1f} min ({v['precision']})")
        print(f"{command}\n{machine()}\n" + "\n".join(line(k, v) for k, v in res.items()))
        return
    results = {}
    for item in args.run:
        preset, _, path = item.partition("=")
        run_dir = Path(path)
        cfg = R.read_config(run_dir)
        log(f"{preset}: {run_dir}")
        metrics = R.evaluate(run_dir)
        results[preset] = {"preset": cfg.preset, "batch": cfg.train.batch_size, "train": training(run_dir),
                           "metrics": metrics}
        if cfg.task == "autoencoders" and cfg.model.kind != "vae":
            f = 2 ** (len(cfg.model.channels) - 1)
            key = f"baseline area {f} ({cfg.data.name})"
            if key not in results:
                results[key] = {"preset": "-", "batch": "-", "metrics": baseline(cfg, f)}
        (out / "autoencoders.json").write_text(json.dumps(results, indent=2, default=str))
    md = markdown(results, command)
    (out / "autoencoders.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
