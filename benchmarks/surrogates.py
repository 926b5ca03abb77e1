"""Metric surrogates on long-tailed digits: macro-F1 of cross-entropy vs soft macro-F1 vs their mix.

    python -m benchmarks.surrogates --out DIR [--seeds 0,1,2] [--taus 1.0,0.3]

Every run is the `digits-softf1` preset (MLP, training split long-tailed 50:1, balanced 300-image test split) with
`model.loss`, `model.surrogate_weight` and `model.temperature` overridden, trained and evaluated through unigen's
API. DIR/results.json holds the raw numbers, DIR/surrogates.md the table (mean +- standard error over seeds).
"""
from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.harness import start
from unigen import run
from unigen.config import apply_overrides
from unigen.io import atomic_write_json, atomic_write_text
from unigen.registry import get_preset

VARIANTS = {"cross-entropy": ["model.loss=ce"],
            "0.5 CE + 0.5 soft macro-F1": ["model.loss=soft_macro_f1", "model.surrogate_weight=0.5"],
            "soft macro-F1": ["model.loss=soft_macro_f1", "model.surrogate_weight=1.0"],
            "0.5 CE + 0.5 soft accuracy": ["model.loss=soft_accuracy", "model.surrogate_weight=0.5"]}


def row(name: str, runs: list[dict]) -> str:
    def cell(key):
        xs = [r[key] for r in runs]
        se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):.3f} +- {se:.3f}"
    return f"| {name} | {cell('macro_f1')} | {cell('accuracy')} | {statistics.mean(r['train_s'] for r in runs):.1f} |"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.surrogates", description=__doc__)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--taus", default="1.0,0.3", help="comma-separated surrogate temperatures")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    folder, command = start("benchmarks.surrogates", args.out, args.threads, argv)
    results, lines = {}, []
    for tau in args.taus.split(","):
        for name, ov in VARIANTS.items():
            if name == "cross-entropy" and tau != args.taus.split(",")[0]:
                continue
            label = name if name == "cross-entropy" else f"{name}, tau {tau}"
            runs = []
            for seed in args.seeds.split(","):
                cfg = apply_overrides(get_preset("digits-softf1"),
                                      ov + [f"model.temperature={tau}", f"train.seed={seed}", "train.progress=false"])
                out = folder / "runs" / f"{label.replace(' ', '_').replace(',', '')}-{seed}"
                t = time.perf_counter()
                run.train(cfg, out, overwrite=True)
                runs.append({**run.evaluate(out), "train_s": time.perf_counter() - t, "seed": int(seed)})
            results[label] = runs
            lines.append(row(label, runs))
            print(lines[-1], flush=True)
    atomic_write_json(folder / "results.json", results)
    head = ["| loss | test macro-F1 | test accuracy | train + eval s |", "|---|---|---|---|"]
    atomic_write_text(folder / "surrogates.md", f"`{command}`\n\n" + "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
