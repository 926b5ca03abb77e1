"""Input embeddings of image backbones: patches, noise levels, class labels.

Notation:  B batch, C image channels, H x W image, p patch side, h x w = H/p x W/p patch grid, N = h*w tokens,
D embedding width.
"""
from __future__ import annotations

import torch
from torch import nn

from unigen.errors import UserError
from unigen.nn.position import sinusoidal_embedding


class PatchEmbed(nn.Module):
    """Image to patch tokens (Dosovitskiy et al. 2021, Eq. 1): a conv with kernel = stride = p, then flatten.

    (B, C, H, W) -> (B, N, D) with tokens in row-major order of the (h, w) grid.
    """

    def __init__(self, in_ch: int, dim: int, patch: int, bias: bool = True):
        super().__init__()
        if patch < 1:
            raise UserError(f"patch size must be >= 1, got {patch}")
        self.patch = patch
        self.proj = nn.Conv2d(in_ch, dim, kernel_size=patch, stride=patch, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.proj.in_channels:
            raise UserError(f"expected images of shape (B, {self.proj.in_channels}, H, W), got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        if H % self.patch or W % self.patch:
            raise UserError(f"image size {H}x{W} is not divisible by the patch size {self.patch}")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, N, D)


def unpatchify(x: torch.Tensor, C: int, h: int, w: int, p: int) -> torch.Tensor:
    """Patch tokens back to an image (Peebles & Xie 2023, Sec. 3.2 "linear decoder + rearrange").

    x: (B, N = h*w, p*p*C), each token's features ordered (p_row, p_col, C)  ->  (B, C, h*p, w*p).
    """
    B, N, F = x.shape
    if N != h * w or F != p * p * C:
        raise UserError(f"cannot unpatchify {tuple(x.shape)} into a {h}x{w} grid of {p}x{p}x{C} patches")
    x = x.reshape(B, h, w, p, p, C)                     # (B, h, w, p, p, C)
    x = x.permute(0, 5, 1, 3, 2, 4)                     # (B, C, h, p, w, p)
    return x.reshape(B, C, h * p, w * p)                # (B, C, H, W)


class NoiseLevelEmbedding(nn.Module):
    """Noise-level embedding (Ho et al. 2020, Sec. 4; DiT's TimestepEmbedder): sinusoids then a 2-layer SiLU MLP.

    Input is the family's real-valued noise label c_noise of shape (B,) (the DDPM timestep, EDM's log(sigma)/4,
    a flow's t*1000, ...). Scaling it into a range the sinusoids resolve is the caller's job; this module applies
    no scaling. Sinusoids are [cos, sin] with w_i = max_period^(-i / (freq_dim/2 - freq_shift)) (see
    `sinusoidal_embedding`; freq_shift=1 is diffusers' DiT convention). Output (B, dim).
    """

    def __init__(self, dim: int, freq_dim: int = 256, max_period: float = 10000.0, freq_shift: float = 0.0):
        super().__init__()
        self.freq_dim, self.max_period, self.freq_shift = freq_dim, max_period, freq_shift
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        if c_noise.ndim != 1:
            raise UserError(f"the noise level must have shape (B,), got {tuple(c_noise.shape)}")
        f = sinusoidal_embedding(c_noise.float(), self.freq_dim, self.max_period, freq_shift=self.freq_shift)
        return self.mlp(f.to(self.mlp[0].weight.dtype))  # (B, freq_dim) -> (B, dim)


class ClassEmbedding(nn.Module):
    """Class-label embedding with one extra learned "null" class for classifier-free guidance (Ho & Salimans 2022).

    Ids 0..num_classes-1 are the classes and id `num_classes` is the null (unconditional) label. The caller drops
    labels to the null id during training; this module draws no randomness. Output (B, dim).
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if num_classes < 1:
            raise UserError(f"num_classes must be >= 1 for a class embedding, got {num_classes}")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    @property
    def null_id(self) -> int:
        return self.num_classes

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim != 1 or y.dtype not in (torch.int64, torch.int32):
            raise UserError(f"class labels must be integer of shape (B,), got {y.dtype} {tuple(y.shape)}")
        return self.table(y)  # (B, dim)
