"""The convolutional encoder and decoder of the LDM / VQGAN autoencoders (Esser et al. 2021, Fig. 2 and App. B;
Rombach et al. 2022, App. G), parameters only.

    Encoder   conv_in -> per level: `layers` ResnetBlocks (+ a stride-2 Downsample except the last level)
              -> mid (ResnetBlock, single-head self-attention, ResnetBlock) -> GroupNorm, SiLU, conv_out
    Decoder   conv_in -> mid -> per level from the deepest: `layers + 1` ResnetBlocks (+ a nearest-neighbour x2
              Upsample except the last) -> GroupNorm, SiLU, conv_out

Each of the `len(channels) - 1` downsamplings halves the side, so the factor is f = 2^(len(channels) - 1).
Submodule names follow the layout of diffusers' `Encoder` / `Decoder` (`down_blocks.i.resnets.j`, `mid_block`,
`to_q`, ...), so a diffusers `AutoencoderKL` / `VQModel` state dict loads into ours unchanged (the parity tests).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-6      # GroupNorm epsilon of every norm in these networks


def group_norm(groups: int, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=EPS, affine=True)


class ResnetBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))), with a 1x1 conv on the skip path when the width changes."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(groups, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = group_norm(groups, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H W positions of a feature map, with a residual connection."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = group_norm(groups, channels)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.group_norm(x).flatten(2).transpose(1, 2)                       # (B, HW, C)
        q, k, v = self.to_q(h), self.to_k(h), self.to_v(h)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]   # (B, HW, C)
        return x + self.to_out[0](a).transpose(1, 2).reshape(B, C, H, W)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero-padding one pixel on the right and bottom (an exact halving of even sides)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the encoder or decoder: ResnetBlocks, then an optional resampler."""

    def __init__(self, c_in: int, c_out: int, n: int, groups: int, resample: str):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(c_in if i == 0 else c_out, c_out, groups) for i in range(n)])
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample(c_out)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample(c_out)])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resnets:
            x = block(x)
        for resampler in getattr(self, "downsamplers", getattr(self, "upsamplers", ())):
            x = resampler(x)
        return x


class MidBlock(nn.Module):
    """ResnetBlock, self-attention (optional), ResnetBlock at the lowest resolution."""

    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([AttnBlock(channels, groups)] if attention else [])

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class Encoder(nn.Module):
    """Image (B, c_in, H, W) -> features (B, c_out, H / f, W / f), f = 2^(len(channels) - 1)."""

    def __init__(self, c_in: int, c_out: int, channels: tuple[int, ...], layers: int, groups: int, attention: bool):
        super().__init__()
        self.conv_in = nn.Conv2d(c_in, channels[0], 3, padding=1)
        widths = (channels[0], *channels)
        self.down_blocks = nn.ModuleList([
            Level(widths[i], widths[i + 1], layers, groups, "down" if i < len(channels) - 1 else "")
            for i in range(len(channels))])
        self.mid_block = MidBlock(channels[-1], groups, attention)
        self.conv_norm_out = group_norm(groups, channels[-1])
        self.conv_out = nn.Conv2d(channels[-1], c_out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down_blocks:
            h = level(h)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, c_in, h, w) -> image (B, c_out, h f, w f); its `conv_out` is the "last layer" of VQGAN's
    adaptive weight."""

    def __init__(self, c_in: int, c_out: int, channels: tuple[int, ...], layers: int, groups: int, attention: bool):
        super().__init__()
        rev = tuple(reversed(channels))
        self.conv_in = nn.Conv2d(c_in, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0], groups, attention)
        widths = (rev[0], *rev)
        self.up_blocks = nn.ModuleList([
            Level(widths[i], widths[i + 1], layers + 1, groups, "up" if i < len(rev) - 1 else "")
            for i in range(len(rev))])
        self.conv_norm_out = group_norm(groups, channels[0])
        self.conv_out = nn.Conv2d(channels[0], c_out, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))

    @property
    def last_layer(self) -> Tensor:
        return self.conv_out.weight
