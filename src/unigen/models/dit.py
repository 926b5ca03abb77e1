"""Diffusion Transformer denoiser (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

Notation:  B batch, C channels, H x W image, p patch, h x w = H/p x W/p grid, N = h*w tokens, D width,
c (B, D) the conditioning vector = noise-level embedding + class embedding (Sec. 3.2, "adaLN-Zero block").

    tokens = PatchEmbed(x) + pos_2d                             Sec. 3.2 "Patchify", fixed 2-D sin-cos positions
    (beta1, gamma1, alpha1, beta2, gamma2, alpha2) = W SiLU(c)  adaLN-Zero: W = 0 at init
    x = x + alpha1 * Attn(LN(x) * (1 + gamma1) + beta1)
    x = x + alpha2 * MLP(LN(x) * (1 + gamma2) + beta2)
    out = unpatchify(Linear(LN(x) * (1 + gamma) + beta))        final layer, adaLN + zero-init linear

Because every alpha and the final linear start at zero, each block is the identity and the network outputs exactly
zero at init. With `pos="sincos"` the layout matches the official DiT weights (and diffusers' DiTTransformer2DModel
up to its per-block copies of the conditioning embedder).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unigen.errors import UserError
from unigen.models.sizes import from_size
from unigen.nn.activations import FeedForward
from unigen.nn.attention import Attention
from unigen.nn.embeddings import ClassEmbedding, NoiseLevelEmbedding, PatchEmbed, unpatchify
from unigen.nn.norm import LayerNorm, modulate
from unigen.nn.position import AxialRotaryEmbedding2D, sinusoidal_embedding

POSITIONS = ("sincos", "rope2d")


@dataclass
class DiTConfig:
    image_size: int = 28            # square input side
    channels: int = 1               # image (or latent) channels in
    out_channels: int = 0           # channels out (0 = channels; 2 * channels to also predict a variance)
    patch: int = 4                  # patch side p
    dim: int = 128                  # width D
    depth: int = 4                  # blocks
    heads: int = 4                  # attention heads
    mlp_ratio: float = 4.0          # MLP hidden = mlp_ratio * D (tanh-GELU, as DiT)
    num_classes: int = 0            # 0 = unconditional; else ids 0..n-1 and the null id n for guidance
    pos: str = "sincos"             # sincos (fixed 2-D sin-cos added to tokens) | rope2d (2-D axial RoPE in attention)
    rope_base: float = 100.0        # rope2d frequency base
    freq_dim: int = 256             # sinusoid width of the noise-level embedding
    qk_norm: bool = False           # RMSNorm on queries and keys (stabilises larger models)


def _check(cfg: DiTConfig) -> None:
    if cfg.pos not in POSITIONS:
        raise UserError(f"model.pos={cfg.pos!r} is not one of: {', '.join(POSITIONS)}")
    if cfg.patch < 1 or cfg.image_size % cfg.patch:
        raise UserError(f"model.image_size={cfg.image_size} is not divisible by model.patch={cfg.patch}")
    if cfg.heads < 1 or cfg.dim % cfg.heads:
        raise UserError(f"model.dim={cfg.dim} is not divisible by model.heads={cfg.heads}")
    if cfg.pos == "sincos" and cfg.dim % 4:
        raise UserError(f"2-D sin-cos positions need model.dim divisible by 4, got {cfg.dim}")
    if cfg.pos == "rope2d" and (cfg.dim // cfg.heads) % 4:
        raise UserError(f"rope2d needs a head width (dim/heads = {cfg.dim // cfg.heads}) divisible by 4")
    if cfg.num_classes < 0 or cfg.depth < 1:
        raise UserError(f"model.num_classes must be >= 0 and model.depth >= 1, got {cfg.num_classes}, {cfg.depth}")


def sincos_2d(dim: int, h: int, w: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positions (Peebles & Xie 2023, Sec. 3.2, after MAE): (h*w, dim) in row-major order.

    The first dim/2 features encode the column index, the last dim/2 the row index, each as [sin, cos] of
    1-D sinusoids with w_i = 10000^(-i / (dim/4)) (the official DiT layout).
    """
    rows = torch.arange(h, dtype=torch.float32).repeat_interleave(w)  # (h*w,)
    cols = torch.arange(w, dtype=torch.float32).repeat(h)             # (h*w,)
    enc = [sinusoidal_embedding(v, dim // 2, cos_first=False) for v in (cols, rows)]
    return torch.cat(enc, dim=-1)                                     # (h*w, dim)


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block (Peebles & Xie 2023, Sec. 3.2, Fig. 3): identity at init."""

    def __init__(self, dim: int, heads: int, hidden: int, qk_norm: bool = False):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=1e-6, affine=False)
        self.attn = Attention(dim, heads, qk_norm=qk_norm, bias=True)
        self.norm2 = LayerNorm(dim, eps=1e-6, affine=False)
        self.mlp = FeedForward(dim, hidden, "gelu_tanh")
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope=None) -> torch.Tensor:
        beta1, gamma1, alpha1, beta2, gamma2, alpha2 = self.ada(F.silu(c)).chunk(6, dim=-1)  # 6 x (B, D)
        x = x + alpha1[:, None] * self.attn(modulate(self.norm1(x), beta1, gamma1), rope=rope)  # (B, N, D)
        return x + alpha2[:, None] * self.mlp(modulate(self.norm2(x), beta2, gamma2))          # (B, N, D)


class FinalLayer(nn.Module):
    """DiT's output layer: adaLN (shift, scale from c) then a zero-init linear to p*p*C_out per token."""

    def __init__(self, dim: int, out_features: int):
        super().__init__()
        self.norm = LayerNorm(dim, eps=1e-6, affine=False)
        self.ada = nn.Linear(dim, 2 * dim)
        self.linear = nn.Linear(dim, out_features)
        for layer in (self.ada, self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        beta, gamma = self.ada(F.silu(c)).chunk(2, dim=-1)           # 2 x (B, D)
        return self.linear(modulate(self.norm(x), beta, gamma))       # (B, N, p*p*C_out)


class DiT(nn.Module):
    """DiT denoiser: `forward(x (B, C, H, W), c_noise (B,), y=None (B,) long) -> (B, C_out, H, W)`.

    `c_noise` is the family's noise label, used as is (see `NoiseLevelEmbedding`). `y=None` on a class-conditional
    model means the null class; the caller drops labels for classifier-free guidance. Default init (DiT's):
    Xavier-uniform for every linear and the patch conv (as a matrix), zero biases, N(0, 0.02^2) for the class
    table and the noise-level MLP, and zero for every adaLN modulation and the final linear.
    """

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        D, grid = cfg.dim, cfg.image_size // cfg.patch
        self.out_channels = cfg.out_channels or cfg.channels
        self.patch_embed = PatchEmbed(cfg.channels, D, cfg.patch)
        if cfg.pos == "sincos":
            self.register_buffer("pos", sincos_2d(D, grid, grid), persistent=False)  # (N, D)
            self.rope = None
        else:
            self.pos = None
            self.rope = AxialRotaryEmbedding2D(D // cfg.heads, cfg.rope_base)
        self.noise_emb = NoiseLevelEmbedding(D, cfg.freq_dim)
        self.class_emb = ClassEmbedding(cfg.num_classes, D) if cfg.num_classes > 0 else None
        hidden = int(cfg.mlp_ratio * D)
        self.blocks = nn.ModuleList(DiTBlock(D, cfg.heads, hidden, cfg.qk_norm) for _ in range(cfg.depth))
        self.final = FinalLayer(D, cfg.patch * cfg.patch * self.out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        for layer in (self.noise_emb.mlp[0], self.noise_emb.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.class_emb is not None:
            nn.init.normal_(self.class_emb.table.weight, std=0.02)
        for layer in [b.ada for b in self.blocks] + [self.final.ada, self.final.linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def condition(self, c_noise: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """c = NoiseLevelEmbedding(c_noise) + ClassEmbedding(y or null): (B, D)."""
        c = self.noise_emb(c_noise)                                   # (B, D)
        if self.class_emb is None:
            if y is not None:
                raise UserError("class labels were given to an unconditional DiT (model.num_classes=0)")
            return c
        if y is None:
            y = torch.full_like(c_noise, self.class_emb.null_id, dtype=torch.long)
        if y.shape != c_noise.shape:
            raise UserError(f"class labels must have shape ({c_noise.shape[0]},), got {tuple(y.shape)}")
        return c + self.class_emb(y)                                  # (B, D)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.cfg
        if x.ndim != 4 or tuple(x.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
            raise UserError(f"DiT expects images of shape (B, {cfg.channels}, {cfg.image_size}, {cfg.image_size}), "
                            f"got {tuple(x.shape)}")
        if c_noise.shape != (x.shape[0],):
            raise UserError(f"c_noise must have shape ({x.shape[0]},), got {tuple(c_noise.shape)}")
        grid = cfg.image_size // cfg.patch
        c = self.condition(c_noise, y)                                # (B, D)
        t = self.patch_embed(x)                                       # (B, N, D)
        if self.pos is not None:
            t = t + self.pos.to(t.dtype)                              # (B, N, D)
        rope = self.rope(grid, grid) if self.rope is not None else None  # (N, D/heads) x 2
        for block in self.blocks:
            t = block(t, c, rope)                                     # (B, N, D)
        t = self.final(t, c)                                          # (B, N, p*p*C_out)
        return unpatchify(t, self.out_channels, grid, grid, cfg.patch)  # (B, C_out, H, W)


# Size presets on one dial (width; depth and heads follow): tiny/small run on a CPU for MNIST (patch 4 on 28x28
# gives 49 tokens), S to XL are the paper's Table 1 (use patch=2 on 32x32x4 latents for DiT-S/2 ... DiT-XL/2).
DIT_SIZES = {
    "tiny": dict(dim=64, depth=4, heads=2),
    "small": dict(dim=128, depth=6, heads=4),
    "S": dict(dim=384, depth=12, heads=6),
    "B": dict(dim=768, depth=12, heads=12),
    "L": dict(dim=1024, depth=24, heads=16),
    "XL": dict(dim=1152, depth=28, heads=16),
}


def dit_config(size: str = "tiny", **overrides) -> DiTConfig:
    """A `DiTConfig` from a size name in `DIT_SIZES`, then any field overrides."""
    return from_size(DiTConfig, DIT_SIZES, size, "DiT", **overrides)
