"""The CLI on a busy CPU: OpenMP's default spin-waiting against the passive waiting unigen sets (and one thread).

    python -m benchmarks.contention --out /tmp/contention [--pairs 4] [--busy 1] [--workloads toy2d,vit]

Each workload is one `unigen train` command run as a fresh process, in the `--variants`, interleaved in rotating
order so that the load of the moment hits every variant alike:
    openmp-default   torch imported before unigen, OMP_WAIT_POLICY unset: OpenMP spins ~300k iterations
                     before a waiting thread sleeps (what every program that imports torch first gets)
    unigen           `python -m unigen` with OMP_WAIT_POLICY=PASSIVE (no spinning; unigen's first default)
    unigen-1-thread  the same with OMP_NUM_THREADS=1
    spin-10k         `python -m unigen` with GOMP_SPINCOUNT=10000 (unigen's default now), spin-30k likewise
while `--busy` other processes (`while True: pass`) compete for the cores, as a user's other programs do.
Writes OUT/contention.md (median wall seconds, range, and the ratio to `unigen` per pair) and OUT/contention.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.harness import log, machine, start, subset

WORKLOADS = {
    "toy2d": ["train", "toy2d-ddpm", "--train.steps=40"],
    "vit": ["train", "vit-mnist", "--train.steps=20"],
    "mnist-fm": ["train", "mnist-fm", "--train.steps=100"],   # the demo's image model
}
VARIANTS = {
    "openmp-default": (["-c", "import torch, sys; sys.argv[0] = 'unigen'; from unigen.cli import main; main()"], {}),
    "unigen": (["-m", "unigen"], {"OMP_WAIT_POLICY": "PASSIVE"}),
    "unigen-1-thread": (["-m", "unigen"], {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}),
    "spin-10k": (["-m", "unigen"], {"GOMP_SPINCOUNT": "10000"}),        # libgomp: spin ~0.1 ms, then sleep
    "spin-30k": (["-m", "unigen"], {"GOMP_SPINCOUNT": "30000"}),
}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    return {**env, "PYTHONPATH": os.pathsep.join(sys.path), **extra}


def timed_run(variant: str, argv: list[str], run_dir: str) -> float:
    prefix, extra = VARIANTS[variant]
    cmd = [sys.executable, *prefix, *argv, "--out", run_dir, "--overwrite", "--train.progress=false"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=_env(extra), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return seconds


def measure(workloads: list[str], variants: list[str], pairs: int, busy: int) -> dict[str, dict[str, list[float]]]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    times = {w: {v: [] for v in variants} for w in workloads}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(pairs):
                order = variants[i % len(variants):] + variants[:i % len(variants)]
                for w in workloads:
                    for v in order:
                        s = timed_run(v, WORKLOADS[w], f"{tmp}/{w}-{v}")
                        times[w][v].append(s)
                        log(f"round {i + 1}/{pairs} {w} {v}: {s:.1f} s (load {os.getloadavg()[0]:.1f})")
    finally:
        for h in hogs:
            h.kill()
    return times


def report(times: dict[str, dict[str, list[float]]], command: str, busy: int) -> str:
    lines = ["# The CLI on a busy CPU: OpenMP wait policy and threads", "", f"Command: `{command}`", "",
             f"Machine: {machine()}; {busy} busy process(es) started by the benchmark.", "",
             "| workload | variant | median wall s | min-max s | ratio to `unigen` (median of per-round ratios) |",
             "|---|---|---|---|---|"]
    for w, by_variant in times.items():
        base = by_variant["unigen"]
        for v, xs in by_variant.items():
            ratio = statistics.median(x / b for x, b in zip(xs, base))
            lines.append(f"| `{' '.join(WORKLOADS[w])}` | {v} | {statistics.median(xs):.1f} | "
                         f"{min(xs):.1f}-{max(xs):.1f} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.contention", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for contention.md / contention.json")
    p.add_argument("--pairs", type=int, default=4, help="rounds; each runs every variant once (default 4)")
    p.add_argument("--busy", type=int, default=1, help="competing busy processes (default 1)")
    p.add_argument("--workloads", default="toy2d,vit", help=f"comma list of {', '.join(WORKLOADS)}")
    p.add_argument("--variants", default="openmp-default,unigen,unigen-1-thread",
                   help=f"comma list of {', '.join(VARIANTS)} (must include unigen, the ratios' base)")
    args = p.parse_args(argv)
    workloads = subset(p, args.workloads, WORKLOADS, "workload")
    variants = subset(p, args.variants, VARIANTS, "variant")
    if "unigen" not in variants:
        p.error("--variants must include unigen (the base of the ratios)")
    folder, command = start("benchmarks.contention", args.out, 1, argv)
    times = measure(workloads, variants, args.pairs, args.busy)
    (folder / "contention.json").write_text(json.dumps(times, indent=1))
    text = report(times, command, args.busy)
    (folder / "contention.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
