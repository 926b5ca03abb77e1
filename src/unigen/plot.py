"""Pictures and text written to disk: image grids (Pillow PNG), metric curves (matplotlib, Agg), plain text.

Every writer is atomic: it writes a temporary file in the destination folder, then `os.replace`s it over the
target, so a reader never sees a half-written file and a crash leaves the old file intact.
"""
from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch

from unigen.data.images import to_uint8
from unigen.errors import UserError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def image_grid(x: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile images (B, C, H, W) in [-1, 1] into one uint8 (rows * (H + p) + p, nrow * (W + p) + p, C) array.

    `nrow` is the number of images per row (default ceil(sqrt(B))); the `padding` between tiles is black.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"image grid expects (B, C, H, W) with C = 1 or 3, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if b == 0:
        raise UserError("image grid got no images (B = 0)")
    if not torch.isfinite(x).all():
        raise UserError("image grid got non-finite pixel values (NaN or Inf)")
    nrow = nrow or math.ceil(math.sqrt(b))
    if nrow < 1:
        raise UserError(f"image grid nrow must be >= 1, got {nrow}")
    rows = math.ceil(b / nrow)
    tiles = to_uint8(x.detach().cpu()).permute(0, 2, 3, 1)                      # (B, H, W, C)
    grid = torch.zeros(rows * (h + padding) + padding, nrow * (w + padding) + padding, c, dtype=torch.uint8)
    for i in range(b):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[top: top + h, left: left + w] = tiles[i]
    return grid


def save_image_grid(x: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save images (B, C, H, W) in [-1, 1] (C = 1 or 3) as one PNG grid, `nrow` images per row, atomically."""
    from PIL import Image
    grid = image_grid(x, nrow).numpy()                                          # (H', W', C)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)      # mode L or RGB from the shape
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def plot_curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str = "",
                logy: bool = False) -> Path:
    """Plot named (steps, values) curves on one axis and save the figure (format from the suffix, PNG by default)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    if not series:
        raise UserError("plot_curves got no series to plot")
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, (steps, values) in series.items():
        steps, values = [float(s) for s in steps], [float(v) for v in values]
        if len(steps) != len(values):
            raise UserError(f"curve {name!r} has {len(steps)} steps but {len(values)} values")
        ax.plot(steps, values, label=name, marker="." if len(steps) < 30 else None)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise UserError(f"cannot save a plot as .{fmt} ({path}); use one of: {', '.join(fig.canvas.get_supported_filetypes())}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt)
    return Path(path)
