"""Bits per dimension of the 8-bit MNIST test images, one table across every family that has a likelihood.

    python -m benchmarks.likelihood [--out DIR] [--steps 150] [--batch-size 16] [--test-n 500] [--ode-n 128]
                                    [--rows PRESET,...|baselines] [--quick]

Every entry is bits/dim of the same 8-bit pixels (28 x 28 x 256 levels) on MNIST's test split, so the rows compare
directly. What kind of number each is, is stated beside it:
    exact NLL              the model's probability of the 8-bit image (discrete models) or the dequantised density
                           (flows; bits/dim = (NLL + D ln 128) / (D ln 2) of x in [-1, 1], an upper bound on the
                           discrete NLL of the flow's own quantisation)
    variational bound      a stochastic upper bound on the discrete NLL (DDPM's L with its discretised decoder; MDLM's
                           NELBO), Monte Carlo over timesteps / masks, with its standard error
    ODE estimate           the probability-flow ODE density of the uniformly dequantised image, RK4 and Hutchinson's
                           trace: an upper bound in expectation up to the solver's error
    baselines              uniform over 256 levels (8 bits exactly); per-position and shared pixel histograms fitted
                           on the training split with add-one (Laplace) smoothing
Training budget: every trained row gets the same number of optimiser steps (`--steps`) at the same batch size
(`--batch-size`), so each sees the same number of training images; everything else is the preset's own. Runs land in
DIR/runs/PRESET and are reused when their config matches. Rows whose preset is not registered show "not built".
DIR/likelihood.json holds the numbers, DIR/likelihood.md the table (copy it to benchmarks/likelihood.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from benchmarks.harness import log, machine, start  # noqa: E402
from unigen import run as R  # noqa: E402
from unigen.config import apply_overrides  # noqa: E402
from unigen.data import MnistPixelsData, load  # noqa: E402
from unigen.errors import UserError  # noqa: E402
from unigen.registry import PRESETS, get_preset  # noqa: E402

LEVELS = 256


@dataclass(frozen=True)
class Row:
    label: str
    preset: str                      # "" = a baseline computed here
    kind: str                        # what kind of number: exact NLL, variational bound, ODE estimate, ...
    literature: str                  # the published number at full scale, cited (MNIST or CIFAR-10 said)
    eval_kw: dict = field(default_factory=dict)      # the task's evaluate options (`{test_n}` -> --test-n)
    missing: str = "not built yet"   # shown when the preset is not registered


ROWS = (
    Row("uniform over 256 levels", "", "exact NLL (baseline)", "8 by definition"),
    Row("pixel histogram, shared", "", "exact NLL (baseline, Laplace-smoothed)", "-"),
    Row("pixel histogram, per position", "", "exact NLL (baseline, Laplace-smoothed)", "-"),
    Row("NICE", "mnist-nice", "exact NLL (dequantised)",
        "MNIST 4.36 (Dinh et al. 2015: log-likelihood 1980.5 nats, our conversion)"),
    Row("RealNVP", "mnist-realnvp", "exact NLL (dequantised)",
        "MNIST 1.06 (as tabulated by FFJORD, Grathwohl et al. 2019); CIFAR-10 3.49 (Dinh et al. 2017)"),
    Row("Glow", "mnist-glow", "exact NLL (dequantised)",
        "MNIST 1.05 (as tabulated by FFJORD); CIFAR-10 3.35 (Kingma & Dhariwal 2018)"),
    Row("VAE", "mnist-vae", "variational bound (IWAE, K = 64; discretised logistic p(x|z))",
        "binarised MNIST only (not comparable): VAE 86.76 nats, IWAE 84.78 (Burda et al. 2016, K = 5000)",
        eval_kw={"n": "{test_n}"}, missing="not built yet (issue 11)"),
    Row("autoregressive transformer over pixels", "mnist-pixel-ar", "exact NLL (discrete)",
        "CIFAR-10: PixelCNN 3.14, Gated PixelCNN 3.03 (van den Oord 2016), PixelCNN++ 2.92",
        eval_kw={"seqs": "{test_n}"}),
    Row("masked diffusion (MDLM) over pixels", "mnist-pixel-mdlm", "variational bound (NELBO, 2 masks per image)",
        "CIFAR-10: D3PM absorbing 4.40, D3PM Gaussian 3.44 (Austin et al. 2021)", eval_kw={"seqs": "{test_n}", "mc": 2}),
    Row("DDPM", "mnist-ddpm", "variational bound (Ho et al. L; 2 timesteps per image, q(t) ~ 1/t)",
        "CIFAR-10: 3.70 (Ho et al. 2020, L); 2.94 learned variances (Nichol & Dhariwal 2021)",
        eval_kw={"likelihood": "vlb", "n": "{test_n}"}),
    Row("DDPM, probability-flow ODE", "mnist-ddpm", "ODE estimate (RK4 16 steps, Hutchinson)",
        "CIFAR-10: 3.28 (Ho et al.'s model through the ODE, Song et al. 2021)", eval_kw={"likelihood": "ode", "n": "{ode_n}"}),
    Row("EDM, probability-flow ODE", "mnist-edm", "ODE estimate (RK4 16 steps, Hutchinson)",
        "CIFAR-10: 2.99 (Song et al. 2021, sub-VP ODE); VDM 2.65 (bound)", eval_kw={"likelihood": "ode", "n": "{ode_n}"}),
)


# ---- the baselines -----------------------------------------------------------------------------------------------

def uniform_bits(tokens: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """Bits/dim of each image (N,) under the uniform distribution over `levels` values: log2(levels) exactly."""
    return torch.full((tokens.shape[0],), math.log2(levels), dtype=torch.float64)


def histogram_bits(train: torch.Tensor, test: torch.Tensor, *, per_position: bool, alpha: float = 1.0,
                   levels: int = LEVELS) -> torch.Tensor:
    """Bits/dim of each test image (M,) under independent pixels with categorical marginals fitted on `train`
    (N, D) tokens with add-alpha (Laplace for alpha = 1) smoothing: p(k) = (count(k) + alpha) / (N + levels alpha),
    one histogram per position, or one shared by all positions (counts pooled over the N D training pixels)."""
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise UserError(f"histograms need (N, D) token tensors of the same D, got {tuple(train.shape)}, {tuple(test.shape)}")
    D = train.shape[1]
    if per_position:
        counts = torch.zeros(D, levels, dtype=torch.float64).scatter_add_(
            1, train.T.long(), torch.ones(D, train.shape[0], dtype=torch.float64))   # (D, levels)
    else:
        counts = torch.bincount(train.flatten().long(), minlength=levels).double().expand(D, levels)
    logp = torch.log2(counts + alpha) - torch.log2(counts.sum(1, keepdim=True) + levels * alpha)   # (D, levels)
    return -logp.gather(1, test.T.long()).T.sum(1) / D                              # (M,)


def baselines(test_n: int) -> list[dict]:
    """The three data-independent / histogram rows on the whole test split and on the first `test_n` images."""
    train = load(MnistPixelsData(), "train").tensors["ids"]
    test = load(MnistPixelsData(), "test").tensors["ids"]
    bits = [uniform_bits(test), histogram_bits(train, test, per_position=False),
            histogram_bits(train, test, per_position=True)]
    return [{"bits_per_dim": b.mean().item(), "bits_per_dim_se": (b.std() / math.sqrt(len(b))).item(),
             "bits_per_dim_first_n": b[:test_n].mean().item(), "images": len(b)} for b in bits]


# ---- the trained rows ----------------------------------------------------------------------------------------------

def overrides(args) -> list[str]:
    return [f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", "train.progress=false",
            f"train.ckpt_every={args.steps}", "train.eval_every=0", "train.sample_every=0"]


def train_row(preset: str, out: Path, args) -> dict:
    """Train `preset` with the equal budget into out, or reuse out when it holds the same config and weights."""
    cfg = apply_overrides(get_preset(preset), overrides(args))
    command = f"unigen train {preset} " + " ".join(f"--{o}" for o in overrides(args)) + f" --out {out}"
    if (out / "model.safetensors").exists() and R.read_config(out).to_dict() == cfg.to_dict():
        log(f"reusing {out}")
        info = json.loads((out / "bench_train.json").read_text()) if (out / "bench_train.json").exists() else {}
        return {"command": command, "train_seconds": info.get("train_seconds"), "reused": True}
    log(command)
    t0 = time.perf_counter()
    R.train(cfg, out, overwrite=out.exists())
    seconds = time.perf_counter() - t0
    (out / "bench_train.json").write_text(json.dumps({"train_seconds": seconds}))
    return {"command": command, "train_seconds": seconds, "reused": False}


def eval_kw(row: Row, args) -> dict:
    """The row's evaluate options with --test-n / --ode-n filled in; --quick caps the image counts at 16 and sets quick."""
    fill = {"{test_n}": args.test_n, "{ode_n}": args.ode_n}
    kw = {k: fill.get(v, v) if isinstance(v, str) else v for k, v in row.eval_kw.items()}
    if args.quick:
        kw = {**{k: (min(v, 16) if k in ("n", "seqs") else v) for k, v in kw.items()}, "quick": True}
    return kw


