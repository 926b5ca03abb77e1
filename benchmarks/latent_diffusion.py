"""Latent diffusion on shapes: prompt adherence and Frechet distance against the guidance scale, a picture per
prompt and scale, and the cost of latent (f = 4) against pixel-space (f = 1, the paper's LDM-1) diffusion.

    python -m benchmarks.latent_diffusion --out DIR --ldm RUN [--pixel RUN] [--scales 0,1,2,4,7.5] [--n 200]

RUN directories are trained `shapes-ldm` runs (`--pixel`: the same preset with `--model.autoencoder=none` and a
UNet that reaches the same 8 x 8 and 4 x 4 attention sides). For every scale the run's sampler (DDIM, 50 steps)
draws one image for each of the first n single-shape test captions, scored by the family's evaluation
(unigen.families.latent_diffusion.evaluate: attribute-classifier adherence, fd on its features, the real-data
rows and chance). DIR gets results.json, latent_diffusion.md (the tables), adherence.png (adherence and fd against
the scale) and prompts_s<scale>.png (8 fixed prompts x 5 seeds). With --pixel, one training step of each run's
model (batch 64, torch threads = 1, bf16 autocast, first-stage encoding included) and one sampling run of 16
images are timed interleaved in this process (benchmarks.harness.interleave); the cost of a step does not depend on
the weights, so the pixel run may be a 2-step one.
"""
from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.harness import interleave, start
from unigen import run
from unigen.data import load
from unigen.data.shapes import encode_words
from unigen.families.latent_diffusion import evaluate
from unigen.families.continuous_diffusion.network import sigmas_for
from unigen.families.latent_diffusion.network import generate, unwrap
from unigen.io import atomic_write_json, atomic_write_text
from unigen.plot import figure, save_image_grid
from unigen.registry import TASKS

PROMPTS = ("a big red circle on the left", "a small blue square at the top right", "a big green triangle in the middle",
           "a small yellow circle at the bottom", "a big white square at the bottom left", "a small cyan triangle on the right",
           "a big magenta circle at the top", "a big orange square in the middle")
KEYS = ("adherence_colour", "adherence_shape", "adherence_size", "adherence_position", "adherence_all", "fd")


def sweep(run_dir: Path, scales: list[float], n: int, out: Path, tag: str) -> list[dict]:
    cfg, model = run.read_config(run_dir), run.load(run_dir)
    steps = cfg.sample.steps
    rows = []
    for s in scales:
        r = evaluate.score(model, cfg, sampler=cfg.sample.sampler, steps=steps, guidance=s, n=n)
        rows.append(r)
        print(f"{tag} guidance {s}: " + ", ".join(f"{k} {r[k]:.3f}" for k in KEYS), flush=True)
        ids = torch.tensor([encode_words(p) for p in PROMPTS for _ in range(5)])
        x = generate(model, ids, sampler=cfg.sample.sampler, steps=steps, guidance=s,
                     generator=torch.Generator().manual_seed(0))
        save_image_grid(x, out / f"{tag}_prompts_s{s:g}.png", nrow=5)
    return rows


def table(rows: list[dict], tag: str) -> list[str]:
    head = "| guidance | colour | shape | size | position | all four | fd | seconds |"
    lines = [f"### {tag}", "", head, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['guidance']:g} | " + " | ".join(f"{r[k]:.3f}" for k in KEYS) + f" | {r['seconds']:.0f} |")
    r = rows[0]
    lines.append("| real train pictures | " + " | ".join(f"{r[k + '_data']:.3f}" for k in KEYS) + " | |")
    lines.append("| chance | " + " | ".join(f"{r['chance_' + k.split('_')[1]]:.3f}" for k in KEYS[:4]) + " | | | |")
    return lines + [""]


def plot(rows: list[dict], path: Path) -> None:
    s = [r["guidance"] for r in rows]
    with figure(path, (6, 4)) as ax:
        for k in KEYS[:5]:
            ax.plot(s, [r[k] for r in rows], marker="o", label=k.split("_")[1])
        ax.set_xlabel("guidance scale")
        ax.set_ylabel("prompt adherence")
        ax.legend(loc="center right")
        twin = ax.twinx()
        twin.plot(s, [r["fd"] for r in rows], "k--", marker="x", label="fd")
        twin.set_ylabel("fd (dashed)")


