"""Procedural pictures of 1-3 coloured shapes (circle, square, triangle) with captions and bounding boxes.

Each image is S x S RGB (S = data.image_size or 32) on a black background. Shapes are drawn without
anti-aliasing (a pixel belongs to a shape when its centre does), in one of `COLOURS` exactly, and never overlap:
their bounding squares are at least one pixel apart. Shapes are listed largest first (by bounding square), which
is the order of the caption ("a red circle and a blue square"), of `boxes` and of `box_labels`; `y` is the class
of the first (largest) shape. Boxes are the tight box of each shape's drawn pixels, as normalised (cx, cy, w, h).
Layouts come from a numpy PCG64 stream seeded by (data.seed, split), so a dataset is reproducible bit for bit.

Rich captions for text-to-image models (`word_ids`, word-level over the closed vocabulary `WORDS`) add each
shape's size and position, all read off the drawn layout: "a big red circle on the left and a small blue square at
the top right". Size is "small" below the middle radius of the drawn range, else "big"; position is the cell of a
3 x 3 grid of equal thirds holding the shape's centre ("at the top left", "at the top", ..., "in the middle", ...
"at the bottom right"). `attributes` (N, 3, 4) holds the same as ids (colour, shape, size, position; -1 padded).
Options: `data.max_shapes` (1-3 shapes per picture) and `data.holdout` ("red circle,blue square": training
pictures never show these colour-shape pairs; the test split keeps them, to measure compositional generalisation).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unigen.data import options
from unigen.data.dataset import Dataset, cached, check_split, split_seed
from unigen.data.images import from_uint8
from unigen.data.tokenizer import ByteTokenizer
from unigen.errors import UserError

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (230, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40),
           "magenta": (220, 60, 210), "cyan": (40, 210, 220), "orange": (250, 140, 20), "white": (245, 245, 245)}
BACKGROUND = (0, 0, 0)
MAX_SHAPES = 3
N_TRAIN, N_TEST, DEFAULT_SIZE, MIN_SIZE = 10_000, 1_000, 32, 16
PLACEMENT_TRIES = 200
SIZES = ("small", "big")
POSITIONS = ("at the top left", "at the top", "at the top right", "on the left", "in the middle", "on the right",
             "at the bottom left", "at the bottom", "at the bottom right")      # row-major over a 3 x 3 grid
SPECIALS = ("<pad>", "<s>", "</s>")                                            # pad, start and end of a caption
WORDS = (*SPECIALS, "a", "an", "and", *sorted({w for p in POSITIONS for w in p.split()}), *SIZES, *COLOURS, *SHAPES)
WORD_ID = {w: i for i, w in enumerate(WORDS)}


def caption(items: list[tuple[str, str]]) -> str:
    """[(colour, shape), ...] -> "a red circle", "an orange circle and a blue square", "a red circle, a ... and a ..."."""
    parts = [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for c, s in items]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# Longest possible caption: three shapes, each with the longest names.
CAPTION_LEN = len(caption([(max(COLOURS, key=len), max(SHAPES, key=len))] * MAX_SHAPES))


def rich_caption(items: list[tuple[str, str, str, str]]) -> str:
    """[(colour, shape, size, position), ...] -> "a big red circle on the left and a small blue square at the top"."""
    return " and ".join(f"{'an' if z[0] in 'aeiou' else 'a'} {z} {c} {s} {p}" for c, s, z, p in items)


WORD_LEN = 2 + len(rich_caption([("magenta", "triangle", "small", POSITIONS[0])] * MAX_SHAPES).split())


def encode_words(text: str, length: int = WORD_LEN) -> list[int]:
    """A prompt -> [<s>, word ids..., </s>, <pad>...] of `length` ids. Case and commas are ignored; a word outside
    `WORDS` is a UserError (the text encoder has no embedding for it), as is a prompt longer than `length`."""
    words = text.lower().replace(",", " ").split()
    unknown = sorted({w for w in words if w not in WORD_ID or w in SPECIALS})
    if unknown:
        raise UserError(f"unknown word(s) {', '.join(map(repr, unknown))} in the prompt; the shapes captions use only: "
                        f"{' '.join(WORDS[len(SPECIALS):])}")
    ids = [WORD_ID["<s>"], *(WORD_ID[w] for w in words), WORD_ID["</s>"]]
    if len(ids) > length:
        raise UserError(f"the prompt has {len(words)} words; at most {length - 2} fit")
    return ids + [WORD_ID["<pad>"]] * (length - len(ids))


def decode_words(ids: list[int]) -> str:
    """The caption of `encode_words` ids (specials dropped)."""
    return " ".join(WORDS[i] for i in ids if WORDS[i] not in SPECIALS)


def parse_holdout(text: str) -> frozenset[tuple[int, int]]:
    """"red circle,blue square" -> {(colour id, shape id), ...}; a UserError names a pair that is not one."""
    pairs = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        words = part.split()
        if len(words) != 2 or words[0] not in COLOURS or words[1] not in SHAPES:
            raise UserError(f"data.holdout: {part!r} is not 'colour shape' (colours: {', '.join(COLOURS)}; "
                            f"shapes: {', '.join(SHAPES)})")
        pairs.add((list(COLOURS).index(words[0]), SHAPES.index(words[1])))
    return frozenset(pairs)


def _attributes(params: np.ndarray, size: int) -> tuple[int, int]:
    """(size id, position id) of one shape (cx, cy, s): big above the middle radius, position by thirds of the image."""
    big = params[2] > (size / 8 + size / 4.5) / 2
    col, row = (np.clip(np.floor(params[:2] * 3 / size), 0, 2)).astype(int)
    return int(big), int(3 * row + col)


def _layout(rng: np.random.Generator, size: int, max_shapes: int = MAX_SHAPES) -> np.ndarray:
    """1-3 rows (cx, cy, s): bounding squares [cx +- s] x [cy +- s] inside the image, largest first, >= 1 px apart.

    Each shape takes the first of `PLACEMENT_TRIES` uniform candidate centres that keeps clear of those placed
    before it; a shape with no such candidate is left out. The first shape always fits; at 32x32 about 1 in 7
    images that drew three shapes keep only two, so images hold 1 / 2 / 3 shapes about 37% / 34% / 29% of the time.
    """
    k = int(rng.integers(1, max_shapes + 1))
    radii = np.sort(rng.uniform(size / 8, size / 4.5, size=k))[::-1]
    placed = np.zeros((0, 3))
    for s in radii:
        cand = rng.uniform(s, size - s, size=(PLACEMENT_TRIES, 2))                  # (T, 2)
        gap = s + placed[:, 2] + 1                                                   # (P,)
        apart = np.abs(cand[:, None, :] - placed[None, :, :2]) >= gap[None, :, None]   # (T, P, 2)
        ok = apart.any(2).all(1)                                                     # (T,)
        if ok.any():
            placed = np.concatenate([placed, [[*cand[ok.argmax()], s]]])
    return placed


def _masks(params: torch.Tensor, cls: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel masks (N, S, S) of shapes with (cx, cy, s) in `params` (N, 3) and class ids `cls` (N,)."""
    u = torch.arange(size, dtype=torch.float64) + 0.5                           # pixel centres
    dx = u[None, None, :] - params[:, 0, None, None]                            # (N, 1, S)
    dy = u[None, :, None] - params[:, 1, None, None]                            # (N, S, 1)
    s = params[:, 2, None, None]                                                # (N, 1, 1)
    circle = dx ** 2 + dy ** 2 <= s ** 2
    square = (dx.abs() <= s) & (dy.abs() <= s)
    triangle = (dy <= s) & (2 * dx.abs() <= dy + s)                             # apex (cx, cy - s), base y = cy + s
    c = cls[:, None, None]
    return torch.where(c == 0, circle, torch.where(c == 1, square, triangle))    # (N, S, S)


