"""Coupling layers (NICE, RealNVP, Glow) and the networks that compute their shift and scale.

Notation (Dinh et al. 2017, eq. 4-9): the input is split into x_a, which passes unchanged and conditions the
network, and x_b, which is transformed elementwise:

    additive (NICE, eq. 4)          z_b = x_b + t(x_a)                          log|det| = 0
    tanh     (RealNVP, eq. 5-6)     z_b = x_b * exp(s) + t,  s = c tanh(h_s)     log|det| = sum s
    sigmoid  (Glow, Table 1)        z_b = (x_b + t) * sigmoid(h_s + 2)          log|det| = sum log sigmoid(h_s + 2)

`c` is a learned per-channel scale (chrischute/real-nvp's `Rescale`); Glow's order (shift, then scale) and the
+2 follow openai/glow `revnet2d_step`. Partitions:

    alternate     vectors (B, D): x_a = the entries of one parity (NICE, Sec. 5.1)
    checkerboard  images: x_a = the pixels of one colour of a checkerboard, by a mask (RealNVP, Fig. 3 left)
    channel       images: x_a = one half of the channels (RealNVP, Fig. 3 right; Glow's split)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unigen.errors import UserError
from unigen.families.normalizing_flows.layers import ActNorm

SCALES = ("additive", "tanh", "sigmoid")
PARTITIONS = ("alternate", "checkerboard", "channel")


def checkerboard(H: int, W: int, parity: int) -> Tensor:
    """(1, 1, H, W) mask, 1 where (i + j + parity) is even: the conditioning pixels."""
    i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return ((i + j + parity) % 2 == 0).float()[None, None]


class Coupling(nn.Module):
    """One coupling layer (see the module docstring). `net` maps the conditioning part to the parameters of the
    transformed part: t only (additive) or (t, h_s) interleaved along dim 1, openai/glow's `h[:, 0::2]`,
    `h[:, 1::2]`. `shape` is one example's shape: (D,) or (C, H, W)."""

    def __init__(self, net: nn.Module, shape: tuple[int, ...], partition: str, parity: int, scale: str):
        super().__init__()
        if scale not in SCALES or partition not in PARTITIONS:
            raise UserError(f"scale {scale!r} / partition {partition!r} not in {SCALES} / {PARTITIONS}")
        self.net, self.partition, self.parity, self.scale = net, partition, parity, scale
        if partition == "checkerboard":
            self.register_buffer("mask", checkerboard(shape[1], shape[2], parity), persistent=False)
            changed = shape[0]
        elif partition == "channel":
            changed = shape[0] - shape[0] // 2
        else:
            d = shape[0]
            self.register_buffer("idx_a", torch.arange(parity, d, 2), persistent=False)
            self.register_buffer("idx_b", torch.arange(1 - parity, d, 2), persistent=False)
            changed = len(self.idx_b)
        if scale == "tanh":
            self.c = nn.Parameter(torch.ones(changed))

    # -- partitions ------------------------------------------------------------------------------------------
    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(conditioning input of the net, the part that is transformed)."""
        if self.partition == "checkerboard":
            return x * self.mask, x
        if self.partition == "channel":
            h = x.shape[1] // 2
            return (x[:, :h], x[:, h:]) if self.parity == 0 else (x[:, x.shape[1] - h:], x[:, :x.shape[1] - h])
        return x[:, self.idx_a], x[:, self.idx_b]

    def merge(self, x_a: Tensor, z_b: Tensor) -> Tensor:
        if self.partition == "checkerboard":
            return z_b                                   # the masked entries were left unchanged
        if self.partition == "channel":
            return torch.cat([x_a, z_b] if self.parity == 0 else [z_b, x_a], 1)
        out = z_b.new_empty(z_b.shape[0], len(self.idx_a) + len(self.idx_b))
        out[:, self.idx_a], out[:, self.idx_b] = x_a, z_b
        return out

    def params(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        """(t, log scale) of the transformed part; zero on the conditioning pixels of a checkerboard."""
        h = self.net(x_a)
        if self.scale == "additive":
            t, log_s = h, torch.zeros_like(h)
        else:
            t, h_s = h[:, 0::2], h[:, 1::2]
            if self.scale == "tanh":
                c = self.c.view(1, -1, *([1] * (h.dim() - 2)))
                log_s = c * torch.tanh(h_s)
            else:
                log_s = F.logsigmoid(h_s + 2.0)
        if self.partition == "checkerboard":
            keep = 1 - self.mask
            t, log_s = t * keep, log_s * keep
        return t, log_s

    # -- the bijection ---------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = self.split(x)
        t, log_s = self.params(x_a)
        z_b = (x_b + t) * log_s.exp() if self.scale == "sigmoid" else x_b * log_s.exp() + t
        return self.merge(x_a, z_b), log_s.flatten(1).sum(1)

    def inverse(self, z: Tensor) -> Tensor:
        z_a, z_b = self.split(z)
        t, log_s = self.params(z_a)
        x_b = z_b * (-log_s).exp() - t if self.scale == "sigmoid" else (z_b - t) * (-log_s).exp()
        return self.merge(z_a, x_b)


# ---- networks ----------------------------------------------------------------------------------------------

class MLP(nn.Module):
    """NICE's coupling function m (Sec. 5.1: 5 hidden layers of 1000 ReLU units on MNIST; `depth` x `hidden` here);
    the last layer starts at zero so that every coupling starts as the identity."""

    def __init__(self, d_in: int, d_out: int, hidden: int, depth: int):
        super().__init__()
        dims = [d_in] + [hidden] * depth
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(dims[-1], d_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))


class ZeroConv2d(nn.Module):
    """openai/glow `conv2d_zeros`: a 3x3 convolution initialised at zero, output times exp(3 log_scale) per channel
    (log_scale also starts at 0), so each coupling and each learned prior starts as the identity / N(0, I)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.log_scale = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * (3 * self.log_scale).exp().view(1, -1, 1, 1)


class ConvNet(nn.Module):
    """Glow's NN() (openai/glow `f`): conv 3x3 -> ReLU -> conv 1x1 -> ReLU -> ZeroConv2d 3x3, with actnorm after
    the first two convolutions when `actnorm` (Glow), none for our RealNVP (the paper's ResNet with batch norm is
    replaced by this net of the same shape; batch statistics would make the density depend on the batch)."""

    def __init__(self, c_in: int, c_out: int, hidden: int, actnorm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, hidden, 3, padding=1, bias=not actnorm)
        self.conv2 = nn.Conv2d(hidden, hidden, 1, bias=not actnorm)
        self.norm1 = ActNorm(hidden) if actnorm else None
        self.norm2 = ActNorm(hidden) if actnorm else None
        self.out = ZeroConv2d(hidden, c_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x)
        h = F.relu(self.norm1(h)[0] if self.norm1 is not None else h)
        h = self.conv2(h)
        h = F.relu(self.norm2(h)[0] if self.norm2 is not None else h)
        return self.out(h)
