"""Online action detection on the procedural streams: TRN vs IDN vs OadTR, beside the single-frame baseline and
the offline bidirectional upper bound, each trained with its preset (same data, budget and seed).

    python -m benchmarks.action_detection --out DIR [--presets stream-trn,...] [--jobs 2] [--threads 1]

Each preset is trained and evaluated through unigen's API (`unigen.run.train`, `unigen.run.evaluate`) in its own
process (`--jobs` at a time, `--threads` torch threads each), into DIR/runs/PRESET; the load average is recorded
before and after each. DIR/results.json holds the raw numbers, DIR/action_detection.md the table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.harness import start, subset
from unigen.io import atomic_write_json, atomic_write_text

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
run.train(cfg, sys.argv[2], overwrite=True)
train_s = time.perf_counter() - t
print(json.dumps({**run.evaluate(sys.argv[2]), "train_s": train_s}))
"""


def one(preset: str, folder: Path, threads: int) -> dict:
    load0 = os.getloadavg()[0]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", WORKER, preset, str(folder / "runs" / preset), str(threads)],
                         capture_output=True, text=True, env=env, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    metrics = [json.loads(line) for line in (folder / "runs" / preset / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "it_s" in m]
    return {**res, "load_before": load0, "load_after": os.getloadavg()[0],
            "s_per_step": 1 / (sum(m["it_s"] for m in steps) / len(steps)) if steps else float("nan")}


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
    p.add_argument("--jobs", type=int, default=2, help="presets trained at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    args = p.parse_args(argv)
    presets = subset(p, args.presets, PRESETS, "preset")
    folder, command = start("benchmarks.action_detection", args.out, args.threads, argv)
    with ThreadPoolExecutor(args.jobs) as pool:
        done = dict(zip(presets, pool.map(lambda q: one(q, folder, args.threads), presets)))
    atomic_write_json(folder / "results.json", done)
    atomic_write_text(folder / "action_detection.md", f"`{command}`\n\n{table(done)}\n")
    print(table(done))


if __name__ == "__main__":
    main()
