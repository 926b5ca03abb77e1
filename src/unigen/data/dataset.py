"""The in-memory `Dataset` every loader returns, the per-process cache, and the seed rule of splits.

A `Dataset` is a dict of tensors that share dim 0, plus an `info` dict (what a family needs to size a network)
and, for text, a `tokenizer`. Loaders keep decoded arrays in `_CACHE` so a second `load` in the same process is
free; they always hand out fresh tensors, so nothing a caller does to a batch can reach the cache.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from unigen.errors import UserError

SPLITS = ("train", "test")

# Decoded arrays keyed by the fields that determine them, e.g. ("mnist", sprite_path) or ("toy2d", name, n, ...).
_CACHE: dict[tuple, Any] = {}


def cached(key: tuple, build: Callable[[], Any]) -> Any:
    """Return `_CACHE[key]`, building it once. Callers must copy what they return to users."""
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    return split


def split_seed(seed: int, split: str, salt: str) -> int:
    """A 63-bit seed for one (seed, split, dataset) stream; train and test streams are independent."""
    words = [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF, SPLITS.index(check_split(split))]
    words += list(salt.encode())
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class Dataset:
    """Tensors sharing dim 0 (`ds.tensors`), a description (`ds.info`), and optionally a tokenizer / captions."""

    def __init__(self, tensors: dict[str, torch.Tensor], info: dict[str, Any], *, tokenizer=None,
                 captions: list[str] | None = None):
        sizes = {k: int(v.shape[0]) for k, v in tensors.items()}
        if not sizes or len(set(sizes.values())) != 1:
            raise ValueError(f"dataset tensors must share a non-empty dim 0, got {sizes}")
        if captions is not None and len(captions) != next(iter(sizes.values())):
            raise ValueError(f"{len(captions)} captions for {next(iter(sizes.values()))} items")
        self.tensors = tensors
        self.info = info
        self.tokenizer = tokenizer
        self.captions = captions

    def __len__(self) -> int:
        return int(next(iter(self.tensors.values())).shape[0])

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Index every tensor along dim 0 with a 1-D integer tensor of item indices."""
        idx = torch.as_tensor(idx)
        if idx.dtype not in (torch.int64, torch.int32) or idx.dim() != 1:
            raise UserError(f"batch indices must be a 1-D integer tensor, got {idx.dtype} of shape {tuple(idx.shape)}")
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise UserError(f"batch index out of range for a dataset of {n} items")
        idx = idx.long()
        return {k: v.index_select(0, idx % n) for k, v in self.tensors.items()}

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}" for k, v in self.tensors.items())
        return f"Dataset({shapes}; info={self.info})"
