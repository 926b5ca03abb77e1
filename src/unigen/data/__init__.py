"""Bundled, offline, deterministic datasets: `load(options, split)` -> `Dataset`.

    ds = load(MnistData(), "train")             # or load(cfg.data, "train")
    batch = ds.batch(torch.arange(64))          # {"x": (64, 1, 28, 28) in [-1, 1], "y": (64,)}

Each dataset has its own options dataclass (`Toy2dData`, `DigitsData`, `MnistData`, `TextData`, `ShapesData`),
which is the `data` section of a `unigen.config.Config`. `DATASETS` (in `registry.py`) maps `data.name` to its
options class and loader. Images are float32 in [-1, 1]; `to_uint8` / `from_uint8` convert to and from bytes.
"""
from __future__ import annotations

from unigen.data.dataset import SPLITS, Dataset, check_split
from unigen.data.images import DigitsData, MnistData, from_uint8, load_digits, load_mnist, resize, to_uint8
from unigen.data.pixels import MnistPixelsData, from_pixel_tokens, load_mnist_pixels, to_pixel_tokens
from unigen.data.registry import DATASETS, DEFAULT_DATASET, DatasetEntry, load, make_options
from unigen.data.scenes import ScenesData, load_scenes
from unigen.data.shapes import ShapesData, load_shapes
from unigen.data.stream import StreamData, load_stream
from unigen.data.text import TextData, load_text
from unigen.data.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, load_tokenizer
from unigen.data.toy2d import TOY2D_STATS, TOYS, Toy2dData, load_toy2d, sample_toy2d, toy2d_log_density

__all__ = ["DATASETS", "DEFAULT_DATASET", "SPLITS", "BPETokenizer", "ByteTokenizer", "Dataset", "DatasetEntry",
           "DigitsData", "MnistData", "ShapesData", "TOY2D_STATS", "TOYS", "TextData", "Tokenizer", "Toy2dData",
           "check_split", "from_uint8", "load", "load_digits", "load_mnist", "load_shapes", "load_text", "load_toy2d",
           "load_tokenizer", "make_options", "resize", "sample_toy2d", "to_uint8", "toy2d_log_density"]
__all__ += ["MnistPixelsData", "from_pixel_tokens", "load_mnist_pixels", "to_pixel_tokens"]
__all__ += ["ScenesData", "load_scenes"]
__all__ += ["StreamData", "load_stream"]
