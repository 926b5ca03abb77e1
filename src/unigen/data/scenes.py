"""Procedural detection scenes: 1-6 coloured shapes per picture, of varied sizes, that may overlap; boxes + labels.

The detection counterpart of `shapes` (whose drawing helpers and colours it uses): each image is S x S RGB
(S = data.image_size or 48) on a black background holding k ~ U{1..6} shapes (circle, square, triangle = class
0 / 1 / 2) of half-size s ~ U(S/16, S/5), each in a random colour (colour carries no class information). Shapes may
overlap: a candidate position is accepted when its bounding square covers at most `MAX_COVER` of the area of any
square placed before it and of its own, so every object stays mostly visible; later shapes are drawn on top.
A box is the tight box of the object's own drawn pixels (the whole object, also where it is partly covered), as
normalised (cx, cy, w, h), the DETR convention. Objects are listed in drawing order; `boxes` (N, 6, 4) and
`box_labels` (N, 6) are padded with zeros / -1. Layouts come from a numpy PCG64 stream seeded by (data.seed, split).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unigen.data import options
from unigen.data.dataset import Dataset, cached, check_split, split_seed
from unigen.data.images import from_uint8
from unigen.data.shapes import BACKGROUND, COLOURS, SHAPES, _masks, _tight_boxes
from unigen.errors import UserError

MAX_OBJECTS = 6
MAX_COVER = 0.35              # the largest share of a square's area that another square may cover
N_TRAIN, N_TEST, DEFAULT_SIZE, MIN_SIZE = 10_000, 1_000, 48, 16
PLACEMENT_TRIES = 200
CHUNK = 1000                  # images rendered at once (bounds the (chunk, S, S) float64 masks)


def _layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """1-6 rows (cx, cy, s): bounding squares [cx +- s]^2 inside the image, each pair overlapping by at most
    `MAX_COVER` of either square's area. A shape with no such position among `PLACEMENT_TRIES` is left out."""
    k = int(rng.integers(1, MAX_OBJECTS + 1))
    radii = rng.uniform(size / 16, size / 5, size=k)
    placed = np.zeros((0, 3))
    for s in radii:
        cand = rng.uniform(s, size - s, size=(PLACEMENT_TRIES, 2))                   # (T, 2)
        side = np.minimum(cand[:, None, :] + s, placed[None, :, :2] + placed[None, :, 2:]) \
            - np.maximum(cand[:, None, :] - s, placed[None, :, :2] - placed[None, :, 2:])   # (T, P, 2)
        inter = np.clip(side, 0, None).prod(2)                                        # (T, P)
        smaller = np.minimum((2 * s) ** 2, (2 * placed[:, 2]) ** 2)                  # (P,)
        ok = (inter <= MAX_COVER * smaller[None, :]).all(1)                           # (T,)
        if ok.any():
            placed = np.concatenate([placed, [[*cand[ok.argmax()], s]]])
    return placed


def _render(params: torch.Tensor, cls: torch.Tensor, col: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Images (N, S, S, 3) uint8 and boxes (N, 6, 4) of the shapes `params` (N, 6, 3), `cls` (-1 = none), `col`."""
    n = params.shape[0]
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.uint8)             # (colours, 3)
    img = torch.tensor(BACKGROUND, dtype=torch.uint8).expand(n, size, size, 3).clone()
    boxes = torch.zeros(n, MAX_OBJECTS, 4)
    for k in range(MAX_OBJECTS):
        valid = cls[:, k] >= 0                                                      # (N,)
        mask = _masks(params[:, k], cls[:, k].clamp(min=0), size) & valid[:, None, None]   # (N, S, S)
        img = torch.where(mask[..., None], palette[col[:, k]][:, None, None, :], img)
        boxes[valid, k] = _tight_boxes(mask[valid])
    return img, boxes


def render_scenes(n: int, size: int, seed: int) -> dict[str, torch.Tensor]:
    """Draw `n` scenes from the PCG64 stream `seed`: `x` (N, 3, S, S) uint8, `boxes`, `box_labels`."""
    rng = np.random.Generator(np.random.PCG64(seed))
    params = np.zeros((n, MAX_OBJECTS, 3))
    cls = np.full((n, MAX_OBJECTS), -1, dtype=np.int64)
    col = np.zeros((n, MAX_OBJECTS), dtype=np.int64)
    for i in range(n):
        squares = _layout(rng, size)
        m = len(squares)
        params[i, :m] = squares
        cls[i, :m] = rng.integers(0, len(SHAPES), size=m)
        col[i, :m] = rng.integers(0, len(COLOURS), size=m)
    params, cls, col = torch.from_numpy(params), torch.from_numpy(cls), torch.from_numpy(col)
    parts = [_render(params[i:i + CHUNK], cls[i:i + CHUNK], col[i:i + CHUNK], size) for i in range(0, n, CHUNK)]
    img = torch.cat([p[0] for p in parts])
    return {"x": img.permute(0, 3, 1, 2).contiguous(), "boxes": torch.cat([p[1] for p in parts]), "box_labels": cls}


@dataclass
class ScenesData:
    """`data.*` options of the procedural detection scenes."""

    name: str = "scenes"
    n_train: int = 0            # training pictures (0 = 10,000); test always has 1,000
    image_size: int = 0         # side of the pictures (0 = 48, else at least 16)
    seed: int = 0               # seed of the drawn layouts

    def check(self) -> None:
        options.non_negative("data.n_train", self.n_train)
        options.non_negative("data.image_size", self.image_size)
        if 0 < self.image_size < MIN_SIZE:
            raise UserError(f"data.image_size={self.image_size} is too small for scenes; use 0 ({DEFAULT_SIZE}) "
                            f"or at least {MIN_SIZE}")
        options.seed("data.seed", self.seed)


def load_scenes(cfg: ScenesData, split: str) -> Dataset:
    """`{"x": (N, 3, S, S) in [-1, 1], "boxes": (N, 6, 4) normalised cxcywh, "box_labels": (N, 6), -1 = none}`."""
    check_split(split)
    cfg.check()
    size = cfg.image_size or DEFAULT_SIZE
    n = (cfg.n_train or N_TRAIN) if split == "train" else N_TEST
    seed = split_seed(cfg.seed, split, "scenes")
    d = cached(("scenes", n, size, seed), lambda: render_scenes(n, size, seed))
    tensors = {"x": from_uint8(d["x"]), "boxes": d["boxes"].clone(), "box_labels": d["box_labels"].clone()}
    info = {"name": "scenes", "split": split, "shape": (3, size, size), "num_classes": len(SHAPES),
            "class_names": SHAPES, "max_boxes": MAX_OBJECTS}
    return Dataset(tensors, info)
