"""What the page sees of one generation step: the sampler's report turned into a small JSON message.

A `View` is made for each generation and called with every report of the family's `Task.sample(callback=...)`:

    continuous diffusion  {"i", "x", "sigma", "denoised"}         -> x_t and the x0 estimate side by side
                          (images: two PNG grids as data URLs; 2-D points: two point lists)
    discrete diffusion    {"i", "canvas", "mask_id", "prompt_tokens"} -> the canvas, masked positions blank, each
                          token tagged with the step that committed it (0: the prompt), tokens/s so far

x_t is shown as x / sqrt(1 + sigma^2): the samplers carry x = x0 + sigma n (EDM's variables), whose spread grows
with sigma; dividing by the spread of unit data plus that noise keeps the picture in range at every level (it is
DDPM's x_t for sigma = sqrt(1 / alpha_bar - 1)).
"""
from __future__ import annotations

import base64
import io
import math
import time
from typing import Any, Callable

from torch import Tensor

from unigen.plot import image_grid

MAX_ROWS = 4               # texts shown per generation
MAX_POINTS = 2000          # 2-D points sent per frame


def png_data_url(x: Tensor) -> str:
    """Images (B, C, H, W) in [-1, 1] as one PNG grid, a `data:` URL the page can show without another request."""
    from PIL import Image
    grid = image_grid(x.float().clamp(-1, 1)).numpy()
    buf = io.BytesIO()
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def shown_x_t(x: Tensor, sigma: float) -> Tensor:
    """x / sqrt(1 + sigma^2) (see the module docstring); at sigma = inf (a flow's start) x is already z."""
    return x if math.isinf(sigma) else x / math.sqrt(1 + sigma ** 2)


def points(x: Tensor) -> list[list[float]]:
    return [[round(a, 3), round(b, 3)] for a, b in x[:MAX_POINTS].float().tolist()]


class ImageView:
    """Frames of a continuous sampler: step, sigma, x_t and the denoiser's x0 estimate."""

    def __call__(self, report: dict[str, Any]) -> dict[str, Any]:
        x, d, sigma = report["x"], report["denoised"], float(report["sigma"])
        frame = {"type": "frame", "i": int(report["i"]) + 1, "sigma": sigma if math.isfinite(sigma) else None}
        if x.ndim == 4:
            return {**frame, "kind": "image", "x_t": png_data_url(shown_x_t(x, sigma)), "x0": png_data_url(d)}
        if x.ndim == 2 and x.shape[1] == 2:
            return {**frame, "kind": "points", "x_t": points(shown_x_t(x, sigma)), "x0": points(d)}
        return {**frame, "kind": "none"}


class TextView:
    """Frames of a discrete sampler. `commit[r][j]`: the step at which token j of row r was last unmasked (0 for
    the prompt, None while masked). `seconds` is the sampler's own time: what the caller spent in callbacks
    (`paused`) is subtracted, so tokens/s is the sampler's speed, not the page's."""

    def __init__(self, decode: Callable[[list[int]], str], t0: float | None = None):
        self.decode = decode
        self.commit: list[list[int | None]] | None = None
        self.t0, self.paused = time.perf_counter() if t0 is None else t0, 0.0

    def __call__(self, report: dict[str, Any]) -> dict[str, Any]:
        canvas, mask, p = report["canvas"], int(report["mask_id"]), int(report["prompt_tokens"])
        i = int(report["i"]) + 1
        rows = canvas[:MAX_ROWS].tolist()
        self.update(rows, mask, p, i)
        generated = canvas[:, p:]
        done = int((generated != mask).sum())
        seconds = max(time.perf_counter() - self.t0 - self.paused, 1e-9)
        return {"type": "frame", "kind": "text", "i": i, "rows": [self.segments(r, c, mask) for r, c in
                                                                   zip(rows, self.commit)],
                "masked": int(generated.numel()) - done, "total": int(generated.numel()),
                "tokens_per_s": round(done / seconds, 1)}

    def update(self, rows: list[list[int]], mask: int, prompt_tokens: int, i: int) -> None:
        if self.commit is None:
            self.commit = [[0 if j < prompt_tokens else None for j in range(len(r))] for r in rows]
        for row, com in zip(rows, self.commit):
            for j, t in enumerate(row):
                if t == mask:
                    com[j] = None                       # remasked (or still masked)
                elif com[j] is None:
                    com[j] = i

    def segments(self, row: list[int], commit: list[int | None], mask: int) -> list[list]:
        """[text, step] pieces: neighbouring tokens committed at the same step decoded together (so the bytes of
        one character join up), [None, None] for each masked position."""
        out: list[list] = []
        run: list[int] = []
        for j, t in enumerate(row):
            if run and (t == mask or commit[j] != commit[j - 1]):
                out.append([self.decode(run), commit[j - 1]])
                run = []
            if t == mask:
                out.append([None, None])
            else:
                run.append(t)
        if run:
            out.append([self.decode(run), commit[len(row) - 1]])
        return out

    def final(self, tokens: list[list[int]], mask: int) -> list[list[list]]:
        """The rows of the finished canvas (`sample`'s output tokens), tagged as the last frame saw them."""
        rows = [list(r) for r in tokens[:MAX_ROWS]]
        commit = self.commit or [[None] * len(r) for r in rows]
        last = 1 + max((c for com in commit for c in com if c is not None), default=0)
        commit = [[c if c is not None else last for c in com] for com in commit]
        return [self.segments(r, c, mask) for r, c in zip(rows, commit)]


def final_image(path: str) -> str:
    """A finished PNG (the task's samples.png) as a data URL."""
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")

