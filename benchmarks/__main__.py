"""Runner: `python -m benchmarks [groups...] [--repeats N] [--quick] [--threads T] [--match S] [--out FILE]`."""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
import warnings

import torch

from benchmarks import DEFAULT, GROUPS
from benchmarks.harness import machine, matmul_peak, quartiles, run_case
from benchmarks.report import markdown


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("groups", nargs="*", help=f"groups to run (default: {' '.join(DEFAULT)}; all: {' '.join(GROUPS)})")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per side after warm-up (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per side before timing, counting the memory and FLOP-count calls (default 2)")
    p.add_argument("--quick", action="store_true", help="one tiny case per group: a smoke run of well under a minute")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--match", default="", help="only cases whose name contains this text")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS measurement call")
    p.add_argument("--out", default="", help="also write the markdown report to this file")
    args = p.parse_args(argv)
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        p.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--repeats and --threads must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    groups = args.groups or list(DEFAULT)
    t_start = time.perf_counter()
    peaks = {}
    if "train" in groups or "compile" in groups:
        n = 256 if args.quick else 2048
        peaks = {"fp32": matmul_peak(torch.float32, n), "bf16": matmul_peak(torch.bfloat16, n)}
    results = []
    for g in groups:
        for case in GROUPS[g](args.quick):
            if args.match not in case.name:
                continue
            res = run_case(case, args.repeats, args.warmup, memory=not args.no_memory)
            results.append(res)
            ratio = quartiles(res.ref)[1] / quartiles(res.ours)[1] if res.ref else float("nan")
            print(f"[{time.perf_counter() - t_start:6.0f}s] {g}: {case.name}: ours {quartiles(res.ours)[1]:.4f}s "
                  f"ref/ours {ratio:.2f}", file=sys.stderr, flush=True)
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    header = (f"## Results {datetime.date.today().isoformat()}\n\n"
              f"- machine: {machine()}\n- command: `{command}`\n"
              f"- wall time: {time.perf_counter() - t_start:.0f} s\n")
    text = markdown(results, peaks, header)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
