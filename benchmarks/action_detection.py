"""Online action detection on the procedural streams: TRN vs IDN vs OadTR, beside the single-frame baseline and
the offline bidirectional upper bound, each trained with its preset (same data, budget and seed).

    python -m benchmarks.action_detection --out DIR [--presets stream-trn,...] [--seeds 0,1] [--steps N] [--jobs 2]
        [--threads 1]

Each preset is trained (with each `train.seed`; the data are the same) and evaluated through unigen's API
(`unigen.run.train`, `unigen.run.evaluate`) in its own process (`--jobs` at a time, `--threads` torch threads each),
into DIR/runs/PRESET-sSEED (a run already evaluated there is reused); the load average is recorded before and after
each. A trivial baseline scores the same test frames with uniform random numbers. DIR/results.json holds the raw
numbers, DIR/action_detection.md the tables (every run, then mean +- std over the seeds).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from benchmarks.harness import start, subset
from unigen.data import load
from unigen.families.action_detection.evaluate import scores
from unigen.io import atomic_write_json, atomic_write_text
from unigen.registry import get_preset

PRESETS = ("stream-single", "stream-trn", "stream-idn", "stream-oadtr", "stream-offline")
COLUMNS = ("mAP", "cAP", "frame_accuracy", "onset_latency", "onsets_detected", "frames_per_s")

WORKER = """
import json, sys, time, torch
from unigen import run
from unigen.registry import get_preset
torch.set_num_threads(int(sys.argv[3]))
t = time.perf_counter()
cfg = get_preset(sys.argv[1])
cfg.train.progress = False
cfg.train.seed = int(sys.argv[4])
if int(sys.argv[5]):
    cfg.train.steps = cfg.train.ckpt_every = int(sys.argv[5])
run.train(cfg, sys.argv[2], overwrite=True)
train_s = time.perf_counter() - t
print(json.dumps({**run.evaluate(sys.argv[2]), "train_s": train_s}))
"""


def one(preset: str, seed: int, folder: Path, threads: int, steps: int = 0) -> dict:
    run_dir = folder / "runs" / f"{preset}-s{seed}"
    if (run_dir / "result.json").exists():
        return json.loads((run_dir / "result.json").read_text())
    load0 = os.getloadavg()[0]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", WORKER, preset, str(run_dir), str(threads), str(seed), str(steps)],
                         capture_output=True, text=True, env=env, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in metrics if "it_s" in m]
    res = {**res, "load_before": load0, "load_after": os.getloadavg()[0],
           "s_per_step": 1 / (sum(m["it_s"] for m in logged) / len(logged)) if logged else float("nan")}
    atomic_write_json(run_dir / "result.json", res)
    return res


def random_scores() -> dict:
    """The trivial baseline: uniform random scores (seed 0) on the test frames of the presets' stream."""
    test = load(get_preset(PRESETS[0]).data, "test")
    y, amb = test.tensors["y"], test.tensors["ambiguous"]
    probs = torch.rand(*y.shape, test.info["num_classes"], generator=torch.Generator().manual_seed(0))
    return scores(probs, y, amb)


def summary(results: dict) -> str:
    """Mean +- std over the seeds of each preset."""
    lines = ["| preset | seeds | mAP | cAP | frame acc | onset latency (frames) |", "|" + "---|" * 6]
    for p in dict.fromkeys(k.rsplit("-s", 1)[0] for k in results):
        rs = [r for k, r in results.items() if k.rsplit("-s", 1)[0] == p]

        def cell(key: str) -> str:
            return f"{statistics.mean(r[key] for r in rs):.3f} +- {statistics.pstdev(r[key] for r in rs):.3f}"
        lines.append(f"| {p} | {len(rs)} | {cell('mAP')} | {cell('cAP')} | {cell('frame_accuracy')} | "
                     f"{cell('onset_latency')} |")
    return "\n".join(lines)


def table(results: dict) -> str:
    head = "| preset | mAP | cAP | frame acc | onset latency (frames) | onsets found | frames/s | train s | s/step | load avg |"
    lines = [head, "|" + "---|" * 10]
    for p, r in results.items():
        lines.append(f"| {p} | {r['mAP']:.3f} | {r['cAP']:.3f} | {r['frame_accuracy']:.3f} | {r['onset_latency']:.2f} | "
                     f"{r['onsets_detected']:.2f} | {r['frames_per_s']:.0f} | {r['train_s']:.0f} | "
                     f"{r['s_per_step']:.2f} | {r['load_before']:.1f} -> {r['load_after']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.action_detection", description=__doc__)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    p.add_argument("--seeds", default="0", help="comma-separated train.seed values")
    p.add_argument("--steps", type=int, default=0, help="train.steps for every preset (0: the presets' own)")
    p.add_argument("--jobs", type=int, default=2, help="presets trained at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    args = p.parse_args(argv)
    presets = subset(p, args.presets, PRESETS, "preset")
    folder, command = start("benchmarks.action_detection", args.out, args.threads, argv)
    jobs = [(q, int(seed)) for seed in args.seeds.split(",") for q in presets]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = pool.map(lambda j: one(*j, folder, args.threads, args.steps), jobs)
        done = dict(zip((f"{q}-s{seed}" for q, seed in jobs), results))
    rand = random_scores()
    atomic_write_json(folder / "results.json", {**done, "random": rand})
    text = (f"`{command}`\n\n{table(done)}\n\nrandom scores: mAP {rand['mAP']:.3f}, cAP {rand['cAP']:.3f}\n\n"
            f"{summary(done)}\n")
    atomic_write_text(folder / "action_detection.md", text)
    print(text)


if __name__ == "__main__":
    main()
