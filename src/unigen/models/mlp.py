"""A residual MLP denoiser for low-dimensional data (the toy2d backbone of the diffusion family).

Notation:  B batch, d data dimension, W width, c (B, W) the conditioning vector = noise-level embedding (+ class).

    h = Linear(x)                                   (B, W)
    h = h + Linear(SiLU(Linear(LN(h) + c)))         x depth     pre-norm residual blocks, conditioning added
    out = Linear(SiLU(LN(h)))                       zero-initialised, so the network outputs exactly 0 at init

Same call signature as the image backbones: `forward(x (B, d), c_noise (B,), y=None) -> (B, d)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unigen.errors import UserError
from unigen.nn.embeddings import ClassEmbedding, NoiseLevelEmbedding


@dataclass
class MLPConfig:
    dim: int = 2                # data dimension d
    width: int = 256            # hidden width W
    depth: int = 4              # residual blocks
    freq_dim: int = 64          # sinusoid width of the noise-level embedding
    num_classes: int = 0        # 0 = unconditional; else ids 0..n-1 and the null id n for guidance


class ResBlock(nn.Module):
    """Pre-norm residual block with the conditioning vector added to the normalised input."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.silu(self.fc1(self.norm(h) + c)))      # (B, W)


class ResidualMLP(nn.Module):
    """Residual MLP denoiser: parameters and a forward pass, nothing else."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        for name in ("dim", "width", "depth", "freq_dim"):
            if getattr(cfg, name) < 1:
                raise UserError(f"MLP {name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.num_classes < 0:
            raise UserError(f"model.num_classes must be >= 0, got {cfg.num_classes}")
        self.cfg = cfg
        self.inp = nn.Linear(cfg.dim, cfg.width)
        self.noise_emb = NoiseLevelEmbedding(cfg.width, cfg.freq_dim)
        self.class_emb = ClassEmbedding(cfg.num_classes, cfg.width) if cfg.num_classes else None
        self.blocks = nn.ModuleList(ResBlock(cfg.width) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.width)
        self.out = nn.Linear(cfg.width, cfg.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.cfg.dim:
            raise UserError(f"MLP expects inputs of shape (B, {self.cfg.dim}), got {tuple(x.shape)}")
        if c_noise.shape != (x.shape[0],):
            raise UserError(f"c_noise must have shape ({x.shape[0]},), got {tuple(c_noise.shape)}")
        c = self.noise_emb(c_noise)                                   # (B, W)
        if self.class_emb is not None:
            if y is None:
                y = torch.full_like(c_noise, self.class_emb.null_id, dtype=torch.long)
            c = c + self.class_emb(y)                                 # (B, W)
        elif y is not None:
            raise UserError("class labels were given to an unconditional MLP (model.num_classes=0)")
        h = self.inp(x)                                               # (B, W)
        for block in self.blocks:
            h = block(h, c)                                           # (B, W)
        return self.out(F.silu(self.norm_out(h)))                     # (B, d)
