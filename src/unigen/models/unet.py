"""The small ADM-style UNet denoiser (Ho et al. 2020, Appendix B; Dhariwal & Nichol 2021, Sec. 3).

Notation:  B batch, C channels, H x W feature map, E = 4 * base_width noise-embedding width, L = len(mults) levels.

    x ─ conv_in ─ [ResBlock (+Attn)] x num_res_blocks, Downsample ─ ... ─ mid: ResBlock, Attn, ResBlock
                ─ [concat skip, ResBlock (+Attn)] x (num_res_blocks + 1), Upsample ─ ... ─ GroupNorm, SiLU, conv_out

The noise level enters every residual block through scale-shift normalisation, GroupNorm(h) * (1 + s) + b
(Dhariwal & Nichol 2021, "AdaGN"); a class label (with a null id for classifier-free guidance) is added to the
noise embedding. With `context_dim > 0` every attention block (levels in attn_resolutions and the middle) is a
`SpatialTransformer` instead: self-attention, cross-attention to text token states, and a GEGLU MLP, as in latent
diffusion's text-conditional UNet (Rombach et al. 2022, Sec. 3.3; diffusers' UNet2DConditionModel). There is no batch normalisation, so each sample's output depends only on that sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unigen.errors import UserError
from unigen.models.sizes import from_size
from unigen.nn.attention import Attention
from unigen.models.spatial_transformer import SpatialTransformer
from unigen.nn.embeddings import ClassEmbedding, NoiseLevelEmbedding


@dataclass
class UNetConfig:
    channels: int = 1                       # image channels in
    out_channels: int = 0                   # channels out (0 = channels)
    image_size: int = 28                    # side of the training images; attn_resolutions refer to it
    base_width: int = 64                    # channels at the first level
    mults: tuple[int, ...] = (1, 2, 2)      # channel multiplier per level; each level after the first halves H, W
    num_res_blocks: int = 2                 # residual blocks per level on the way down (one more on the way up)
    attn_resolutions: tuple[int, ...] | None = None  # sides with self-attention; None = levels after the first
                                            # with side <= 16 (the middle always has attention)
    head_dim: int = 32                      # attention head width; heads = channels // head_dim
    norm_groups: int = 32                   # GroupNorm groups (must divide every level's width)
    dropout: float = 0.0
    num_classes: int = 0                    # 0 = unconditional; otherwise ids 0..n-1 and null id n
    context_dim: int = 0                    # > 0: attention blocks cross-attend to a (B, S, context_dim) context
    transformer_depth: int = 1              # transformer blocks per SpatialTransformer (context_dim > 0)


def _check(cfg: UNetConfig) -> None:
    levels = len(cfg.mults)
    if levels < 1 or min(cfg.mults) < 1:
        raise UserError(f"model.mults must be a non-empty tuple of positive ints, got {cfg.mults}")
    if cfg.image_size % 2 ** (levels - 1):
        sides = [cfg.image_size / 2**i for i in range(levels)]
        raise UserError(f"image size {cfg.image_size} cannot be halved {levels - 1} times for mults {cfg.mults} "
                        f"(sides {sides}); use fewer levels")
    for m in cfg.mults:
        ch = cfg.base_width * m
        if ch % cfg.norm_groups:
            raise UserError(f"model.norm_groups={cfg.norm_groups} does not divide the width {ch} (base_width*mult)")
        if ch % cfg.head_dim:
            raise UserError(f"model.head_dim={cfg.head_dim} does not divide the width {ch} (base_width*mult)")
    if not 0 <= cfg.dropout < 1:
        raise UserError(f"model.dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.num_classes < 0:
        raise UserError(f"model.num_classes must be >= 0, got {cfg.num_classes}")
    if cfg.context_dim < 0 or cfg.transformer_depth < 1:
        raise UserError(f"model context_dim must be >= 0 and transformer_depth >= 1, got {cfg.context_dim}, "
                        f"{cfg.transformer_depth}")
    if cfg.num_res_blocks < 1:
        raise UserError(f"model.num_res_blocks must be >= 1, got {cfg.num_res_blocks}")
    sides = [cfg.image_size // 2**i for i in range(levels)]
    stray = [r for r in cfg.attn_resolutions or () if r not in sides]
    if stray:
        raise UserError(f"model.attn_resolutions {tuple(stray)} are not feature-map sides of this UNet "
                        f"(sides {tuple(sides)} for image_size={cfg.image_size}, mults={cfg.mults})")


def _attn_resolutions(cfg: UNetConfig) -> tuple[int, ...]:
    """The feature-map sides that get attention: the config's, or by default every level after the first at <= 16."""
    if cfg.attn_resolutions is not None:
        return tuple(cfg.attn_resolutions)
    return tuple(cfg.image_size // 2**i for i in range(1, len(cfg.mults)) if cfg.image_size // 2**i <= 16)


class ResBlock(nn.Module):
    """Residual block with scale-shift noise conditioning (Dhariwal & Nichol 2021, Sec. 3, AdaGN).

    h = conv1(SiLU(GN(x))); h = SiLU(GN(h) * (1 + s) + b); out = skip(x) + conv2(dropout(h)), with conv2 zero-init.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                         # (B, C_out, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # 2 x (B, C_out, 1, 1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)               # (B, C_out, H, W)
        return self.skip(x) + self.conv2(self.dropout(h))


class AttnBlock(nn.Module):
    """Self-attention over the H*W positions of a feature map, pre-GroupNorm, residual, zero-init output."""

    def __init__(self, ch: int, head_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.attn = Attention(ch, ch // head_dim, bias=True)
        nn.init.zeros_(self.attn.proj.weight)
        nn.init.zeros_(self.attn.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)                   # (B, H*W, C); contiguous if channels_last
        h = self.attn(h)                                              # (B, H*W, C)
        return x + h.transpose(1, 2).reshape(B, C, H, W)


class Downsample(nn.Module):
    """Stride-2 3x3 conv: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the UNet: residual blocks, each optionally followed by attention."""

    def __init__(self, c_ins: list[int], c_out: int, emb_dim: int, cfg: UNetConfig, attn: bool):
        super().__init__()
        g = cfg.norm_groups
        self.res = nn.ModuleList(ResBlock(c, c_out, emb_dim, g, cfg.dropout) for c in c_ins)
        self.attn = nn.ModuleList(attention_block(c_out, cfg) if attn else nn.Identity() for _ in c_ins)


def attention_block(ch: int, cfg: UNetConfig) -> nn.Module:
    """Self-attention, or with a context the text-conditioning SpatialTransformer (heads of cfg.head_dim channels)."""
    if cfg.context_dim:
        return SpatialTransformer(ch, ch // cfg.head_dim, cfg.context_dim, cfg.norm_groups, cfg.transformer_depth)
    return AttnBlock(ch, cfg.head_dim, cfg.norm_groups)


def attend(block: nn.Module, h: torch.Tensor, context: tuple) -> torch.Tensor:
    """Apply an attention slot of the UNet: SpatialTransformers get the (context, mask) pair, the others only h."""
    return block(h, *context) if isinstance(block, SpatialTransformer) else block(h)


class UNet(nn.Module):
    """ADM-style UNet denoiser: `forward(x (B, C, H, W), c_noise (B,), y=None (B,) long) -> (B, C_out, H, W)`.

    `c_noise` is the family's noise label, used as is (see `NoiseLevelEmbedding`). `y=None` on a class-conditional
    model means the null class. Default init: PyTorch's default for convs and linears, the embedding tables
    N(0, 1); the second conv of every residual block, every attention output projection and the last conv are
    zero, so the freshly built network outputs exactly zero. Works with `channels_last` inputs and weights.
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        widths = [cfg.base_width * m for m in cfg.mults]
        emb_dim = 4 * cfg.base_width
        self.noise_emb = NoiseLevelEmbedding(emb_dim, freq_dim=cfg.base_width)
        self.class_emb = ClassEmbedding(cfg.num_classes, emb_dim) if cfg.num_classes > 0 else None
        self.conv_in = nn.Conv2d(cfg.channels, widths[0], 3, padding=1)

        sides = [cfg.image_size // 2**i for i in range(len(widths))]  # feature-map side at each level
        attn_at = _attn_resolutions(cfg)
        skips, ch = [widths[0]], widths[0]                            # channels of every saved skip, in order
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, w in enumerate(widths):
            c_ins = [ch] + [w] * (cfg.num_res_blocks - 1)
            self.down.append(Level(c_ins, w, emb_dim, cfg, sides[i] in attn_at))
            ch = w
            skips += [w] * cfg.num_res_blocks
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else Downsample(ch))
            if not last:
                skips.append(ch)

        self.mid1 = ResBlock(ch, ch, emb_dim, cfg.norm_groups, cfg.dropout)
        self.mid_attn = attention_block(ch, cfg)
        self.mid2 = ResBlock(ch, ch, emb_dim, cfg.norm_groups, cfg.dropout)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            c_ins = []
            for _ in range(cfg.num_res_blocks + 1):
                c_ins.append(ch + skips.pop())
                ch = w
            self.up.append(Level(c_ins, w, emb_dim, cfg, sides[i] in attn_at))
            self.upsample.append(Upsample(ch) if i > 0 else nn.Identity())

        self.norm_out = nn.GroupNorm(cfg.norm_groups, ch)
        self.conv_out = nn.Conv2d(ch, cfg.out_channels or cfg.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """context (B, S, context_dim) text token states and context_mask (B, S) bool (True = a real token),
        required iff cfg.context_dim > 0."""
        cfg = self.cfg
        if (context is None) != (cfg.context_dim == 0) or (context is not None and (
                context.shape[0] != x.shape[0] or context.ndim != 3 or context.shape[2] != cfg.context_dim)):
            raise UserError(f"this UNet takes context_dim={cfg.context_dim} (0 = none); got a context of shape "
                            f"{None if context is None else tuple(context.shape)} for {x.shape[0]} images")
        if x.ndim != 4 or x.shape[1] != cfg.channels:
            raise UserError(f"UNet expects images of shape (B, {cfg.channels}, H, W), got {tuple(x.shape)}")
        div = 2 ** (len(cfg.mults) - 1)
        if x.shape[2] % div or x.shape[3] % div:
            raise UserError(f"image size {x.shape[2]}x{x.shape[3]} is not divisible by {div} "
                            f"({len(cfg.mults)} UNet levels)")
        if c_noise.shape != (x.shape[0],):
            raise UserError(f"c_noise must have shape ({x.shape[0]},), got {tuple(c_noise.shape)}")
        emb = self.noise_emb(c_noise)                                 # (B, E)
        if self.class_emb is not None:
            if y is None:
                y = torch.full_like(c_noise, self.class_emb.null_id, dtype=torch.long)
            if y.shape != c_noise.shape:
                raise UserError(f"class labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
            emb = emb + self.class_emb(y)                             # (B, E)
        elif y is not None:
            raise UserError("class labels were given to an unconditional UNet (model.num_classes=0)")

        ctx = (context, context_mask)
        h = self.conv_in(x)                                           # (B, C0, H, W)
        skips = [h]
        for level, down in zip(self.down, self.downsample):
            for res, attn in zip(level.res, level.attn):
                h = attend(attn, res(h, emb), ctx)
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)                                           # (B, C, H/2, W/2)
                skips.append(h)

        h = self.mid2(attend(self.mid_attn, self.mid1(h, emb), ctx), emb)   # (B, C_L, H/2^(L-1), W/2^(L-1))

        for level, up in zip(self.up, self.upsample):
            for res, attn in zip(level.res, level.attn):
                h = attend(attn, res(torch.cat([h, skips.pop()], dim=1), emb), ctx)
            h = up(h)
        return self.conv_out(F.silu(self.norm_out(h)))                # (B, C_out, H, W)


# Size presets on one dial, the base width; the rest follows the defaults above.
UNET_SIZES = {
    "tiny": dict(base_width=32, norm_groups=8, num_res_blocks=1),
    "small": dict(base_width=64, norm_groups=32, num_res_blocks=2),
    "base": dict(base_width=128, norm_groups=32, num_res_blocks=2),
}


def unet_config(size: str = "small", **overrides) -> UNetConfig:
    """A `UNetConfig` from a size name in `UNET_SIZES`, then any field overrides."""
    return from_size(UNetConfig, UNET_SIZES, size, "UNet", **overrides)
