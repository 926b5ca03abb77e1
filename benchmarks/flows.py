"""Normalizing flows (NICE, RealNVP, Glow): MNIST test bits/dim at one training budget, and KL to the exact density
on the toy2d sets that have one.

    python -m benchmarks.flows --out DIR [--presets mnist-nice,mnist-realnvp,mnist-glow] [--toys checkerboard,...]

Every run goes through unigen's own API (`unigen.run.train`, `unigen.run.evaluate`): DIR/runs/PRESET for MNIST,
DIR/runs/toy2d-ARCH-TOY for toy2d (the preset with `data.toy` overridden). A run whose directory already holds
eval.json is reused. DIR/results.json holds the raw numbers (with wall-clock training seconds), DIR/flows.md the
tables; benchmarks/flows.md adds the analysis. The evaluation writes RUN/figures/ (samples at temperatures 0.5,
0.7, 1.0, the data -> latent -> data picture, or the learned and exact toy densities).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from unigen import run
from unigen.config import apply_overrides
from unigen.io import atomic_write_json, atomic_write_text, read_json
from unigen.registry import get_preset

# Published MNIST numbers. NICE reports the test log-likelihood of y = dequantised pixels in [0, 1]^784 in nats
# (Dinh et al. 2015, Table 2: 1980.50); in bits/dim of 8-bit data that is (-1980.50 + 784 ln 256) / (784 ln 2).
PAPER_BPD = {"mnist-nice": ((-1980.50 + 784 * math.log(256)) / (784 * math.log(2)),
                            "NICE, Table 2: log-likelihood 1980.50 nats, converted"),
             "mnist-realnvp": (1.06, "as reported in FFJORD (Grathwohl et al. 2019), Table 2"),
             "mnist-glow": (1.05, "Glow (Kingma & Dhariwal 2018), as reported in FFJORD Table 2")}
ARCHS = ("nice", "realnvp", "glow")


def _train_eval(cfg, out: Path) -> dict:
    if (out / "eval.json").exists():
        return read_json(out / "eval.json") | read_json(out / "train_time.json")
    t, cpu = time.perf_counter(), time.process_time()
    result = run.train(cfg, out, overwrite=True)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    atomic_write_json(out / "train_time.json",
                      {"train_seconds": seconds, "train_cpu_seconds": cpu, "steps": result.step})
    t = time.perf_counter()
    metrics = run.evaluate(out)
    metrics["eval_seconds"] = time.perf_counter() - t
    return metrics | {"train_seconds": seconds, "steps": result.step}


def mnist_table(results: dict) -> list[str]:
    lines = ["| preset | steps x batch | train (s) | test bits/dim (8-bit, 10,000 images) | paper | uniform baseline |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        paper, source = PAPER_BPD.get(name, (float("nan"), ""))
        lines.append(f"| {name} | {r['steps']} x {get_preset(name).train.batch_size} | {r['train_seconds']:.0f} | "
                     f"{r['bits_per_dim']:.3f} +- {r['bits_per_dim_se']:.3f} | {paper:.2f} ({source}) | "
                     f"{r['uniform_bits_per_dim']:.0f} |")
    return lines


def toy_table(results: dict) -> list[str]:
    lines = ["| toy | arch | train (s) | KL(p \\|\\| q) nats | test NLL | entropy H(p) |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        _, arch, toy = name.split("-", 2)
        lines.append(f"| {toy} | {arch} | {r['train_seconds']:.0f} | {r['kl']:.3f} +- {r['kl_se']:.3f} | "
                     f"{r['nll']:.3f} | {r['entropy']:.3f} |")
    return lines


def step_times(names: list[str], steps: int, out: Path) -> dict:
    """Wall and CPU seconds per training step of each preset over `steps` steps (after one warm-up step), run
    one after another in this process: on a shared machine the CPU time is the steadier number."""
    times = {}
    for name in names:
        cfg = apply_overrides(get_preset(name), [f"train.steps={steps + 1}", "train.progress=false",
                                                 f"train.ckpt_every={steps + 1}"])
        run.train(apply_overrides(get_preset(name), ["train.steps=1", "train.progress=false"]), out / name,
                  overwrite=True)                                          # warm-up: data loading, allocation
        t, cpu = time.perf_counter(), time.process_time()
        run.train(cfg, out / name, overwrite=True)
        times[name] = {"wall_per_step": (time.perf_counter() - t) / (steps + 1),
                       "cpu_per_step": (time.process_time() - cpu) / (steps + 1),
                       "preset_steps": get_preset(name).train.steps}
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flows", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for runs, results.json and flows.md")
    p.add_argument("--presets", default="mnist-nice,mnist-realnvp,mnist-glow", help="MNIST presets ('' = none)")
    p.add_argument("--toys", default="checkerboard,8gaussians,rings", help="toy2d sets with an exact density")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--time-steps", type=int, default=0,
                   help="only time N training steps of each MNIST preset (wall and CPU seconds per step)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.time_steps:
        times = step_times([n for n in args.presets.split(",") if n], args.time_steps, out / "timing")
        atomic_write_json(out / "step_times.json", times)
        print(json.dumps(times, indent=1))
        return
    mnist = {name: _train_eval(get_preset(name), out / "runs" / name) for name in filter(None, args.presets.split(","))}
    toys = {}
    for toy in filter(None, args.toys.split(",")):
        for arch in ARCHS:
            cfg = apply_overrides(get_preset(f"toy2d-{arch}"), [f"data.toy={toy}", "train.progress=false"])
            toys[f"toy2d-{arch}-{toy}"] = _train_eval(cfg, out / "runs" / f"toy2d-{arch}-{toy}")
    atomic_write_json(out / "results.json", {"mnist": mnist, "toy2d": toys})
    text = ["# Normalizing flows", "", *mnist_table(mnist), "", *toy_table(toys), ""]
    atomic_write_text(out / "flows.md", "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
