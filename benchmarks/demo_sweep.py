"""The demo's recipe sweep (issue 18, item 4): per-step cost against the demo's recipe, and FD per sampler.

    python -m benchmarks.demo_sweep steps --repeats 4 --steps-per-call 2 "model.width=32" "train.batch_size=128"
    python -m benchmarks.demo_sweep fd RUN flow-midpoint:18 dpmpp-2m-sde:20 euler:35:karras

`steps`: one training step of each recipe (mnist-fm with the given overrides; "" is the demo's recipe itself) timed
interleaved against the demo's recipe in one process (harness.interleave: ours, ref, ours, ref, ...), printing the
median ratio and its range. A ratio times a known quiet-machine time of the demo's recipe is the recipe's quiet time;
on a shared machine only the ratio means something.
`fd`: the demo's image metric (FD on the feature CNN, n = 256, noise seed 0, as `evaluate(quick=True)`) of a trained
run for several samplers, `SAMPLER:STEPS[:GRID]` (GRID: the run's model.grid for that line, e.g. karras).
"""
from __future__ import annotations

import argparse
import statistics
import time

import unigen  # noqa: F401  (before torch: unigen's OpenMP default, as the CLI)
import torch

from benchmarks.harness import interleave
from unigen.config import apply_overrides
from unigen.data import load as load_data
from unigen.errors import UserError
from unigen.families.continuous_diffusion import evaluate
from unigen.families.continuous_diffusion.network import unwrap
from unigen.registry import get_preset
from unigen.run import get_task, load, read_config
from unigen.train.precision import autocast

BASE = ("mnist-fm", ["train.steps=800"])                    # the demo's image recipe (experiments/demo.py IMAGE)


def train_step(overrides: list[str], calls: int):
    """A function running `calls` optimisation steps (AdamW, clipping, the precision the config resolves to) of
    the demo's recipe with `overrides`; data and model are built once."""
    cfg = apply_overrides(get_preset(BASE[0]), BASE[1] + overrides)
    task, data = get_task(cfg.task), load_data(cfg.data, "train")
    torch.manual_seed(0)
    model = task.build(cfg, data.info)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    g = torch.Generator().manual_seed(0)

    def run() -> None:
        for _ in range(calls):
            batch = data.batch(torch.randint(0, len(data), (cfg.train.batch_size,), generator=g))
            with autocast(cfg.train.precision, "cpu"):
                loss = task.loss(model, batch)
            loss.float().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
    return run


def steps(recipes: list[str], repeats: int, calls: int) -> None:
    ref = train_step([], calls)
    for recipe in recipes:
        ours = train_step(recipe.split(), calls)
        t_ours, t_ref = interleave(ours, ref, repeats)
        ratios = [a / b for a, b in zip(t_ours, t_ref)]
        print(f"{recipe or '(demo recipe)'}: per-step cost ratio {statistics.median(ratios):.2f} "
              f"(range {min(ratios):.2f}-{max(ratios):.2f}; median s/step {statistics.median(t_ours) / calls:.3f} "
              f"against {statistics.median(t_ref) / calls:.3f})", flush=True)


def fd(run: str, specs: list[str]) -> None:
    cfg, model = read_config(run), load(run)
    net = unwrap(model)
    scorer = evaluate.make_scorer(net, cfg, quick=True)
    print(f"{run}: real-data floor {scorer.baseline()}", flush=True)
    for spec in specs:
        sampler, n_steps, *grid = spec.split(":")
        net.config.grid = grid[0] if grid else ""
        t0 = time.perf_counter()
        try:
            m = evaluate.score(model, scorer, sampler=sampler, steps=int(n_steps), precision=cfg.train.precision)
        except UserError as e:                   # e.g. a sampler that cannot start at the flow grid's t = 1
            print(f"{spec}: not run: {e}", flush=True)
            continue
        print(f"{spec}: fd {m['fd']:.2f} (NFE {m['nfe']:.0f}, {time.perf_counter() - t0:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.demo_sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("steps", help="per-step cost of recipes against the demo's, interleaved")
    s.add_argument("recipes", nargs="+", help='space-separated overrides per recipe, e.g. "model.width=32"')
    s.add_argument("--repeats", type=int, default=4, help="timed pairs (default 4)")
    s.add_argument("--steps-per-call", type=int, default=2, help="training steps per timed call (default 2)")
    f = sub.add_parser("fd", help="FD (n = 256) of a trained run for several samplers")
    f.add_argument("run", help="a trained mnist run directory")
    f.add_argument("specs", nargs="+", help="SAMPLER:STEPS[:GRID]")
    args = p.parse_args(argv)
    if args.cmd == "steps":
        steps(args.recipes, args.repeats, args.steps_per_call)
    else:
        fd(args.run, args.specs)


if __name__ == "__main__":
    main()
