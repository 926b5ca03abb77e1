"""2-D sine position encodings of DETR (Carion et al. 2020, Sec. 3.2 and Appendix A.4), after Vaswani et al. Eq. 5.

Each spatial position (y, x) gets d/2 features from its row and d/2 from its column. With y_embed the cumulative
count of valid pixels down a column (1..H), normalised to (0, 2 pi] when `normalize` (y / (y_H + eps) * 2 pi):

    PE(y)_{2i} = sin(y / T^{2i / (d/2)}),  PE(y)_{2i+1} = cos(y / T^{2i / (d/2)}),  T = 10000,

the same for x, concatenated as [PE(y), PE(x)] along the channel axis. The mask lets padded images count only
their valid pixels; images of one size (ours) have no padding.
"""
from __future__ import annotations

import math

import torch

from unigen.errors import UserError


def sine_position_encoding(valid: torch.Tensor, d_model: int, temperature: float = 10000.0,
                           normalize: bool = True, scale: float = 2 * math.pi, eps: float = 1e-6) -> torch.Tensor:
    """Encodings (B, d_model, H, W) of the valid-pixel mask `valid` (B, H, W) bool; d_model must be a multiple of 4."""
    if d_model % 4:
        raise UserError(f"d_model must be a multiple of 4 for 2-D sine encodings, got {d_model}")
    half = d_model // 2
    y_embed = valid.cumsum(1, dtype=torch.float32)                              # (B, H, W)
    x_embed = valid.cumsum(2, dtype=torch.float32)
    if normalize:
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    i = torch.arange(half, dtype=torch.float32, device=valid.device)
    dim_t = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)  # (half,)
    pos_x = x_embed[..., None] / dim_t                                          # (B, H, W, half)
    pos_y = y_embed[..., None] / dim_t
    pos_x = torch.stack([pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()], -1).flatten(3)   # interleave sin, cos
    pos_y = torch.stack([pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()], -1).flatten(3)
    return torch.cat([pos_y, pos_x], -1).permute(0, 3, 1, 2)                    # (B, d_model, H, W)
