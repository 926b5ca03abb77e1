"""Procedural video streams for online action detection: one noisy Gaussian blob on a 16x16 torus whose
*sequence* of dynamics is the action, with per-frame labels and ambiguous boundary frames.

Every action is two phases of opposite dynamics, and its class is their *order*:

    1 grow-shrink    the blob's width grows, then shrinks        2 shrink-grow    the reverse order
    3 right-left     it moves right, then left (1 px a frame)    4 left-right     the reverse order

Background (class 0): the blob drifts in place (+- 0.25 px a frame) at constant width. Each primitive (growing,
shrinking, moving right, moving left) occurs in both classes of its pair, once first and once second, so a frame
and its difference to the previous frame show *which primitive* is running but not the class: that takes
remembering what came before (background, or the opposite primitive). Phases last 4-8 frames each (an action is
its onset frame and the two phases, 9-17 frames),
background 6-20. Width and brightness are drawn anew at the first frame of every segment (the width path of a
size action placed uniformly inside [0.9, 3.2] px, the brightness uniform in [0.4, 1]), so that neither tells the
class; those first frames (an action's onset, the first background frame after it) jump in width and brightness,
carry no motion, and are marked `ambiguous` and ignored by the evaluation, as TRN's THUMOS protocol ignores its
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

CLASSES = ("background", "grow-shrink", "shrink-grow", "right-left", "left-right")
SIDE = 16
GROW = 0.25             # width change of the size actions (blob std, pixels per frame)
PHASES = {1: ((0.0, 0.0, GROW), (0.0, 0.0, -GROW)), 2: ((0.0, 0.0, -GROW), (0.0, 0.0, GROW)),
          3: ((1.0, 0.0, 0.0), (-1.0, 0.0, 0.0)), 4: ((-1.0, 0.0, 0.0), (1.0, 0.0, 0.0))}  # class -> 2 x (dx, dy, dw)
MIN_PHASE, MAX_PHASE = 4, 8
MIN_SEG, MAX_SEG = 6, 20  # background segments
WIDTH = (0.9, 3.2)      # blob std range (pixels)
BRIGHT = (0.4, 1.0)     # blob brightness range
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


def labels_of(rng: np.random.Generator, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One stream's per-frame class y (L,), the motion (dx, dy, dw) from frame t-1 to frame t (L, 3) and the
    ambiguous flags (L,): the first frame of every segment after the first, which has no motion of its own."""
    y, motion, amb = np.zeros(length, np.int64), np.zeros((length, 3)), np.zeros(length, bool)
    motion[:, :2] = rng.uniform(-JITTER, JITTER, size=(length, 2))     # background drift, overwritten by actions
    t = int(rng.integers(MIN_SEG, MAX_SEG + 1))                         # leading background
    while t < length:
        c = int(rng.integers(1, len(CLASSES)))
        h1, h2 = (int(h) for h in rng.integers(MIN_PHASE, MAX_PHASE + 1, size=2))
        y[t: t + 1 + h1 + h2] = c                                         # the onset, then the two phases
        motion[t + 1: t + 1 + h1] = PHASES[c][0]
        motion[t + 1 + h1: t + 1 + h1 + h2] = PHASES[c][1]
        amb[t] = True
        t += 1 + h1 + h2
        if t < length:
            amb[t] = True                                                # the first background frame after it
        t += int(rng.integers(MIN_SEG, MAX_SEG + 1))
    motion[amb] = 0.0                                                    # segment starts jump, they do not move
    return y, motion, amb


def trajectory(rng: np.random.Generator, y: np.ndarray, motion: np.ndarray, amb: np.ndarray) -> np.ndarray:
    """Blob state per frame (L, 4): (cx, cy, brightness, width). Frame t's state is frame t-1's moved by
    motion[t]; at the first frame of every segment the brightness and width are drawn anew (a size action's
    whole width path placed uniformly inside WIDTH)."""
    L = len(y)
    state = np.zeros((L, 4))
    starts = np.flatnonzero(np.r_[True, y[1:] != y[:-1]])
    ends = np.r_[starts[1:], L]
    cx, cy = rng.uniform(0, SIDE, size=2)
    for s, e in zip(starts, ends):
        path = np.cumsum(motion[s:e, 2])                                # width relative to the segment's start
        w0 = rng.uniform(WIDTH[0] - path.min(), WIDTH[1] - path.max())
        b = rng.uniform(*BRIGHT)
        for t in range(s, e):
            cx, cy = (cx + motion[t, 0]) % SIDE, (cy + motion[t, 1]) % SIDE
            state[t] = (cx, cy, b, w0 + path[t - s])
    return state


def render(state: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Frames (L, 1, S, S) in [-1, 1]-ish: 2 b exp(-d^2 / (2 w^2)) - 1 with torus distance d, plus noise."""
    u = np.arange(SIDE) + 0.5
    dx = np.abs(u[None, :] - state[:, 0, None])                                  # (L, S)
    dy = np.abs(u[None, :] - state[:, 1, None])
    dx, dy = np.minimum(dx, SIDE - dx), np.minimum(dy, SIDE - dy)
    d2 = dy[:, :, None] ** 2 + dx[:, None, :] ** 2                                # (L, S, S)
    img = 2 * state[:, 2, None, None] * np.exp(-d2 / (2 * state[:, 3, None, None] ** 2)) - 1
    img = img + noise * rng.standard_normal(img.shape)
    return img[:, None].astype(np.float32)


def _streams(cfg: StreamData, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(split_seed(cfg.seed, split, "stream")))
    n = cfg.train_streams if split == "train" else cfg.test_streams
    xs, ys, ambs = [], [], []
    for _ in range(n):
        y, motion, amb = labels_of(rng, cfg.stream_len)
        xs.append(render(trajectory(rng, y, motion, amb), cfg.noise, rng))
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