def _tight_boxes(mask: torch.Tensor) -> torch.Tensor:
    """Normalised (cx, cy, w, h) (N, 4) of the drawn pixels of each mask (N, S, S); every mask is non-empty."""
    size = mask.shape[-1]
    ar = torch.arange(size)
    cols, rows = mask.any(1), mask.any(2)                                       # (N, S) each
    x0 = torch.where(cols, ar, size).min(1).values
    x1 = torch.where(cols, ar, -1).max(1).values + 1
    y0 = torch.where(rows, ar, size).min(1).values
    y1 = torch.where(rows, ar, -1).max(1).values + 1
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], 1).float() / size


def render_shapes(n: int, size: int, seed: int, max_shapes: int = MAX_SHAPES,
                  holdout: frozenset[tuple[int, int]] = frozenset()) -> dict:
    """Draw `n` images from the PCG64 stream `seed`: tensors of the batch plus `captions`. A drawn layout that shows
    a (colour id, shape id) pair of `holdout` is skipped (the next one is drawn in its place)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    params = np.zeros((n, MAX_SHAPES, 3))
    cls = np.full((n, MAX_SHAPES), -1, dtype=np.int64)
    col = np.zeros((n, MAX_SHAPES), dtype=np.int64)
    attrs = np.full((n, MAX_SHAPES, 4), -1, dtype=np.int64)
    names = list(COLOURS)
    captions, word_ids = [], np.zeros((n, WORD_LEN), dtype=np.int64)
    i = 0
    while i < n:
        squares = _layout(rng, size, max_shapes)
        m = len(squares)
        kinds = rng.integers(0, len(SHAPES), size=m)
        colours = rng.integers(0, len(names), size=m)
        if holdout and any((int(c), int(k)) in holdout for c, k in zip(colours, kinds)):
            continue
        params[i, :m], cls[i, :m], col[i, :m] = squares, kinds, colours
        captions.append(caption([(names[c], SHAPES[k]) for c, k in zip(colours, kinds)]))
        for j in range(m):
            attrs[i, j] = (colours[j], kinds[j], *_attributes(squares[j], size))
        word_ids[i] = encode_words(rich_caption([(names[c], SHAPES[k], SIZES[z], POSITIONS[p])
                                                 for c, k, z, p in attrs[i, :m]]))
        i += 1
    params, cls, col = torch.from_numpy(params), torch.from_numpy(cls), torch.from_numpy(col)
    palette = torch.tensor([COLOURS[c] for c in names], dtype=torch.uint8)       # (colours, 3)
    img = torch.tensor(BACKGROUND, dtype=torch.uint8).expand(n, size, size, 3).clone()   # (N, S, S, 3)
    boxes = torch.zeros(n, MAX_SHAPES, 4)
    for k in range(MAX_SHAPES):
        valid = cls[:, k] >= 0                                                  # (N,)
        mask = _masks(params[:, k], cls[:, k].clamp(min=0), size) & valid[:, None, None]   # (N, S, S)
        img = torch.where(mask[..., None], palette[col[:, k]][:, None, None, :], img)
        boxes[valid, k] = _tight_boxes(mask[valid])
    cap_ids = torch.full((n, CAPTION_LEN), ByteTokenizer().pad_id, dtype=torch.long)
    for i, text in enumerate(captions):
        ids = ByteTokenizer().encode(text)
        cap_ids[i, : len(ids)] = torch.tensor(ids)
    return {"x": img.permute(0, 3, 1, 2).contiguous(), "y": cls[:, 0].clone(), "caption_ids": cap_ids,
            "boxes": boxes, "box_labels": cls, "word_ids": torch.from_numpy(word_ids),
            "attributes": torch.from_numpy(attrs), "captions": captions}


@dataclass
class ShapesData:
    """`data.*` options of the procedural shapes pictures."""

    name: str = "shapes"
    n_train: int = 0            # training pictures (0 = 10,000); test always has 1,000
    image_size: int = 0         # side of the pictures (0 = 32, else at least 16)
    seed: int = 0               # seed of the drawn layouts
    max_shapes: int = 0         # at most this many shapes per picture (0 = 3)
    holdout: str = ""           # "colour shape" pairs never shown in training, e.g. "red circle,blue square"

    def check(self) -> None:
        if not 0 <= self.max_shapes <= MAX_SHAPES:
            raise UserError(f"data.max_shapes must be in 0..{MAX_SHAPES} (0 = {MAX_SHAPES}), got {self.max_shapes}")
        if len(parse_holdout(self.holdout)) >= len(COLOURS) * len(SHAPES):
            raise UserError("data.holdout holds out every colour-shape pair; nothing is left to train on")
        options.non_negative("data.n_train", self.n_train)
        options.non_negative("data.image_size", self.image_size)
        if 0 < self.image_size < MIN_SIZE:
            raise UserError(f"data.image_size={self.image_size} is too small for shapes; use 0 ({DEFAULT_SIZE}) "
                            f"or at least {MIN_SIZE}")
        options.seed("data.seed", self.seed)


def load_shapes(cfg: ShapesData, split: str) -> Dataset:
    """`{"x": (N, 3, S, S) in [-1, 1], "y", "caption_ids" (N, L), "boxes" (N, 3, 4), "box_labels" (N, 3),
    "word_ids" (N, WORD_LEN), "attributes" (N, 3, 4)}`."""
    check_split(split)
    cfg.check()
    size = cfg.image_size or DEFAULT_SIZE
    n = (cfg.n_train or N_TRAIN) if split == "train" else N_TEST
    seed = split_seed(cfg.seed, split, "shapes")
    max_k = cfg.max_shapes or MAX_SHAPES
    holdout = parse_holdout(cfg.holdout) if split == "train" else frozenset()
    d = cached(("shapes", n, size, seed, max_k, holdout), lambda: render_shapes(n, size, seed, max_k, holdout))
    tensors = {"x": from_uint8(d["x"])}                                        # (N, 3, S, S), a fresh tensor
    tensors.update({k: d[k].clone() for k in ("y", "caption_ids", "boxes", "box_labels", "word_ids", "attributes")})
    info = {"name": "shapes", "split": split, "shape": (3, size, size), "num_classes": len(SHAPES),
            "class_names": SHAPES, "colours": tuple(COLOURS), "max_boxes": MAX_SHAPES, "caption_len": CAPTION_LEN,
            "caption_vocab_size": ByteTokenizer().vocab_size, "pad_id": ByteTokenizer().pad_id,
            "words": WORDS, "word_len": WORD_LEN}
    return Dataset(tensors, info, tokenizer=ByteTokenizer(), captions=list(d["captions"]))