def measure_row(row: Row, args, out: Path) -> dict:
    if row.preset not in PRESETS:
        return {"status": row.missing}
    run_dir = out / "runs" / row.preset
    trained = train_row(row.preset, run_dir, args)
    kw = eval_kw(row, args)
    cache = run_dir / f"bench_eval_{_slug(row.label)}.json"
    if trained["reused"] and cache.exists() and json.loads(cache.read_text()).get("eval_kw") == kw:
        log(f"reusing {cache}")
        return {**json.loads(cache.read_text()), **trained}
    t0 = time.perf_counter()
    metrics = R.evaluate(run_dir, **kw)
    if "bits_per_dim" not in metrics:
        return {"status": f"its evaluate reports no bits_per_dim (keys: {', '.join(metrics)})", **trained}
    res = {"status": "ok", "eval_kw": kw, "eval_seconds": time.perf_counter() - t0, "metrics": metrics,
           "bits_per_dim": metrics["bits_per_dim"], "bits_per_dim_se": metrics.get("bits_per_dim_se", 0.0)}
    cache.write_text(json.dumps(res, indent=2))
    return {**res, **trained}


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower())


# ---- the table ---------------------------------------------------------------------------------------------------

def _cell(r: dict) -> str:
    if r.get("status") != "ok":
        return r.get("status", "")
    se = r.get("bits_per_dim_se") or 0.0
    return f"{r['bits_per_dim']:.3f}" + (f" ± {se:.3f}" if se else "")


