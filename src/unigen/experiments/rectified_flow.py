"""Rectified flow on toy2d, end to end (Liu, Gong & Liu 2022): the 1-rectified flow, reflow pairs (Algorithm 1),
the 2-rectified flow trained on them, its one-step distillation, and a table of straightness and SWD at 1, 2 and 50
Euler steps. The math (losses, straightness) is `unigen.families.continuous_diffusion.rectified`.

    python -m unigen.experiments.rectified_flow --out DIR [--toy moons] [--train-steps 3000] ...
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor, nn

from unigen import run
from unigen.config import apply_overrides
from unigen.data import Dataset
from unigen.errors import UserError
from unigen.families.continuous_diffusion.evaluate import make_scorer
from unigen.families.continuous_diffusion.network import generate, unwrap
from unigen.families.continuous_diffusion.rectified import coupled_flow_loss, distill_loss, straightness
from unigen.io import atomic_write_json, atomic_write_text
from unigen.plot import save_scatter
from unigen.registry import get_preset
from unigen.train import fit


def _check_flow(model: nn.Module) -> None:
    if unwrap(model).config.method != "fm":
        raise UserError(f"rectified flow needs a flow-matching model (model.method=fm), got {unwrap(model).config.method}")


@torch.no_grad()
def reflow_pairs(model: nn.Module, n: int, generator: torch.Generator, *, sampler: str = "flow-midpoint",
                 steps: int = 50) -> tuple[Tensor, Tensor]:
    """Liu et al. 2022, Algorithm 1 (reflow): noise z ~ N(0, I) and x0 = the flow's ODE solution from z.

    The ODE is solved by the family's sampler (`sampler`, `steps`) from t_max = 0.999 (see schedules.Flow).
    Returns (z, x0), each (n, ...).
    """
    _check_flow(model)
    z = torch.randn((n, *unwrap(model).data_shape), generator=generator, device=generator.device)
    x0, _ = generate(model, n, sampler=sampler, steps=steps, generator=generator, noise=z)
    return z.cpu(), x0


def train_on_pairs(model: nn.Module, cfg, z: Tensor, x0: Tensor, run_dir: Path, *, distill: bool = False):
    """Fine-tune `model` (a DiffusionNet) on the coupling (z, x0) with `fit()` and cfg.train; RUN gets a config so
    `unigen sample RUN` works. Returns the EMA model (or the model when EMA is off)."""
    _check_flow(model)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    atomic_write_json(run_dir / "data_info.json", {"shape": list(x0.shape[1:])})
    loss = distill_loss if distill else coupled_flow_loss
    fit(model, lambda m, b: loss(m, b["x"], b["z"]).mean(), Dataset({"x": x0, "z": z}, {"shape": tuple(x0.shape[1:])}),
        cfg.train, run_dir)
    return run.load(run_dir)


def toy_experiment(out_dir: str | Path, *, toy: str = "moons", train_steps: int = 3000, distill_steps: int = 1000,
                   n_pairs: int = 10_000, n_eval: int = 5000, seed: int = 0) -> dict:
    """1-rectified flow, 2-rectified flow (reflow) and its one-step distillation on toy2d: SWD against fresh data at
    1, 2 and 50 Euler steps and straightness S. Writes OUT/rectified.{json,md} and scatter plots; returns the results."""
    out = Path(out_dir)
    cfg = apply_overrides(get_preset("toy2d-fm"), [f"data.toy={toy}", f"train.steps={train_steps}",
                                                   f"train.seed={seed}", "train.progress=false"])
    run.train(cfg, out / "rf1", overwrite=(out / "rf1" / "config.json").exists())
    rf1 = run.load(out / "rf1")
    z, x0 = reflow_pairs(rf1, n_pairs, torch.Generator().manual_seed(seed + 1))
    rf2 = train_on_pairs(run.load(out / "rf1", ema=True).train(), cfg, z, x0, out / "rf2")
    dcfg = apply_overrides(get_preset("toy2d-fm"), [f"data.toy={toy}", f"train.steps={distill_steps}",
                                                    f"train.seed={seed}", "train.progress=false", "train.lr=5e-4"])
    distilled = train_on_pairs(run.load(out / "rf2").train(), dcfg, z, x0, out / "distilled", distill=True)

    scorer = make_scorer(rf1, cfg, n=n_eval, seed=seed)
    z_eval = torch.randn((n_eval, 2), generator=torch.Generator().manual_seed(seed + 2))
    results = {"toy": toy, "train_steps": train_steps, "distill_steps": distill_steps, "n_pairs": n_pairs,
               "n_eval": n_eval, **scorer.baseline(), "models": {}}
    for name, model in (("1-rectified", rf1), ("2-rectified", rf2), ("2-rectified + distilled", distilled)):
        row = {"straightness": straightness(model, z_eval, 100)}
        for steps in (1, 2, 50):
            x, _ = generate(model, n_eval, sampler="flow-euler", steps=steps, generator=torch.Generator(),
                            noise=z_eval)
            row[f"swd@{steps}"] = scorer(x)["swd"]
            if steps in (1, 2):
                save_scatter(x, out / f"{name.replace(' ', '')}-{steps}step.png", f"{name}, {steps} Euler step(s)")
        results["models"][name] = row
    atomic_write_json(out / "rectified.json", results)
    lines = [f"# Rectified flow on toy2d {toy}: SWD (n = {n_eval}) against fresh data, Euler steps in flow time", "",
             f"Real data vs real data at the same n: swd = {results['swd_data']:.4f}", "",
             "| model | straightness S | SWD 1 step | SWD 2 steps | SWD 50 steps |", "|---|---|---|---|---|"]
    for name, r in results["models"].items():
        lines.append(f"| {name} | {r['straightness']:.3g} | {r['swd@1']:.4f} | {r['swd@2']:.4f} | {r['swd@50']:.4f} |")
    atomic_write_text(out / "rectified.md", "\n".join(lines) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m unigen.experiments.rectified_flow", description=toy_experiment.__doc__)
    p.add_argument("--out", required=True, help="output folder (runs rf1/, rf2/, distilled/ and the report)")
    p.add_argument("--toy", default="moons", help="toy2d distribution")
    p.add_argument("--train-steps", type=int, default=3000, help="steps of the 1- and 2-rectified flows each")
    p.add_argument("--distill-steps", type=int, default=1000, help="steps of the one-step distillation")
    p.add_argument("--pairs", type=int, default=10_000, help="number of reflow (noise, data) pairs")
    p.add_argument("--seed", type=int, default=0, help="seed of training, pairs and evaluation")
    a = p.parse_args(argv)
    res = toy_experiment(a.out, toy=a.toy, train_steps=a.train_steps, distill_steps=a.distill_steps,
                         n_pairs=a.pairs, seed=a.seed)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
