"""Procedural video streams for online action detection: one noisy Gaussian blob on a 16x16 torus whose
*dynamics* are the action, with per-frame labels and ambiguous boundary frames.

Classes: 0 background (the blob jitters in place), 1 left, 2 right, 3 up, 4 down (it moves one pixel a frame),
5 blink (its brightness alternates between b and 0.3 b). Every frame, whatever the class, shows the same kind of
picture (a blob at a uniform position on the torus, brightness b ~ U(0.3, 1) drawn per segment, Gaussian pixel
noise), so a single frame carries almost no information about the class: the actions are temporal patterns.
Streams alternate background and action segments (6-20 frames each, the action class uniform). The first frame of
an action and the first background frame after it run the dynamics at half strength (the motion ramps up and
down); both are marked `ambiguous` and ignored by the evaluation, as TRN's THUMOS protocol ignores its
"ambiguous" class.

Items are whole streams: `{"x": (N, L, 1, 16, 16) in [-1, 1], "y": (N, L) long, "ambiguous": (N, L) bool}`.
Streams come from a numpy PCG64 generator seeded by (data.seed, split), reproducible bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unigen.data import options
from unigen.data.dataset import Dataset, cached, check_split, split_seed
from unigen.errors import UserError

CLASSES = ("background", "left", "right", "up", "down", "blink")
SIDE = 16
MOVES = {1: (-1.0, 0.0), 2: (1.0, 0.0), 3: (0.0, -1.0), 4: (0.0, 1.0)}   # class -> (dx, dy) pixels per frame
BLINK, DIM = 5, 0.3
MIN_SEG, MAX_SEG = 6, 20
BLOB_STD = 1.6          # pixels
JITTER = 0.25           # background drift per frame (pixels, uniform in +- JITTER)


@dataclass
class StreamData:
    """`data.*` options of the procedural action streams."""

    name: str = "stream"
    train_streams: int = 64     # training streams
    test_streams: int = 16      # test streams
    stream_len: int = 400       # frames per stream
    noise: float = 0.3          # std of the Gaussian pixel noise ([-1, 1] scale)
    seed: int = 0

    def check(self) -> None:
        options.positive("data.train_streams", self.train_streams)
        options.positive("data.test_streams", self.test_streams)
        options.non_negative("data.noise", self.noise)
        options.seed("data.seed", self.seed)
        if self.stream_len < 2 * MAX_SEG:
            raise UserError(f"data.stream_len must be >= {2 * MAX_SEG} frames, got {self.stream_len}")


def labels_of(rng: np.random.Generator, length: int) -> tuple[np.ndarray, ...]:
    """One stream's per-frame class y (L,), the class whose dynamics move the blob `dyn` (L,) (the ending action on
    a ramp-down frame), the dynamics strength (L,) in {0.5, 1} and the ambiguous flags (L,)."""
    y, dyn = np.zeros(length, np.int64), np.zeros(length, np.int64)
    strength, amb = np.ones(length), np.zeros(length, bool)
    t = int(rng.integers(MIN_SEG, MAX_SEG + 1))                 # leading background
    while t < length:
        c, n = int(rng.integers(1, len(CLASSES))), int(rng.integers(MIN_SEG, MAX_SEG + 1))
        y[t: t + n] = dyn[t: t + n] = c
        strength[t], amb[t] = 0.5, True                           # ramp up
        if t + n < length:                                        # ramp down: background label, half the action
            dyn[t + n], strength[t + n], amb[t + n] = c, 0.5, True
        t += n + int(rng.integers(MIN_SEG, MAX_SEG + 1))
    return y, dyn, strength, amb


def trajectory(rng: np.random.Generator, y: np.ndarray, dyn: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Blob state per frame (L, 3): (cx, cy, brightness). Frame t's state is frame t-1's moved by the dynamics
    `dyn[t]` at `strength[t]`; the base brightness b is drawn anew at the start of every segment."""
    state = np.zeros((len(y), 3))
    cx, cy = rng.uniform(0, SIDE, size=2)
    b = rng.uniform(DIM, 1.0)
    for t in range(len(y)):
        if t and y[t] != y[t - 1]:
            b = rng.uniform(DIM, 1.0)
        c = int(dyn[t])
        dx, dy = MOVES[c] if c in MOVES else rng.uniform(-JITTER, JITTER, size=2) if c == 0 else (0.0, 0.0)
        cx, cy = (cx + strength[t] * dx) % SIDE, (cy + strength[t] * dy) % SIDE
        level = b * (1 - strength[t] * (1 - DIM)) if c == BLINK and t % 2 else b
        state[t] = (cx, cy, level)
    return state


def render(state: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Frames (L, 1, S, S) in [-1, 1]-ish: 2 b exp(-d^2 / (2 std^2)) - 1 with torus distance d, plus noise."""
    u = np.arange(SIDE) + 0.5
    dx = np.abs(u[None, :] - state[:, 0, None])                                  # (L, S)
    dy = np.abs(u[None, :] - state[:, 1, None])
    dx, dy = np.minimum(dx, SIDE - dx), np.minimum(dy, SIDE - dy)
    d2 = dy[:, :, None] ** 2 + dx[:, None, :] ** 2                                # (L, S, S)
    img = 2 * state[:, 2, None, None] * np.exp(-d2 / (2 * BLOB_STD ** 2)) - 1
    img = img + noise * rng.standard_normal(img.shape)
    return img[:, None].astype(np.float32)


def _streams(cfg: StreamData, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(split_seed(cfg.seed, split, "stream")))
    n = cfg.train_streams if split == "train" else cfg.test_streams
    xs, ys, ambs = [], [], []
    for _ in range(n):
        y, dyn, strength, amb = labels_of(rng, cfg.stream_len)
        xs.append(render(trajectory(rng, y, dyn, strength), cfg.noise, rng))
        ys.append(y)
        ambs.append(amb)
    return np.stack(xs), np.stack(ys), np.stack(ambs)


def load_stream(cfg: StreamData, split: str) -> Dataset:
    """The `split` streams: `{"x": (N, L, 1, 16, 16), "y": (N, L), "ambiguous": (N, L)}`."""
    check_split(split)
    cfg.check()
    key = ("stream", split, cfg.train_streams, cfg.test_streams, cfg.stream_len, cfg.noise, cfg.seed)
    x, y, amb = cached(key, lambda: _streams(cfg, split))
    info = {"name": "stream", "split": split, "shape": (1, SIDE, SIDE), "num_classes": len(CLASSES),
            "classes": list(CLASSES), "stream_len": cfg.stream_len}
    return Dataset({"x": torch.from_numpy(x.copy()), "y": torch.from_numpy(y.copy()),
                    "ambiguous": torch.from_numpy(amb.copy())}, info)