def speed(ldm: Path, pixel: Path, repeats: int) -> dict:
    """Seconds per training step (batch 64) and per 16-image sampling run, interleaved, threads = 1."""
    torch.set_num_threads(1)
    sides = {}
    for tag, run_dir in (("latent", ldm), ("pixel", pixel)):
        cfg = run.read_config(run_dir)
        model = run.load(run_dir).train()
        batch = load(cfg.data, "train").batch(torch.arange(64))
        task = TASKS[cfg.task]

        def step(model=model, batch=batch, task=task, cfg=cfg):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"):
                task.loss(model, batch).backward()
            model.zero_grad(set_to_none=True)

        ids = load(cfg.data, "test").tensors["word_ids"][:16]
        draw = lambda model=model, ids=ids, cfg=cfg: generate(model, ids, sampler=cfg.sample.sampler,
                                                               steps=cfg.sample.steps, guidance=3.0,
                                                               generator=torch.Generator().manual_seed(0))
        sides[tag] = (step, draw)
    train = interleave(sides["latent"][0], sides["pixel"][0], repeats)
    samp = interleave(sides["latent"][1], sides["pixel"][1], max(2, repeats // 3))
    med = statistics.median
    return {"train_step_latent": med(train[0]), "train_step_pixel": med(train[1]),
            "sample16_latent": med(samp[0]), "sample16_pixel": med(samp[1])}


def _single(cfg, split: str) -> tuple[Tensor, Tensor]:
    """(pictures, position ids) of the single-shape pictures of a split of the run's data."""
    t = load(cfg.data, split).tensors
    one = (t["attributes"][:, 1:, 0] < 0).all(1)
    return t["x"][one], t["attributes"][one][:, 0, 3]


def leak(run_dir: Path, grid_steps: tuple[int, ...] = (0, 1, 2, 5, 10)) -> list[dict]:
    """How much of the prompted attribute "position" the noisy input x_sigma = z + sigma eps already shows at the
    first levels of the run's sampling grid (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps
    are Flawed": a schedule whose last level keeps signal trains a model that reads such attributes off x_t instead
    of the prompt, and at sampling, which starts from pure noise, takes them from the noise). A linear probe (softmax
    regression, full-batch Adam, 300 steps) is fitted on the training pictures' noised latents and scored on the
    test pictures'; chance is 1/9, and always answering the most frequent cell (the middle) scores `majority`
    (0.25 on shapes). sigma = inf (a flow grid's first level) is pure noise."""
    cfg, model = run.read_config(run_dir), run.load(run_dir)
    net = unwrap(model)
    sigmas = sigmas_for(net, cfg.sample.steps)
    (xtr, ptr), (xte, pte) = _single(cfg, "train"), _single(cfg, "test")
    with torch.no_grad():
        ztr = torch.cat([net.latents(xtr[i:i + 500]) for i in range(0, len(xtr), 500)]).flatten(1)
        zte = net.latents(xte).flatten(1)
    g = torch.Generator().manual_seed(0)
    majority = float((pte == torch.bincount(ptr).argmax()).float().mean())
    rows = []
    for k in (0, *grid_steps):
        sigma = 0.0 if k == 0 else float(sigmas[k - 1])
        noisy = lambda z: (torch.randn(z.shape, generator=g) if math.isinf(sigma)
                           else (z + sigma * torch.randn(z.shape, generator=g)) / (1 + sigma ** 2) ** 0.5)
        a, b = noisy(ztr), noisy(zte)
        W = torch.zeros(a.shape[1], 9, requires_grad=True)
        bias = torch.zeros(9, requires_grad=True)
        opt = torch.optim.Adam([W, bias], 1e-2)
        for _ in range(300):
            opt.zero_grad()
            F.cross_entropy(a @ W + bias, ptr).backward()
            opt.step()
        acc = float(((b @ W + bias).argmax(1) == pte).float().mean())
        rows.append({"grid_index": k - 1, "sigma": sigma, "position_probe_accuracy": acc, "majority": majority})
        print(f"leak: {'data (sigma 0)' if k == 0 else f'grid level {k - 1}'} sigma {sigma:.3g}: "
              f"position probe accuracy {acc:.3f} (chance {1 / 9:.3f}, majority {majority:.3f})", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--ldm", required=True, type=Path, help="a trained shapes-ldm run")
    p.add_argument("--pixel", type=Path, help="a pixel-space run of the same family (timed against --ldm)")
    p.add_argument("--scales", default="0,1,2,4,7.5")
    p.add_argument("--n", type=int, default=200, help="captions (images) per scale")
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--leak", action="store_true", help="only the position probe on the first grid levels (leak())")
    a = p.parse_args(argv)
    a.out, command = start("benchmarks.latent_diffusion", str(a.out), a.threads, argv)
    if a.leak:
        rows = leak(a.ldm)
        atomic_write_json(a.out / "leak.json", rows)
        return
    scales = [float(s) for s in a.scales.split(",")]
    results = {"ldm": sweep(a.ldm, scales, a.n, a.out, "latent")}
    lines = [f"`{command}`", ""] + table(results["ldm"], f"latent (f = 4): {a.ldm}")
    plot(results["ldm"], a.out / "adherence.png")
    if a.pixel:
        results["speed"] = speed(a.ldm, a.pixel, a.repeats)
        lines += [f"{k}: {v:.3f} s" for k, v in results["speed"].items()]
    atomic_write_json(a.out / "results.json", results)
    atomic_write_text(a.out / "latent_diffusion.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