def _budget(r: dict, args) -> str:
    if r.get("status") != "ok" or "train_seconds" not in r:
        return "-" if r.get("status") == "ok" else ""
    secs = r.get("train_seconds")
    return f"{args.steps} x {args.batch_size}" + (f" ({secs / 60:.1f} min)" if secs else "")


def markdown(rows: list[tuple[Row, dict]], args, command: str) -> str:
    lines = ["# Bits/dim on the MNIST test set (8-bit pixels), every family with a likelihood", "",
             f"Command: `{command}`  ", f"Machine: {machine()}  ",
             f"Budget: every trained row {args.steps} optimiser steps of batch {args.batch_size} "
             f"({args.steps * args.batch_size} training images); wall minutes of training in brackets.", "",
             "| model | preset | kind of number | bits/dim ± s.e. | test images | budget (steps x batch) | literature, full scale |",
             "|---|---|---|---|---|---|---|"]
    for row, r in rows:
        m = r.get("metrics", {})
        images = r.get("images") or m.get("images") or m.get("seqs") or m.get("n_eval") or ""   # per family
        lines.append(f"| {row.label} | {row.preset or '-'} | {row.kind} | {_cell(r)} | {_int(images)} | "
                     f"{_budget(r, args)} | {row.literature} |")
    return "\n".join(lines) + "\n"


def _int(v) -> str:
    return f"{int(v):,}" if isinstance(v, (int, float)) and v else str(v)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.likelihood", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="outputs/likelihood", help="folder for runs, likelihood.json, likelihood.md")
    p.add_argument("--steps", type=int, default=150, help="optimiser steps of every trained row (default 150)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of every trained row (default 16)")
    p.add_argument("--test-n", type=int, default=500,
                   help="test images scored by the model rows, the first N of the split (default 500)")
    p.add_argument("--ode-n", type=int, default=128,
                   help="test images of the ODE rows, the first N (default 128: each costs 64 network passes "
                        "with gradients)")
    p.add_argument("--rows", default="", help="comma-separated presets (or 'baselines') to run; default all")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: 16 test images per model row")
    args = p.parse_args(argv)
    if min(args.steps, args.batch_size, args.test_n, args.ode_n, args.threads) < 1:
        p.error("--steps, --batch-size, --test-n, --ode-n and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    out, command = start("benchmarks.likelihood", args.out, args.threads, argv)
    wanted = {w.strip() for w in args.rows.split(",") if w.strip()}
    path = out / "likelihood.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    base = None
    results = []
    for row in ROWS:
        key = f"{row.preset or 'baseline'}: {row.label}"
        if wanted and (row.preset or "baselines") not in wanted:
            results.append((row, old.get(key, {"status": "not run"})))
            continue
        if not row.preset:
            base = base or baselines(args.test_n)
            r = {"status": "ok", **base[[x for x in ROWS if not x.preset].index(row)]}
        else:
            log(f"{row.label} ({row.preset})")
            r = measure_row(row, args, out)
        old[key] = r
        path.write_text(json.dumps(old, indent=2, default=str))
        results.append((row, r))
    md = markdown(results, args, command)
    (out / "likelihood.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
