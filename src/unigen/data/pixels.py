"""MNIST as sequences of 8-bit pixel tokens, for the discrete (token) models: `data.name=mnist-pixels`.

Each image becomes one sequence of H * W tokens in raster order (row by row, left to right), token = the pixel's
byte 0..255 (`to_uint8` of the [-1, 1] image, i.e. the original byte for native 28 x 28 MNIST). The tokenizer is
the byte tokenizer (a pixel is a byte: ids 0..255, BOS 256, EOS 257, PAD 258), so the token models, their
samplers and their run directories need nothing new. One token is one dimension, so an exact token NLL in nats
per token is bits/dim after dividing by ln 2 (the discrete family reports `bits_per_dim` for this dataset); it is
directly comparable to the bits/dim of a continuous model of uniformly dequantised pixels, which upper-bounds the
discrete NLL of its own quantisation (Theis et al. 2016, Sec. 3.1).

Batch: `{"ids": (B, H*W) long, "y": (B,) long}`; info: the text keys (vocab_size, seq_len, bos_id, ...) plus
`shape` (1, H, W) of the images and `pixels: True`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from unigen.data import options
from unigen.data.dataset import Dataset, check_split
from unigen.data.images import MNIST_SIDE, MnistData, from_uint8, load_mnist, to_uint8
from unigen.data.tokenizer import ByteTokenizer
from unigen.errors import UserError

PIXEL_VALUES = 256              # token ids 0..255 are pixel values; a model of pixels gives the others no probability


@dataclass
class MnistPixelsData:
    """`data.*` options of MNIST as pixel-token sequences (the split is MNIST's: 55,000 train, 10,000 test)."""

    name: str = "mnist-pixels"
    image_size: int = 0         # resize to this side before tokenising (0 = native 28: the original bytes)

    def check(self) -> None:
        options.non_negative("data.image_size", self.image_size)

    @property
    def seq_len(self) -> int:
        """Tokens per sequence (what the token models read as `data.seq_len`): the image's pixel count."""
        return (self.image_size or MNIST_SIDE) ** 2


def to_pixel_tokens(x: torch.Tensor) -> torch.Tensor:
    """Images (B, 1, H, W) in [-1, 1] -> tokens (B, H*W) long in 0..255, raster order."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise UserError(f"pixel tokens need greyscale images (B, 1, H, W), got shape {tuple(x.shape)}")
    return to_uint8(x).flatten(1).long()                                       # (B, H*W)


def from_pixel_tokens(ids: torch.Tensor, side: int) -> torch.Tensor:
    """Tokens (B, side*side) in 0..255 -> images (B, 1, side, side) in [-1, 1]; the inverse of `to_pixel_tokens`.
    Ids outside 0..255 (a model's BOS, EOS, PAD or mask) are a UserError."""
    if ids.ndim != 2 or ids.shape[1] != side * side:
        raise UserError(f"expected (B, {side * side}) pixel tokens, got shape {tuple(ids.shape)}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > 255):
        raise UserError(f"pixel tokens must be in 0..255, got values in {int(ids.min())}..{int(ids.max())}")
    return from_uint8(ids.to(torch.uint8)).reshape(-1, 1, side, side)


def load_mnist_pixels(cfg: MnistPixelsData, split: str) -> Dataset:
    """MNIST's `split` as `{"ids": (N, H*W), "y": (N,)}` pixel-token sequences with the byte tokenizer."""
    check_split(split)
    cfg.check()
    images = load_mnist(MnistData(image_size=cfg.image_size), split)
    ids = to_pixel_tokens(images.tensors["x"])                                 # (N, H*W)
    tok = ByteTokenizer()
    shape = tuple(images.info["shape"])
    info = {"name": "mnist-pixels", "split": split, "tokenizer": tok.kind, "vocab_size": tok.vocab_size,
            "seq_len": int(ids.shape[1]), "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
            "tokens": int(ids.numel()), "shape": shape, "num_classes": 10, "pixels": True}
    return Dataset({"ids": ids, "y": images.tensors["y"]}, info, tokenizer=tok)
