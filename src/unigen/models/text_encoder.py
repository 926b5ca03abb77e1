"""A small bidirectional transformer text encoder tau_theta(y) -> token states (Rombach et al. 2022, Sec. 3.3).

LDM's text-to-image model trains its text transformer jointly with the UNet (Sec. 4.3.1: "we ... implement tau_theta
as a transformer"); Stable Diffusion later swapped in a frozen CLIP text encoder, which cannot be downloaded here.
Ours is GPT/CLIP-shaped: token + learned position embeddings, pre-LayerNorm blocks (self-attention with a key
padding mask, GELU MLP of 4 C), a final LayerNorm; its output is every token's state (the UNet's cross-attention
context) and the mask of real tokens.

    B batch, S tokens, C = dim, V = vocab_size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unigen.errors import UserError
from unigen.nn.activations import make_mlp
from unigen.nn.attention import Attention, padding_mask


@dataclass
class TextEncoderConfig:
    vocab_size: int
    max_len: int                # longest token sequence (learned positions)
    dim: int = 64               # width C (the UNet's context_dim)
    depth: int = 2              # transformer blocks
    heads: int = 2
    pad_id: int = 0             # id of padding tokens (masked out as keys and in the output mask)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, bias=True)
        self.mlp = make_mlp("gelu", dim, 4 * dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), mask=mask)                   # (B, S, C)
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """ids (B, S) long -> (states (B, S, C), mask (B, S) bool, True = a real token). Init: N(0, 0.02) embeddings
    (positions N(0, 0.01), as CLIP), PyTorch defaults elsewhere."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        if cfg.vocab_size <= 0 or cfg.max_len <= 0 or cfg.depth <= 0:
            raise UserError(f"text encoder needs positive vocab_size, max_len and depth, got {cfg}")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_emb = nn.Parameter(torch.randn(cfg.max_len, cfg.dim) * 0.01)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        self.blocks = nn.ModuleList(EncoderBlock(cfg.dim, cfg.heads) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        if ids.ndim != 2 or ids.shape[1] > cfg.max_len or ids.dtype != torch.long:
            raise UserError(f"text ids must be (B, S <= {cfg.max_len}) long, got {tuple(ids.shape)} {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size):
            raise UserError(f"text ids must be in 0..{cfg.vocab_size - 1}")
        real = ids != cfg.pad_id                                      # (B, S)
        if not bool(real.any(1).all()):
            raise UserError("every text needs at least one non-padding token (e.g. the start token)")
        x = self.tok_emb(ids) + self.pos_emb[: ids.shape[1]]          # (B, S, C)
        keys = padding_mask(~real)                                    # (B, 1, 1, S)
        for block in self.blocks:
            x = block(x, keys)
        return self.norm(x), real
