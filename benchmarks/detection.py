"""DETR on the procedural `scenes` (preset `shapes-detr`): COCO mAP / AP50 / AP75 on the 1,000 held-out scenes
beside a trivial baseline, the wall-clock training time with the machine's load, and the per-step time at one and
two torch threads.

    python -m benchmarks.detection --out DIR [--overrides train.steps=3000,train.lr=1e-3] [--pictures 8]

Training and evaluation go through unigen's API (`unigen.run.train`, `unigen.run.evaluate`) into DIR/run (training
is skipped when DIR/train_time.json exists, evaluation when DIR/run/eval.json does). The baseline knows nothing of the image: a 4 x 4 grid of boxes of the median training
box size, each with every class, scores drawn at random. DIR/results.json holds the numbers, DIR/pictures/ the
detections (score >= 0.5) drawn on the first held-out scenes.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from unigen import run
from unigen.config import apply_overrides
from unigen.data import load, to_uint8
from unigen.families.detection.boxes import cxcywh_to_xyxy
from unigen.families.detection.evaluate import coco_dicts, coco_map
from unigen.io import atomic_write_json, read_json
from unigen.plot import draw_boxes
from unigen.registry import TASKS, get_preset


def grid_baseline(cfg) -> dict:
    """mAP of image-blind guesses: 16 grid boxes of the median training size x every class, random scores."""
    train, test = load(cfg.data, "train"), load(cfg.data, "test")
    size = tuple(test.tensors["x"].shape[-2:])
    k = test.info["num_classes"]
    wh = train.tensors["boxes"][train.tensors["box_labels"] >= 0][:, 2:].median(0).values    # (2,)
    c = (torch.arange(4) + 0.5) / 4
    centres = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2)          # (16, 2)
    boxes = torch.cat([centres, wh.expand(16, 2)], 1).repeat_interleave(k, 0)              # (16 k, 4)
    n = len(test)
    labels = torch.arange(k).repeat(16).expand(n, -1)
    scores = torch.rand(n, 16 * k, generator=torch.Generator().manual_seed(0))
    xyxy = (cxcywh_to_xyxy(boxes) * torch.tensor([size[1], size[0]] * 2)).expand(n, -1, -1)
    gt, results = coco_dicts(test.tensors["boxes"], test.tensors["box_labels"], scores, labels, xyxy, size, k)
    return coco_map(gt, results)


def step_seconds(cfg, steps: int = 20) -> dict[int, float]:
    """Median seconds of one training step (loss, backward, clip, AdamW) at 1 and at 2 torch threads, interleaved
    in this process (a load spike hits both alike), after 4 warm-up steps."""
    threads = torch.get_num_threads()
    task, data = TASKS[cfg.task], load(cfg.data, "train")
    torch.manual_seed(0)
    model = task.build(cfg, data.info)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    times: dict[int, list[float]] = {1: [], 2: []}
    for s in range(4 + 2 * steps):
        torch.set_num_threads(1 + s % 2)
        batch = data.batch(torch.arange(s * cfg.train.batch_size, (s + 1) * cfg.train.batch_size))
        t = time.perf_counter()
        loss, _ = task.loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad()
        if s >= 4:
            times[1 + s % 2].append(time.perf_counter() - t)
    torch.set_num_threads(threads)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def pictures(run_dir: Path, cfg, out: Path, n: int) -> None:
    test = load(cfg.data, "test")
    model = run.load(run_dir)
    task = TASKS[cfg.task]
    found = task.detect(model, cfg, {"x": test.tensors["x"][:n]}, threshold=0.5)
    names = test.info["class_names"]
    for i, f in enumerate(found):
        caps = [f"{names[l]} {s:.2f}" for l, s in zip(f["labels"], f["scores"])]
        draw_boxes(to_uint8(test.tensors["x"][i]).permute(1, 2, 0), f["boxes"], caps, out / f"scene_{i}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--overrides", default="", help="comma-separated section.key=value for the preset")
    p.add_argument("--pictures", type=int, default=8)
    p.add_argument("--timing-only", action="store_true", help="only the per-step times (and the load average)")
    args = p.parse_args()
    out = Path(args.out)
    cfg = apply_overrides(get_preset("shapes-detr"), [o for o in args.overrides.split(",") if o])
    if args.timing_only:
        print({"step_seconds_by_threads": step_seconds(cfg), "load": os.getloadavg()})
        return
    run_dir = out / "run"
    if not (out / "train_time.json").exists():
        load_before = os.getloadavg()
        t = time.perf_counter()
        result = run.train(cfg, run_dir, overwrite=True)
        atomic_write_json(out / "train_time.json", {"train_seconds": time.perf_counter() - t, "steps": result.step,
                                                    "load_before": load_before, "load_after": os.getloadavg()})
    if not (run_dir / "eval.json").exists():
        run.evaluate(run_dir)
    results = {"detr": read_json(run_dir / "eval.json"), "grid_baseline": grid_baseline(cfg),
               "train": read_json(out / "train_time.json"), "step_seconds_by_threads": step_seconds(cfg),
               "load_at_step_timing": os.getloadavg(), "overrides": args.overrides}
    atomic_write_json(out / "results.json", results)
    pictures(run_dir, cfg, out / "pictures", args.pictures)
    print(results)


if __name__ == "__main__":
    main()
