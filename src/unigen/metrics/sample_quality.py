"""Sample-quality metrics: pure functions of two sample sets (or of their Gaussian fits).

    sliced_wasserstein(x, y)      SW_2: random unit directions, sorted 1-D projections (toy2d)
    mmd_rbf(x, y)                 unbiased MMD^2 with a fixed mixture of RBF bandwidths (toy2d)
    gaussian_fit(f)               mean and covariance of features (float64)
    frechet_distance(mu1, S1, mu2, S2)   Frechet (2-Wasserstein) distance between two Gaussians, squared (FID-style)

Notation
    x (n, d), y (m, d)   two samples
    theta (d, L)         L random unit directions
    k(a, b)              kernel; here the mean over bandwidths h of exp(-||a - b||^2 / (2 h^2))
    mu, S                mean (d,) and covariance (d, d) of a Gaussian fit
"""
from __future__ import annotations

import torch
from torch import Tensor

from unigen.errors import UserError

# Bandwidths of the MMD kernel, in data units. Fixed (not the median heuristic) so that the numbers of different
# models are comparable; they span the scales of the standardised toy2d data (unit variance per axis).
MMD_BANDWIDTHS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def _check_pair(x: Tensor, y: Tensor, name: str) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise UserError(f"{name} needs two (n, d) sample sets with the same d, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[0], y.shape[0]) < 2:
        raise UserError(f"{name} needs at least 2 samples per set, got {x.shape[0]} and {y.shape[0]}")


def _w2_sq_sorted(px: Tensor, py: Tensor) -> Tensor:
    """Exact squared 1-D W_2 between the empirical measures of the columns of px (n, L) and py (m, L).

    W_2^2 = int_0^1 (F^-1(u) - G^-1(u))^2 du with both quantile functions piecewise constant: they only jump at
    u = i / n and j / m, so the integral is a sum over the merged breakpoints. (L,)
    """
    n, m = px.shape[0], py.shape[0]
    qx, qy = px.sort(0).values, py.sort(0).values
    if n == m:
        return ((qx - qy) ** 2).mean(0)
    u = torch.cat([torch.arange(1, n + 1, dtype=px.dtype) / n, torch.arange(1, m + 1, dtype=px.dtype) / m])
    u = u.unique().to(px.device)                                      # (k,) sorted breakpoints, last = 1
    w = torch.diff(u, prepend=u.new_zeros(1))                         # (k,) interval widths
    mid = u - w / 2
    ix = (mid * n).floor().long().clamp(max=n - 1)
    iy = (mid * m).floor().long().clamp(max=m - 1)
    return (w[:, None] * (qx[ix] - qy[iy]) ** 2).sum(0)


def sliced_wasserstein(x: Tensor, y: Tensor, n_proj: int = 256, generator: torch.Generator | None = None) -> Tensor:
    """Bonneel et al. 2015, Eq. 4 (p = 2): SW_2 = (E_theta W_2^2(theta.x, theta.y))^(1/2), theta uniform on the sphere.

    Each 1-D W_2 between the empirical measures is exact (sorted projections matched by quantile level, also for
    different sample sizes). Float64 inside.
    """
    _check_pair(x, y, "sliced Wasserstein")
    if n_proj < 1:
        raise UserError(f"number of projections must be >= 1, got {n_proj}")
    x, y = x.double(), y.double()
    theta = torch.randn(x.shape[1], n_proj, generator=generator, dtype=torch.float64)  # (d, L)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    return _w2_sq_sorted(x @ theta, y @ theta).mean().sqrt()         # projections (n, L), (m, L)


def rbf_kernel(a: Tensor, b: Tensor, bandwidths: tuple[float, ...] = MMD_BANDWIDTHS) -> Tensor:
    """k(a_i, b_j) = mean_h exp(-||a_i - b_j||^2 / (2 h^2)). (n, m)"""
    d2 = torch.cdist(a, b).pow(2)                                     # (n, m)
    return torch.stack([torch.exp(-d2 / (2 * h * h)) for h in bandwidths]).mean(0)


def mmd_rbf(x: Tensor, y: Tensor, bandwidths: tuple[float, ...] = MMD_BANDWIDTHS) -> Tensor:
    """Gretton et al. 2012, Eq. 3 (MMD^2_u, unbiased): mean_{i!=j} k(x_i,x_j) + mean_{i!=j} k(y_i,y_j) - 2 mean k(x_i,y_j).

    Returns the squared MMD; being unbiased it can be slightly negative when the two distributions are equal.
    The kernel is a mixture of RBFs with the fixed `bandwidths` (see MMD_BANDWIDTHS). Float64 inside.
    """
    _check_pair(x, y, "MMD")
    if not bandwidths or min(bandwidths) <= 0:
        raise UserError(f"MMD bandwidths must be positive, got {bandwidths}")
    x, y = x.double(), y.double()
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = rbf_kernel(x, x, bandwidths), rbf_kernel(y, y, bandwidths), rbf_kernel(x, y, bandwidths)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return xx + yy - 2 * kxy.mean()


def gaussian_fit(f: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (d,) and unbiased covariance (d, d) of features f (n, d), in float64."""
    if f.ndim != 2 or f.shape[0] < 2:
        raise UserError(f"a Gaussian fit needs features of shape (n >= 2, d), got {tuple(f.shape)}")
    f = f.double()
    mu = f.mean(0)
    c = f - mu                                                        # (n, d)
    return mu, c.T @ c / (f.shape[0] - 1)


def _sqrt_psd(S: Tensor) -> Tensor:
    """Symmetric square root of a positive semi-definite matrix by eigen-decomposition (negative round-off -> 0)."""
    lam, U = torch.linalg.eigh(S)
    return (U * lam.clamp(min=0).sqrt()) @ U.T


def frechet_distance(mu1: Tensor, S1: Tensor, mu2: Tensor, S2: Tensor) -> Tensor:
    """Dowson & Landau 1982 (the FID of Heusel et al. 2017, Eq. 6): ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2): the eigenvalues of S1 S2 are those of the symmetric PSD
    matrix S1^(1/2) S2 S1^(1/2), so the trace is the sum of the square roots of its eigenvalues (float64, eigh).
    """
    d = mu1.shape[0]
    if mu2.shape != (d,) or S1.shape != (d, d) or S2.shape != (d, d):
        raise UserError(f"Frechet distance needs means (d,) and covariances (d, d), got {tuple(mu1.shape)}, "
                        f"{tuple(S1.shape)}, {tuple(mu2.shape)}, {tuple(S2.shape)}")
    mu1, S1, mu2, S2 = mu1.double(), S1.double(), mu2.double(), S2.double()
    r1 = _sqrt_psd(S1)
    M = r1 @ S2 @ r1
    tr_sqrt = torch.linalg.eigvalsh((M + M.T) / 2).clamp(min=0).sqrt().sum()
    return (mu1 - mu2).pow(2).sum() + S1.trace() + S2.trace() - 2 * tr_sqrt


def frechet_distance_features(f1: Tensor, f2: Tensor) -> Tensor:
    """Frechet distance between Gaussians fitted to two feature sets (n1, d) and (n2, d)."""
    return frechet_distance(*gaussian_fit(f1), *gaussian_fit(f2))
