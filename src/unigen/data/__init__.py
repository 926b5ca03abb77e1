"""Bundled, offline, deterministic datasets: `load(cfg.data, split)` -> `Dataset`.

    ds = load(DataConfig(name="mnist"), "train")
    batch = ds.batch(torch.arange(64))          # {"x": (64, 1, 28, 28) in [-1, 1], "y": (64,)}

`DATASETS` maps `data.name` to its loader `(cfg, split) -> Dataset`. Images are float32 in [-1, 1]; `to_uint8` /
`from_uint8` convert to and from bytes.
"""
from __future__ import annotations

from unigen.data.dataset import SPLITS, Dataset, check_split
from unigen.data.images import from_uint8, load_digits, load_mnist, resize, to_uint8
from unigen.data.shapes import load_shapes
from unigen.data.text import load_text
from unigen.data.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, load_tokenizer
from unigen.data.toy2d import TOY2D_STATS, load_toy2d, sample_toy2d, toy2d_log_density
from unigen.errors import UserError


def load(cfg, split: str) -> Dataset:
    """The `split` ("train" | "test") of dataset `cfg.name`, with `cfg` a `unigen.config.DataConfig`."""
    check_split(split)
    if cfg.name not in DATASETS:
        raise UserError(f"unknown dataset data.name={cfg.name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[cfg.name](cfg, split)


DATASETS = {"toy2d": load_toy2d, "digits": load_digits, "mnist": load_mnist, "text": load_text,
            "shapes": load_shapes}

__all__ = ["DATASETS", "SPLITS", "BPETokenizer", "ByteTokenizer", "Dataset", "TOY2D_STATS", "Tokenizer", "from_uint8",
           "load", "load_tokenizer", "resize", "sample_toy2d", "to_uint8", "toy2d_log_density"]
