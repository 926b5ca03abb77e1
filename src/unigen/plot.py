"""Pictures written to disk: image grids (Pillow PNG) and matplotlib figures (Agg, no display needed).

    save_image_grid(x, path)          images (B, C, H, W) in [-1, 1] -> one PNG grid
    with figure(path) as ax: ...      one matplotlib axis, saved atomically on exit (format from the suffix)
    plot_curves(series, path)         named (steps, values) curves
    save_scatter(x, path)             2-D points (n, 2)
    draw_boxes(image, boxes, ...)     an image enlarged, with labelled boxes (detections)

Every writer goes through `unigen.io.atomic_path`: a reader never sees a half-written file.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch

from unigen.data.images import to_uint8
from unigen.errors import UserError
from unigen.io import atomic_path


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


@contextmanager
def figure(path: str | Path, size: tuple[float, float] = (6, 4)) -> Iterator:
    """A matplotlib axis on an off-screen figure; on exit the figure is laid out and saved to `path` atomically, in
    the format of its suffix (PNG when there is none). An unknown format is a UserError before anything is drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise UserError(f"cannot save a plot as .{fmt} ({path}); use one of: {', '.join(fig.canvas.get_supported_filetypes())}")
    yield fig.add_subplot()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt)


def plot_curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str = "",
                logy: bool = False) -> Path:
    """Plot named (steps, values) curves on one axis and save the figure (format from the suffix, PNG by default)."""
    if not series:
        raise UserError("plot_curves got no series to plot")
    with figure(path) as ax:
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
    return Path(path)


def save_scatter(x: torch.Tensor, path: str | Path, title: str = "", lim: float = 3.5) -> Path:
    """Scatter plot of 2-D points (n, 2) in [-lim, lim]^2, written atomically."""
    with figure(path, size=(5, 5)) as ax:
        pts = x.detach().float().cpu().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(title)
    return Path(path)


def draw_boxes(image: torch.Tensor, boxes: Sequence[Sequence[float]], captions: Sequence[str], path: str | Path,
               scale: int = 8) -> Path:
    """Save a uint8 image (H, W, 3) enlarged `scale` times (nearest pixel) with corner boxes [x0, y0, x1, y1] (in
    pixels of the original) outlined and each box's caption ("square 0.93") above its top-left corner."""
    from PIL import Image, ImageDraw
    h, w = image.shape[:2]
    img = Image.fromarray(image.numpy()).resize((w * scale, h * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    palette = [(255, 255, 255), (255, 80, 80), (80, 255, 80), (80, 160, 255), (255, 255, 80), (255, 80, 255)]
    for i, (box, text) in enumerate(zip(boxes, captions)):
        colour = palette[i % len(palette)]
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=2)
        draw.text((x0 + 2, max(y0 - 11, 0)), text, fill=colour)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)
