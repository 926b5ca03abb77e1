"""Past windows of frame features, shared by the window models (IDN, OadTR): every frame t is classified from
the T features f_{t-T+1} .. f_t, zeros standing in before the stream's first frame.

    windows(f, T, n)   (B, L, d) -> (B, n, T, d): the windows of the last n frames of a clip, for training
    push(buf, f_t)     the streaming form: a (B, T, d) ring of the last T features, constant memory per frame
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def windows(f: torch.Tensor, T: int, n: int) -> torch.Tensor:
    """The past windows of the last n frames of features f (B, L, d): (B, n, T, d), zero-padded on the left."""
    padded = F.pad(f, (0, 0, T - 1, 0))                                            # (B, L + T - 1, d)
    w = padded.unfold(1, T, 1)                                                     # (B, L, d, T)
    return w[:, -n:].permute(0, 1, 3, 2)                                           # (B, n, T, d)


def push(buf: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Drop the oldest of the T features in buf (B, T, d) and append f_t (B, d)."""
    return torch.cat([buf[:, 1:], f_t[:, None]], dim=1)
