"""Invertible layers without coupling nets: actnorm, invertible 1x1 convolution, squeeze, NICE's scaling, and the
data pre-processing that maps dequantised pixels y in [0, 1)^D to the flow's input space.

Every layer is an `nn.Module` with `forward(x) -> (z, logdet)`, logdet (B,) = log|det dz/dx| per example, and an
exact `inverse(z) -> x`. Images are (B, C, H, W); vectors (toy2d, NICE) are (B, D) and count as H = W = 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pixels(x: Tensor) -> int:
    """H * W for images (B, C, H, W), 1 for vectors (B, D): how many times a per-channel log-scale counts."""
    return x.shape[2] * x.shape[3] if x.dim() == 4 else 1


def per_channel(v: Tensor, x: Tensor) -> Tensor:
    """A per-channel vector (C,) shaped to broadcast against x: (1, C, 1, 1) for images, (1, C) for vectors."""
    return v.view(1, -1, 1, 1) if x.dim() == 4 else v.view(1, -1)


class ActNorm(nn.Module):
    """Kingma & Dhariwal 2018 (Glow), Sec. 3.1 and Table 1: z = s * (x + b) per channel, log|det| = H W sum log|s|.

    Data-dependent initialisation: on the first forward pass in training mode, b = -mean and s = 1 / (std + eps)
    of that batch per channel, so the activations start with zero mean and unit variance. The flag `initialized`
    is a persistent buffer: it is saved with the weights, so a resumed or reloaded model is never re-initialised.
    Under torch.distributed the statistics are averaged over every process (the global batch), so all processes
    start from the same b and s (openai/glow initialises on rank 0's batch only; DataParallel ports get this wrong).
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.b = nn.Parameter(torch.zeros(channels))
        self.log_s = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        dims = [0, 2, 3] if x.dim() == 4 else [0]
        moments = torch.stack([x.float().mean(dims), x.float().pow(2).mean(dims)])   # (2, C)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(moments)
            moments /= torch.distributed.get_world_size()
        mean, sq = moments
        std = (sq - mean ** 2).clamp_min(0).sqrt()
        self.b.copy_(-mean)
        self.log_s.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self.initialize(x)
        z = (x + per_channel(self.b, x)) * per_channel(self.log_s.exp(), x)
        return z, (pixels(x) * self.log_s.sum()).expand(x.shape[0])

    def inverse(self, z: Tensor) -> Tensor:
        return z * per_channel((-self.log_s).exp(), z) - per_channel(self.b, z)


class InvConv1x1(nn.Module):
    """Kingma & Dhariwal 2018 (Glow), Sec. 3.2: z = W x at every pixel, log|det| = H W log|det W|; W starts as a
    random rotation (QR of a Gaussian matrix, log|det W| = 0).

    `lu=True` is the LU-decomposed form (Sec. 3.2, eq. 10): W = P L (U + diag(s)), P a fixed permutation, L unit
    lower-triangular, U strictly upper-triangular, so log|det| = H W sum log|s| costs O(C). We keep log|s| and the
    sign of s as in openai/glow (`invertible_1x1_conv`, LU branch).
    """

    def __init__(self, channels: int, lu: bool = False):
        super().__init__()
        # (C, C) orthogonal; LAPACK returns Q (and L, U below) column-major: made contiguous, because an optimizer
        # state that follows a transposed layout is restored transposed by a flat checkpoint (resume would drift)
        w = torch.linalg.qr(torch.randn(channels, channels))[0].contiguous()
        self.lu = lu
        if not lu:
            self.weight = nn.Parameter(w)
            return
        P, L, U = (t.contiguous() for t in torch.linalg.lu(w))
        s = torch.diagonal(U)
        self.register_buffer("P", P)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.L = nn.Parameter(L)
        self.U = nn.Parameter(torch.triu(U, 1))
        self.log_s = nn.Parameter(s.abs().log())

    def matrix(self) -> Tensor:
        """W (C, C)."""
        if not self.lu:
            return self.weight
        eye = torch.eye(len(self.log_s), dtype=self.log_s.dtype, device=self.log_s.device)
        L = self.L * self.lower_mask + eye
        U = self.U * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return self.P @ L @ U

    def log_abs_det(self) -> Tensor:
        """log|det W| (a scalar); -inf for a singular W."""
        if self.lu:
            return self.log_s.sum()
        return torch.linalg.slogdet(self.weight.to(torch.promote_types(self.weight.dtype, torch.float32)))[1]

    def _mix(self, x: Tensor, W: Tensor) -> Tensor:
        return F.conv2d(x, W[:, :, None, None].to(x.dtype)) if x.dim() == 4 else x @ W.T.to(x.dtype)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._mix(x, self.matrix()), (pixels(x) * self.log_abs_det()).expand(x.shape[0])

    def inverse(self, z: Tensor) -> Tensor:
        return self._mix(z, torch.linalg.inv(self.matrix().double()).to(z.dtype))


def squeeze2d(x: Tensor) -> Tensor:
    """Dinh et al. 2017 (RealNVP), Sec. 3.6 / Fig. 3: (B, C, H, W) -> (B, 4C, H/2, W/2), each 2x2 block to channels."""
    B, C, H, W = x.shape
    x = x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4)         # (B, C, 2, 2, H/2, W/2)
    return x.reshape(B, 4 * C, H // 2, W // 2)


def unsqueeze2d(z: Tensor) -> Tensor:
    """Inverse of `squeeze2d`: (B, 4C, H, W) -> (B, C, 2H, 2W)."""
    B, C4, H, W = z.shape
    z = z.view(B, C4 // 4, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3)             # (B, C, H, 2, W, 2)
    return z.reshape(B, C4 // 4, 2 * H, 2 * W)


class Squeeze(nn.Module):
    """`squeeze2d` as a layer: a permutation of the entries, log|det| = 0."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return squeeze2d(x), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor) -> Tensor:
        return unsqueeze2d(z)


class Flatten(nn.Module):
    """(B, C, H, W) -> (B, C H W) so that NICE's couplings see a vector; log|det| = 0."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.flatten(1), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor) -> Tensor:
        return z.view(z.shape[0], *self.shape)


class DiagonalScaling(nn.Module):
    """Dinh et al. 2015 (NICE), Sec. 3.3: the last layer z = exp(s) * x, log|det| = sum s; without it additive
    couplings are volume-preserving and the model could not change scale at all."""

    def __init__(self, dim: int):
        super().__init__()
        self.s = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * self.s.exp(), self.s.sum().expand(x.shape[0])

    def inverse(self, z: Tensor) -> Tensor:
        return z * (-self.s).exp()


class Shift(nn.Module):
    """z = x + c (Glow's y - 1/2 centring of pixels in [0, 1)); log|det| = 0."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x + self.c, x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor) -> Tensor:
        return z - self.c


class LogitTransform(nn.Module):
    """Dinh et al. 2017 (RealNVP), Sec. 4.1: z = logit(alpha + (1 - 2 alpha) y) for pixels y in [0, 1), so the flow
    models an unbounded variable. Its log|det| = sum log(1 - 2 alpha) - log p - log(1 - p), p = alpha + (1 - 2 alpha) y,
    is part of the model's density of y, hence of bits/dim (chrischute/real-nvp `_pre_process` keeps the same term)."""

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        self.alpha = alpha

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * y
        z = torch.log(p) - torch.log1p(-p)
        # -log p = softplus(-z), -log(1 - p) = softplus(z)
        ld = math.log(1 - 2 * self.alpha) + F.softplus(z) + F.softplus(-z)
        return z, ld.flatten(1).sum(1)

    def inverse(self, z: Tensor) -> Tensor:
        return (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)
