"""The demo's trajectory pictures, recorded with the per-step callback that `unigen serve` streams.

`Recorder` is a `Task.sample(callback=...)` that keeps a copy of every report (the sampler's state after each
step; the report formats are in serve/frames.py). From the reports:

    image_trajectory(reports, k)  rows at decreasing noise, each row k samples' x_t and then the same samples'
                                  x0 estimate D(x_t; sigma); the last row's x_t is the final sample
    text_trajectory(reports, ...) the canvas at evenly spaced steps, masked positions blank, each token tagged
                                  with the step that committed it (serve.frames.TextView, as the live page shows it)
    save_image_trajectory / save_text_trajectory write them as a PNG and a self-contained HTML page.

A report's `x` is the state after step i, at the noise level of the next report (0 after the last step); it is
shown scaled to unit spread at that level (serve.frames.shown_x_t), the x0 estimate as is.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from unigen.errors import UserError
from unigen.io import atomic_write_text
from unigen.plot import save_image_grid
from unigen.serve.frames import TextView, shown_x_t


class Recorder:
    """A sampler callback that keeps every report, its tensors copied to the CPU (samplers update their canvas in
    place, so a view would change under us)."""

    def __init__(self):
        self.reports: list[dict[str, Any]] = []

    def __call__(self, report: dict[str, Any]) -> None:
        self.reports.append({k: v.detach().cpu().clone() if isinstance(v, Tensor) else v for k, v in report.items()})


def evenly(n: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(n), first and last included (fewer when n < count)."""
    if n <= 0 or count <= 0:
        raise UserError(f"need at least one step and one row, got {n} steps and {count} rows")
    if count == 1 or n == 1:
        return [n - 1]
    return sorted({round(j * (n - 1) / (count - 1)) for j in range(count)})


def image_trajectory(reports: list[dict[str, Any]], rows: int = 6, k: int = 8) -> tuple[Tensor, list[float]]:
    """The trajectory grid of a continuous sampler: images (len(picked) * 2k, C, H, W), row by row k x_t then k x0
    estimates, and the noise level sigma of each row's x_t (0 for the last: the final samples)."""
    if not reports or "x" not in reports[0] or reports[0]["x"].ndim != 4:
        raise UserError("an image trajectory needs the reports of an image sampler (x of shape (B, C, H, W))")
    levels = [float(r["sigma"]) for r in reports[1:]] + [0.0]      # the level each report's x is at
    picked = evenly(len(reports), rows)
    tiles, sigmas = [], []
    for j in picked:
        r = reports[j]
        tiles += [shown_x_t(r["x"][:k].float(), levels[j]), r["denoised"][:k].float()]
        sigmas.append(levels[j])
    return torch.cat(tiles).clamp(-1, 1), sigmas                    # (rows * 2k, C, H, W)


def save_image_trajectory(reports: list[dict[str, Any]], path: str | Path, rows: int = 6, k: int = 8) -> dict:
    """Write the trajectory grid as a PNG (2k images per row); returns {"path", "sigmas"} (one per row)."""
    grid, sigmas = image_trajectory(reports, rows, k)
    k = grid.shape[0] // (2 * len(sigmas))
    save_image_grid(grid, path, nrow=2 * k)
    return {"path": str(path), "sigmas": [round(s, 4) for s in sigmas]}


def text_trajectory(reports: list[dict[str, Any]], decode: Callable[[list[int]], str],
                    snapshots: int = 8) -> list[dict[str, Any]]:
    """Snapshots of a discrete sampler's canvas at evenly spaced steps (the last included): {"step", "masked",
    "tokens", "rows"}: the canvas (n, L) as lists, and its first rows as TextView's [text, committed-at-step]
    segments ([None, None] for a masked position; the bytes of one character committed at different steps are
    decoded apart)."""
    if not reports or "canvas" not in reports[0]:
        raise UserError("a text trajectory needs the reports of a discrete sampler (a canvas per step)")
    view = TextView(decode)
    frames = [view(r) for r in reports]                             # every step, so commit steps are right
    return [{"step": frames[j]["i"], "masked": frames[j]["masked"], "tokens": reports[j]["canvas"].tolist(),
             "rows": frames[j]["rows"]} for j in evenly(len(frames), snapshots)]


def _row_html(segments: list[list]) -> str:
    out = []
    for text, step in segments:
        if text is None:
            out.append('<span class="m">&nbsp;</span>')
        else:
            out.append(f'<span title="step {step}">{html.escape(text)}</span>')
    return "".join(out)


def save_text_trajectory(snaps: list[dict[str, Any]], path: str | Path, title: str = "") -> str:
    """A self-contained HTML page of the snapshots (masked positions as grey blanks); returns its path."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif}pre{font-family:monospace;white-space:pre-wrap;margin:0 0 .6em}"
             ".m{background:#ccc;margin:0 1px}h3{margin:.8em 0 .2em;font-size:1em}</style>",
             f"<h2>{html.escape(title)}</h2>"]
    for s in snaps:
        parts.append(f"<h3>step {s['step']}: {s['masked']} positions masked</h3>")
        parts += [f"<pre>{_row_html(row)}</pre>" for row in s["rows"]]
    atomic_write_text(Path(path), "\n".join(parts) + "\n")
    return str(path)
