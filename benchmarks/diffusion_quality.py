"""Sample quality of the continuous diffusion family: samplers against NFE, training methods, rectified flow.

    python -m benchmarks.diffusion_quality --out DIR [--parts mnist,toy,rectified] [--mnist-n 256] ...

Everything runs through unigen's CLI and public API: runs are trained with `unigen train PRESET --out ...`
(subprocesses, the command is recorded), scored with `unigen eval RUN --json`, `unigen.families.continuous_diffusion.evaluate`
(`make_scorer`, `score`, `run_sweep`, `write_report`) and `python -m unigen.experiments.rectified_flow`. Trained runs land in
DIR/runs/PRESET and are reused when their config.json matches; a part whose settings match its DIR/PART.json is
not re-run, so parts can be run one at a time and the markdown rebuilt from all of them. Parts:

    mnist      one mnist-edm UNet; Frechet distance (the bundled feature CNN) of every EDM sampler at each NFE budget
               on the same noise, the 1000-NFE reference for `--mnist-long` samplers only; the EDM claim "the best
               sampler at <= 35 NFE is within 5% of the best 1000-NFE result" checked against FD's own noise at this
               n (the best <= 35 row and the real-data floor re-scored with other seeds)
    toy        toy2d-ddpm / -edm / -fm at the same training budget (the presets share data, MLP and optimiser):
               SWD and MMD^2 with each preset's default sampler (`unigen eval`), with its own sampler at `--toy-nfe`
               NFE, and with Heun at `--toy-nfe` NFE for all three
    rectified  1-rectified, 2-rectified (reflow) and distilled one-step flow on toy2d moons: SWD at 1 and 2 Euler
               steps and straightness (`python -m unigen.experiments.rectified_flow`)

DIR/PART.json hold the raw numbers, DIR/diffusion_quality.md the tables (copy it to benchmarks/diffusion_quality.md).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.harness import log, machine, start, subset
from unigen import run as R
from unigen.families.continuous_diffusion import evaluate as nfe_sweep
from unigen.families.continuous_diffusion.network import METHODS, denoiser
from unigen.families.continuous_diffusion.samplers import SAMPLERS

PARTS = ("mnist", "toy", "rectified")
TOY_PRESETS = ("toy2d-ddpm", "toy2d-edm", "toy2d-fm")
UNIGEN = [sys.executable, "-m", "unigen"]


def shown(cmd: list[str]) -> str:
    """The command as a user would type it (`unigen ...` / `python -m ...`)."""
    words = ["unigen", *cmd[3:]] if cmd[:3] == UNIGEN else ["python", *cmd[1:]]
    return " ".join(shlex.quote(str(w)) for w in words)


def call(cmd: list[str]) -> tuple[str, float]:
    """Run a command (stdout returned, stderr passed through); raise on failure. Returns (stdout, wall seconds)."""
    log(shown(cmd))
    t0 = time.perf_counter()
    res = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, text=True)
    if res.returncode:
        raise SystemExit(f"failed ({res.returncode}): {shown(cmd)}")
    return res.stdout, time.perf_counter() - t0


def train(preset: str, out: Path, overrides: list[str]) -> dict:
    """`unigen train PRESET --out OUT overrides...`, or reuse OUT when its config.json is that same config."""
    cmd = [*UNIGEN, "train", preset, *[f"--{o}" for o in overrides], "--out", out]
    wanted = json.loads(call([*UNIGEN, "train", preset, *[f"--{o}" for o in overrides], "--dry-run"])[0])
    have = out / "config.json"
    if have.exists() and (out / "model.safetensors").exists() and R.read_config(out).to_dict() == wanted:
        log(f"reusing {out}")
        return {"command": shown(cmd), "seconds": None}
    _, seconds = call([*cmd, "--overwrite"] if have.exists() else cmd)
    return {"command": shown(cmd), "seconds": seconds}


def cached(out: Path, part: str, settings: dict, command: str, fn) -> dict:
    """fn() -> results, stored in OUT/PART.json with `settings` and the benchmark `command`; reused when the
    settings match."""
    path = out / f"{part}.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("settings") == settings:
            log(f"{part}: reusing {path}")
            return old
    t0 = time.perf_counter()
    res = {"settings": settings, "date": datetime.date.today().isoformat(), "command": command, **fn(),
           "part_seconds": time.perf_counter() - t0}
    path.write_text(json.dumps(res, indent=2))
    return res


# ---- MNIST: FD against NFE on one mnist-edm model ---------------------------------------------------------------

def forward_seconds(model, batch: int, repeats: int = 3) -> float:
    """Median wall time of one denoiser call on a batch of `batch` MNIST-sized inputs (fp32, no grad)."""
    D, x = denoiser(model), torch.randn(batch, *model.data_shape, generator=torch.Generator().manual_seed(0))
    sigma, times = torch.ones(batch), []
    with torch.no_grad():
        D(x, sigma)
        for _ in range(repeats):
            t0 = time.perf_counter()
            D(x, sigma)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sweep(model, cfg, out: Path, samplers: tuple[str, ...], budgets: list[int], args) -> list[dict]:
    """nfe_sweep.run_sweep into OUT, or its rows from OUT/nfe_sweep.json when that holds the same plan, n, seed and
    precision (so the 1000-NFE sweep can run in a process of its own beside the short one)."""
    path = out / "nfe_sweep.json"
    plan = [[s, k, list(b)] for s, k, b in nfe_sweep.sweep_plan(samplers, tuple(budgets))]
    if path.exists():
        old = json.loads(path.read_text())
        if (old["n"], old["seed"], old["precision"]) == (args.mnist_n, cfg.sample.seed, args.precision) and \
                [[r["sampler"], r["steps"], r["budgets"]] for r in old["rows"]] == plan:
            log(f"mnist: reusing {path}")
            return old["rows"]
    nfe_sweep.run_sweep(model, cfg, out, budgets=tuple(budgets), samplers=samplers, n=args.mnist_n,
                        precision=args.precision)
    return json.loads(path.read_text())["rows"]


def part_mnist(args, out: Path) -> dict:
    run_dir = out / "runs" / "mnist-edm"
    trained = train("mnist-edm", run_dir, [f"train.steps={args.mnist_steps}", "train.progress=false", "train.log_every=10"])
    cfg, model = R.read_config(run_dir), R.load(run_dir)
    fwd = forward_seconds(model, args.mnist_n)
    log(f"mnist: one UNet forward at batch {args.mnist_n}: {fwd:.2f} s")
    samplers = tuple(s for s in METHODS["edm"].samplers                # dpm-adaptive picks its own NFE: no budget
                     if s not in nfe_sweep.SKIP and SAMPLERS[s].nfe is not None)
    short = [b for b in args.mnist_budgets if b < nfe_sweep.LONG_FROM]
    long_ = [b for b in args.mnist_budgets if b >= nfe_sweep.LONG_FROM]
    sweep_dir = out / "mnist-sweep"
    rows = sweep(model, cfg, sweep_dir / "short", samplers, short, args)
    if long_:
        rows += sweep(model, cfg, sweep_dir / "long", tuple(args.mnist_long), long_, args)
    scorer = nfe_sweep.make_scorer(model, cfg, n=args.mnist_n)
    nfe_sweep.write_report(rows, scorer, cfg, sweep_dir, args.precision)     # the merged table, JSON and plot

    # FD's own noise at this n: the best <= 35 NFE row and the real-data floor with other noise / subset seeds.
    best35 = min((r for r in rows if r["nfe"] <= 35 and math.isfinite(r["fd"])), key=lambda r: r["fd"])
    reseed = []
    for seed in args.noise_seeds:
        sc = nfe_sweep.make_scorer(model, cfg, n=args.mnist_n, seed=seed)
        reseed.append({"seed": seed, **sc.baseline(),
                       **nfe_sweep.score(model, sc, sampler=best35["sampler"], steps=best35["steps"],
                                         precision=args.precision)})
        log(f"mnist: seed {seed}: {reseed[-1]}")
    return {"train": trained, "forward_seconds": fwd, "n": args.mnist_n, "seed": scorer.seed,
            **scorer.baseline(), "rows": rows, "reseed": reseed,
            "sweep_command": f"nfe_sweep.run_sweep(model, cfg, DIR, budgets={tuple(short)}, samplers={samplers}, "
                             f"n={args.mnist_n}, precision={args.precision!r}) and budgets={tuple(long_)} for "
                             f"samplers={tuple(args.mnist_long)}"}


# ---- toy2d: DDPM vs EDM vs flow matching at the same training budget ----------------------------------------------

def part_toy(args, out: Path) -> dict:
    res = {"models": {}}
    for preset in TOY_PRESETS:
        run_dir = out / "runs" / preset
        trained = train(preset, run_dir, [f"train.steps={args.toy_steps}", "train.progress=false"])
        stdout, secs = call([*UNIGEN, "eval", run_dir, "--json"])
        default = json.loads(stdout)
        cfg, model = R.read_config(run_dir), R.load(run_dir)
        scorer = nfe_sweep.make_scorer(model, cfg)                  # unigen eval's: n = 5000, seed sample.seed
        sampler = cfg.sample.sampler
        steps = cfg.sample.steps or SAMPLERS[sampler].default_steps
        rows = {"default": {"sampler": sampler, "steps": steps, "nfe": nfe_sweep.nfe(sampler, steps),
                            "swd": default["swd"], "mmd": default["mmd"], "seconds": secs}}
        for key, s in (("own", sampler), ("heun", "heun")):
            k = nfe_sweep.steps_for(s, args.toy_nfe)
            rows[key] = {"sampler": s, "steps": k,
                         **nfe_sweep.score(model, scorer, sampler=s, steps=k, precision=cfg.train.precision)}
        log(f"toy: {preset}: {rows}")
        res["models"][preset] = {"train": trained, "eval_command": shown([*UNIGEN, "eval", run_dir, "--json"]),
                                 "n_eval": scorer.n, "rows": rows, **scorer.baseline()}
    return res


# ---- rectified flow --------------------------------------------------------------------------------------------

def part_rectified(args, out: Path) -> dict:
    cmd = [sys.executable, "-m", "unigen.families.continuous_diffusion.rectified", "--out", out / "rectified",
           "--train-steps", args.rf_steps, "--distill-steps", args.rf_distill_steps, "--pairs", args.rf_pairs]
    _, secs = call(cmd)
    return {"rectified_command": shown(cmd), "seconds": secs,
            **json.loads((out / "rectified" / "rectified.json").read_text())}


# ---- the report ------------------------------------------------------------------------------------------------

def _f(v: float, digits: int = 4) -> str:
    return f"{v:.{digits}g}" if math.isfinite(v) else "diverged"


def _secs(s: float | None) -> str:
    return "not in this invocation: an existing run was reused" if s is None else f"{s:.0f} s"


def md_mnist(r: dict) -> list[str]:
    rows = r["rows"]
    budgets = sorted({b for x in rows for b in x["budgets"]})
    names = list(dict.fromkeys(x["sampler"] for x in rows))
    cell = {(x["sampler"], b): x for x in rows for b in x["budgets"]}
    ok = [x for x in rows if math.isfinite(x["fd"])]
    best35 = min((x for x in ok if x["nfe"] <= 35), key=lambda x: x["fd"])
    top = max(int(x["nfe"]) for x in rows)
    best_top = min((x for x in ok if x["nfe"] == top), key=lambda x: x["fd"])
    gap = best35["fd"] / best_top["fd"] - 1
    fds = [s["fd"] for s in r["reseed"]] + [best35["fd"]]
    floors = [(r["seed"], r["fd_data"])] + [(s["seed"], s["fd_data"]) for s in r["reseed"]]
    sd = statistics.stdev(fds) if len(fds) > 1 else float("nan")
    out = ["## 1. MNIST: Frechet distance against NFE, every EDM sampler on one mnist-edm model", "",
           f"- {r['date']}, 2-core CPU ({machine()}); command: `{r['command']}`",
           f"- model: `{r['train']['command']}` (training wall time {_secs(r['train']['seconds'])}); EMA weights; "
           f"the network runs in {r['settings']['precision']} at sampling",
           f"- sweep: `{r['sweep_command']}`; wall time of the part {r['part_seconds']:.0f} s",
           f"- metric: `fd`, the Frechet distance of the bundled feature CNN (`unigen.metrics.features`, 128 features) "
           f"against the 10,000 test images, n = {r['n']} samples, noise seed {r['seed']}; every cell uses the same "
           f"n starting noises. One UNet forward at batch {r['n']}: {r['forward_seconds']:.2f} s",
           f"- real-data floor at the same n (n training images vs the test set): fd = {r['fd_data']:.4g}", "",
           "| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for s in names:
        vals = []
        for b in budgets:
            x = cell.get((s, b))
            vals.append("" if x is None else _f(x["fd"]) + (f" ({int(x['nfe'])})" if int(x["nfe"]) != b else ""))
        out.append(f"| {s} | " + " | ".join(vals) + " |")
    out += ["", "Each sampler gets the most steps whose NFE fits the budget (the NFE used is in brackets when lower); "
            "`ddim` (eta = 0) is left out, being the same update as `euler`. The 1000-NFE column is run for "
            f"{', '.join(r['settings']['mnist_long'])} only (CPU budget).", "",
            f"**EDM's claim** (best sampler at <= 35 NFE within 5% of the best {top}-NFE result): best <= 35 NFE is "
            f"{best35['sampler']} ({best35['steps']} steps, NFE {int(best35['nfe'])}) with fd = {best35['fd']:.4g}; "
            f"best at {top} NFE is {best_top['sampler']} with fd = {best_top['fd']:.4g}; gap "
            f"(fd(best <= 35) / fd(best {top}) - 1) = {100 * gap:+.1f}% -> "
            f"{'within' if gap <= 0.05 else 'NOT within'} 5%{' (the <= 35 NFE result is the better one)' if gap < 0 else ''}.",
            "",
            f"FD noise at n = {r['n']}: the same {best35['sampler']} row re-scored with noise seeds "
            f"{', '.join(str(s['seed']) for s in r['reseed'])} gives fd = "
            f"{', '.join(_f(s['fd']) for s in r['reseed'])} (with seed {r['seed']}: mean {statistics.mean(fds):.4g}, "
            f"sd {sd:.3g}, i.e. {100 * sd / statistics.mean(fds):.1f}% of the mean); the real-data floor with other "
            f"random subsets of n training images: {', '.join(f'seed {k}: {_f(v)}' for k, v in floors)}."]
    return out


def md_toy(r: dict) -> list[str]:
    models = r["models"]
    first = next(iter(models.values()))
    nfe_m = r["settings"]["toy_nfe"]
    out = ["## 2. toy2d checkerboard: DDPM vs EDM vs flow matching at the same training budget", "",
           f"- {r['date']}, 2-core CPU ({machine()}); command: `{r['command']}`; wall time of the part {r['part_seconds']:.0f} s",
           "- the three presets share data (checkerboard), network (residual MLP, width 256, 4 blocks), optimiser, "
           f"batch 512 and {r['settings']['toy_steps']} steps; only the loss / parameterization differs",
           *[f"- `{m['train']['command']}` (training wall time {_secs(m['train']['seconds'])}); "
             f"default row: `{m['eval_command']}`" for m in models.values()],
           f"- metrics against {first['n_eval']} fresh data points, seed 0: sliced W_2 (256 directions) and "
           "unbiased MMD^2 (RBF mixture, first 2000 points); every row of a model uses the same starting noise",
           f"- real-data floor at the same n: swd = {first['swd_data']:.4f}, mmd = {first['mmd_data']:.2e}", "",
           f"| method | default sampler (NFE) | SWD | MMD^2 | own sampler at {nfe_m} NFE | SWD | MMD^2 | "
           f"heun at {nfe_m} NFE: SWD | MMD^2 |", "|---|---|---|---|---|---|---|---|---|"]
    for preset, m in models.items():
        d, o, h = m["rows"]["default"], m["rows"]["own"], m["rows"]["heun"]
        out.append(f"| {preset.split('-')[1]} | {d['sampler']} x{d['steps']} ({int(d['nfe'])}) | {d['swd']:.4f} | "
                   f"{d['mmd']:.2e} | {o['sampler']} x{o['steps']} ({int(o['nfe'])}) | {o['swd']:.4f} | "
                   f"{o['mmd']:.2e} | {h['swd']:.4f} ({int(h['nfe'])}) | {h['mmd']:.2e} |")
    return out


def md_rectified(r: dict) -> list[str]:
    out = [f"## 3. Rectified flow on toy2d {r['toy']}: 1-rectified vs 2-rectified (reflow) vs distilled", "",
           f"- {r['date']}, 2-core CPU ({machine()}); command: `{r['command']}`, which runs `{r['rectified_command']}` "
           f"(wall time {r['seconds']:.0f} s)",
           f"- 1-rectified: toy2d-fm trained {r['train_steps']} steps; 2-rectified: fine-tuned from it {r['train_steps']} "
           f"steps on {r['n_pairs']} (noise, ODE endpoint) pairs of the 1-rectified flow (midpoint, 50 steps); "
           f"distilled: the 2-rectified flow fine-tuned {r['distill_steps']} steps for one Euler step on the same pairs",
           f"- SWD against {r['n_eval']} fresh data points, Euler steps in flow time from the same noise; straightness "
           "S (Liu et al. 2022, Eq. 5) on 100 Euler steps, 0 for straight paths",
           f"- real-data floor at the same n: swd = {r['swd_data']:.4f}", "",
           "| model | straightness S | SWD 1 step | SWD 2 steps | SWD 50 steps |", "|---|---|---|---|---|"]
    for name, m in r["models"].items():
        out.append(f"| {name} | {m['straightness']:.3g} | {m['swd@1']:.4f} | {m['swd@2']:.4f} | {m['swd@50']:.4f} |")
    return out


def report(results: dict) -> str:
    lines = ["# Diffusion sample quality (measured)", "",
             "Made by `benchmarks/diffusion_quality.py`; numbers as measured, one run each unless stated. "
             "Wall times depend on the other load on the machine (its load average is given with each part).", ""]
    for part, fn in (("mnist", md_mnist), ("toy", md_toy), ("rectified", md_rectified)):
        if part in results:
            lines += [*fn(results[part]), ""]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ints = lambda s: [int(v) for v in s.split(",") if v]           # noqa: E731
    p = argparse.ArgumentParser(prog="python -m benchmarks.diffusion_quality", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder: runs/, PART.json, diffusion_quality.md")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--mnist-steps", type=int, default=600, help="training steps of mnist-edm (default 600, the preset's)")
    p.add_argument("--mnist-n", type=int, default=256, help="samples per FD score (default 256)")
    p.add_argument("--mnist-budgets", type=ints, default=[5, 10, 20, 35, 1000],
                   help="NFE budgets, comma-separated (default 5,10,20,35,1000)")
    p.add_argument("--mnist-long", type=lambda s: [v for v in s.split(",") if v], default=["euler"],
                   help=f"samplers run at budgets >= {nfe_sweep.LONG_FROM} NFE (default euler)")
    p.add_argument("--noise-seeds", type=ints, default=[1, 2], help="extra seeds for FD's noise (default 1,2)")
    p.add_argument("--precision", default="fp32", help="network precision while sampling MNIST (default fp32)")
    p.add_argument("--toy-steps", type=int, default=3000, help="training steps of each toy2d run (default 3000)")
    p.add_argument("--toy-nfe", type=int, default=35, help="the matched NFE of the toy2d comparison (default 35)")
    p.add_argument("--rf-steps", type=int, default=3000, help="steps of the 1- and 2-rectified flows (default 3000)")
    p.add_argument("--rf-distill-steps", type=int, default=1000, help="steps of the distillation (default 1000)")
    p.add_argument("--rf-pairs", type=int, default=10_000, help="reflow pairs (default 10000)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in this process (default 2)")
    args = p.parse_args(argv)
    args.parts = subset(p, args.parts, PARTS, "part(s)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    out, cmd = start("benchmarks.diffusion_quality", args.out, args.threads, argv)
    settings = {"mnist": ("mnist_steps", "mnist_n", "mnist_budgets", "mnist_long", "noise_seeds", "precision"),
                "toy": ("toy_steps", "toy_nfe"), "rectified": ("rf_steps", "rf_distill_steps", "rf_pairs")}
    fns = {"mnist": part_mnist, "toy": part_toy, "rectified": part_rectified}
    results = {}
    for part in PARTS:
        s = {k: getattr(args, k) for k in settings[part]}
        if part in args.parts:
            results[part] = cached(out, part, s, cmd, lambda: fns[part](args, out))
        elif (out / f"{part}.json").exists():                       # an earlier run of that part: keep its table
            results[part] = json.loads((out / f"{part}.json").read_text())
    (out / "diffusion_quality.md").write_text(report(results))
    log(f"wrote {out / 'diffusion_quality.md'}")


if __name__ == "__main__":
    main()
