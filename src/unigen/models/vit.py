"""Vision Transformer classifier (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", Eqs. 1-4).

Notation:  B batch, C channels, H x W image, p patch, h x w = H/p x W/p grid, N = h*w patches, T = N (+1 with a
CLS token) tokens, D width, K classes.

    z_0 = [x_cls; x_p^1 E; ...; x_p^N E] (+ E_pos)       Eq. 1   (PatchEmbed, CLS token, learned positions)
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                    Eq. 2   (pre-norm attention, optional 2-D axial RoPE)
    z_l = MLP(LN(z'_l)) + z'_l                           Eq. 3   (exact-GELU MLP)
    y = head(LN(z_L)^0)  or  head(mean_i LN(z_L)^i)      Eq. 4   (CLS or mean pooling)

With `pos="learned"`, `pool="cls"`, `qkv_bias` and `norm_eps` set as in a `transformers.ViTConfig`, the weights
port one to one into Hugging Face's `ViTForImageClassification` (split `qkv` into query/key/value).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from unigen.errors import UserError
from unigen.models.sizes import from_size
from unigen.nn.activations import FeedForward
from unigen.nn.attention import Attention
from unigen.nn.embeddings import PatchEmbed
from unigen.nn.norm import LayerNorm
from unigen.nn.position import AxialRotaryEmbedding2D, LearnedPositions

POOLS = ("cls", "mean")
POSITIONS = ("learned", "rope2d", "none")


@dataclass
class ViTConfig:
    image_size: int = 28            # square input side (learned positions fix it; rope2d/none accept any multiple of patch)
    channels: int = 1               # image channels
    patch: int = 4                  # patch side p
    num_classes: int = 10           # K
    dim: int = 64                   # width D
    depth: int = 4                  # blocks
    heads: int = 2                  # attention heads (D / heads per head)
    mlp_ratio: float = 4.0          # MLP hidden = mlp_ratio * D
    pool: str = "cls"               # cls | mean
    pos: str = "learned"            # learned (1-D absolute, incl. CLS) | rope2d (2-D axial RoPE) | none
    rope_base: float = 100.0        # rope2d frequency base (Heo et al. 2024 use 100 for images)
    qkv_bias: bool = True           # bias on the q/k/v projection (the output projection always has one)
    norm_eps: float = 1e-6          # LayerNorm eps (Hugging Face ViT uses 1e-12, timm 1e-6)
    dropout: float = 0.0            # on embeddings, attention probabilities and residual branches


def _check(cfg: ViTConfig) -> None:
    if cfg.pool not in POOLS:
        raise UserError(f"model.pool={cfg.pool!r} is not one of: {', '.join(POOLS)}")
    if cfg.pos not in POSITIONS:
        raise UserError(f"model.pos={cfg.pos!r} is not one of: {', '.join(POSITIONS)}")
    if cfg.patch < 1 or cfg.image_size % cfg.patch:
        raise UserError(f"model.image_size={cfg.image_size} is not divisible by model.patch={cfg.patch}")
    if cfg.heads < 1 or cfg.dim % cfg.heads:
        raise UserError(f"model.dim={cfg.dim} is not divisible by model.heads={cfg.heads}")
    if cfg.pos == "rope2d" and (cfg.dim // cfg.heads) % 4:
        raise UserError(f"rope2d needs a head width (dim/heads = {cfg.dim // cfg.heads}) divisible by 4")
    if cfg.num_classes < 1 or cfg.depth < 1:
        raise UserError(f"model.num_classes and model.depth must be >= 1, got {cfg.num_classes}, {cfg.depth}")


class ViTBlock(nn.Module):
    """Pre-norm encoder block (Dosovitskiy et al. 2021, Eqs. 2-3): x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int, *, qkv_bias: bool = True, eps: float = 1e-6,
                 dropout: float = 0.0):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, bias=True, dropout=dropout)
        if not qkv_bias:  # ViT keeps the output projection's bias even without q/k/v biases
            self.attn.qkv.register_parameter("bias", None)
        self.norm2 = LayerNorm(dim, eps=eps)
        self.mlp = FeedForward(dim, hidden, "gelu", dropout=dropout)

    def forward(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope=rope)  # (B, T, D)
        return x + self.mlp(self.norm2(x))           # (B, T, D)


class ViT(nn.Module):
    """ViT classifier: `forward(x (B, C, H, W)) -> logits (B, num_classes)`.

    Default init (as Hugging Face / timm ViT): linear and patch-conv weights truncated N(0, 0.02^2), biases zero,
    CLS token truncated N(0, 0.02^2), learned positions N(0, 0.02^2), LayerNorms (1, 0), and the classifier head
    zero (timm), so the initial logits are 0 and the initial loss is log K.
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        D, grid = cfg.dim, cfg.image_size // cfg.patch
        self.n_prefix = 1 if cfg.pool == "cls" else 0
        self.patch_embed = PatchEmbed(cfg.channels, D, cfg.patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, D)) if self.n_prefix else None
        self.pos = LearnedPositions(D, self.n_prefix + grid * grid) if cfg.pos == "learned" else None
        self.rope = AxialRotaryEmbedding2D(D // cfg.heads, cfg.rope_base) if cfg.pos == "rope2d" else None
        self.drop = nn.Dropout(cfg.dropout)
        hidden = int(cfg.mlp_ratio * D)
        self.blocks = nn.ModuleList(
            ViTBlock(D, cfg.heads, hidden, qkv_bias=cfg.qkv_bias, eps=cfg.norm_eps, dropout=cfg.dropout)
            for _ in range(cfg.depth))
        self.norm = LayerNorm(D, eps=cfg.norm_eps)
        self.head = nn.Linear(D, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.cls is not None:
            nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.zeros_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if self.pos is not None and tuple(x.shape[-2:]) != (cfg.image_size, cfg.image_size):
            raise UserError(f"ViT with learned positions expects {cfg.image_size}x{cfg.image_size} images, "
                            f"got {tuple(x.shape)}")
        t = self.patch_embed(x)                                       # (B, N, D)
        if self.cls is not None:
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)  # (B, T, D)
        if self.pos is not None:
            t = self.pos(t)                                           # (B, T, D)
        rope = None
        if self.rope is not None:
            rope = self.rope(x.shape[-2] // cfg.patch, x.shape[-1] // cfg.patch, self.n_prefix)  # (T, D/heads) x 2
        t = self.drop(t)
        for block in self.blocks:
            t = block(t, rope)                                        # (B, T, D)
        t = self.norm(t)
        feat = t[:, 0] if cfg.pool == "cls" else t.mean(dim=1)        # (B, D)
        return self.head(feat)                                        # (B, K)


# Size presets on one dial (width; depth and heads follow): tiny/small for CPU runs, then the paper's Ti, S, B.
VIT_SIZES = {
    "tiny": dict(dim=64, depth=4, heads=2),
    "small": dict(dim=128, depth=6, heads=4),
    "Ti": dict(dim=192, depth=12, heads=3),
    "S": dict(dim=384, depth=12, heads=6),
    "B": dict(dim=768, depth=12, heads=12),
}


def vit_config(size: str = "tiny", **overrides) -> ViTConfig:
    """A `ViTConfig` from a size name in `VIT_SIZES`, then any field overrides."""
    return from_size(ViTConfig, VIT_SIZES, size, "ViT", **overrides)
