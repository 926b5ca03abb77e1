"""2-D toy distributions: moons, swissroll, 8gaussians, checkerboard, rings.

Scaling: each distribution is first defined in "raw" coordinates below, then standardised per axis by its exact
population mean and standard deviation (derived in closed form next to each definition), so samples have mean 0
and standard deviation 1 on both axes. `toy2d_log_density` is the exact density of the standardised variable:
    log p(x) = log p_raw(mu + sd * x) + log sd_1 + log sd_2.

Closed-form densities exist for
  8gaussians   an equal mixture of 8 isotropic Gaussians N(R (cos k pi/4, sin k pi/4), s^2 I), R = 2, s = 0.2;
  checkerboard uniform on the 8 "black" unit squares of a 4x4 board over [-2, 2]^2 (cell (i, j) with i + j even);
  rings        uniform on the union of 4 concentric annuli of width w = 0.25 around radii 1, 2, 3, 4 (so each
               ring's weight is proportional to its area, i.e. to its radius). We chose annuli rather than
               circles blurred by radial Gaussian noise because the latter has no closed-form 2-D density.
moons and swissroll are curves blurred by isotropic Gaussian noise; their density is an intractable 1-D integral,
so `toy2d_log_density` raises UserError for them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from unigen.data import options
from unigen.data.dataset import Dataset, cached, check_split, split_seed
from unigen.errors import UserError

N_TRAIN, N_TEST = 100_000, 10_000

# moons: t ~ U[0, pi]; upper (cos t, sin t), lower (1 - cos t, 1/2 - sin t), equal odds; + N(0, 0.1^2 I).
MOONS_NOISE = 0.1
# swissroll: t = 1.5 pi + 3 pi u, u ~ U[0, 1]; (t cos t, t sin t) + N(0, 0.5^2 I).
SWISS_A, SWISS_B, SWISS_NOISE = 1.5 * math.pi, 4.5 * math.pi, 0.5
GAUSS_R, GAUSS_S = 2.0, 0.2
RING_RADII, RING_W = (1.0, 2.0, 3.0, 4.0), 0.25


def _swiss_moments() -> tuple[tuple[float, float], tuple[float, float]]:
    """Exact moments of (t cos t, t sin t), t ~ U[a, b], a = 1.5 pi, b = 4.5 pi (sin 2t = 0, cos 2t = -1 at both ends).

    E[t cos t] = [t sin t + cos t]_a^b / 3pi = 2,   E[t sin t] = [sin t - t cos t]_a^b / 3pi = 2 / 3pi,
    E[t^2 cos^2 t] = ((b^3 - a^3)/6 - 3pi/4) / 3pi,   E[t^2 sin^2 t] = ((b^3 - a^3)/6 + 3pi/4) / 3pi.
    """
    a, b = SWISS_A, SWISS_B
    mx, my = 2.0, 2.0 / (3 * math.pi)
    cube = (b ** 3 - a ** 3) / 6
    vx = (cube - 0.75 * math.pi) / (3 * math.pi) - mx ** 2 + SWISS_NOISE ** 2
    vy = (cube + 0.75 * math.pi) / (3 * math.pi) - my ** 2 + SWISS_NOISE ** 2
    return (mx, my), (math.sqrt(vx), math.sqrt(vy))


# (mean, sd) per axis of each raw distribution, in closed form.
TOY2D_STATS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    # x: E = 1/2, E[x^2] = (1/2 + 3/2) / 2 = 1;  y: E = 1/4, E[y^2] = (1/2 + 3/4 - 2/pi) / 2.
    "moons": ((0.5, 0.25), (math.sqrt(0.75 + MOONS_NOISE ** 2), math.sqrt(0.5625 - 1 / math.pi + MOONS_NOISE ** 2))),
    "swissroll": _swiss_moments(),
    # mean of cos^2 over the 8 angles is 1/2.
    "8gaussians": ((0.0, 0.0), (math.sqrt(GAUSS_R ** 2 / 2 + GAUSS_S ** 2),) * 2),
    # each marginal is U[-2, 2].
    "checkerboard": ((0.0, 0.0), (math.sqrt(4 / 3),) * 2),
    # E[r^2] = sum_k (r_k / sum r) (r_k^2 + w^2/4) = 10 + w^2/4 for radii 1..4; each axis gets half.
    "rings": ((0.0, 0.0), (math.sqrt((sum(r ** 3 for r in RING_RADII) / sum(RING_RADII) + RING_W ** 2 / 4) / 2),) * 2),
}


def _moons(n: int, g: torch.Generator) -> torch.Tensor:
    t = torch.rand(n, generator=g, dtype=torch.float64) * math.pi               # (n,)
    lower = torch.rand(n, generator=g, dtype=torch.float64) < 0.5               # (n,)
    x = torch.where(lower, 1 - torch.cos(t), torch.cos(t))
    y = torch.where(lower, 0.5 - torch.sin(t), torch.sin(t))
    return torch.stack([x, y], 1) + MOONS_NOISE * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _swissroll(n: int, g: torch.Generator) -> torch.Tensor:
    t = SWISS_A + (SWISS_B - SWISS_A) * torch.rand(n, generator=g, dtype=torch.float64)   # (n,)
    xy = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)                              # (n, 2)
    return xy + SWISS_NOISE * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _gauss_centres() -> torch.Tensor:
    ang = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    return GAUSS_R * torch.stack([torch.cos(ang), torch.sin(ang)], 1)          # (8, 2)


def _8gaussians(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.randint(0, 8, (n,), generator=g)
    return _gauss_centres()[k] + GAUSS_S * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _8gaussians_logp(x: torch.Tensor) -> torch.Tensor:
    d2 = ((x[:, None, :] - _gauss_centres()[None]) ** 2).sum(-1)               # (N, 8)
    log_comp = -d2 / (2 * GAUSS_S ** 2) - math.log(2 * math.pi * GAUSS_S ** 2)
    return torch.logsumexp(log_comp, 1) - math.log(8)


_BLACK = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float64)


def _checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.randint(0, len(_BLACK), (n,), generator=g)
    return _BLACK[k] - 2 + torch.rand(n, 2, generator=g, dtype=torch.float64)


def _checkerboard_logp(x: torch.Tensor) -> torch.Tensor:
    cell = torch.floor(x) + 2                                                  # (N, 2) cell indices
    inside = ((cell >= 0) & (cell <= 3)).all(1) & ((cell.sum(1) % 2) == 0)
    return torch.where(inside, torch.tensor(-math.log(8.0), dtype=x.dtype), -math.inf)


def _ring_edges() -> torch.Tensor:
    r = torch.tensor(RING_RADII, dtype=torch.float64)
    return torch.stack([r - RING_W / 2, r + RING_W / 2], 1)                     # (4, 2) inner, outer radius


def _rings(n: int, g: torch.Generator) -> torch.Tensor:
    edges = _ring_edges()
    area = edges[:, 1] ** 2 - edges[:, 0] ** 2                                  # proportional to each ring's area
    k = torch.multinomial(area, n, replacement=True, generator=g)
    a, b = edges[k, 0], edges[k, 1]
    r = torch.sqrt(a ** 2 + (b ** 2 - a ** 2) * torch.rand(n, generator=g, dtype=torch.float64))  # density ~ r
    th = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    return torch.stack([r * torch.cos(th), r * torch.sin(th)], 1)


def _rings_logp(x: torch.Tensor) -> torch.Tensor:
    edges = _ring_edges()
    total_area = math.pi * float((edges[:, 1] ** 2 - edges[:, 0] ** 2).sum())
    r = x.norm(dim=1, keepdim=True)                                            # (N, 1)
    inside = ((r >= edges[:, 0]) & (r <= edges[:, 1])).any(1)
    return torch.where(inside, torch.tensor(-math.log(total_area), dtype=x.dtype), -math.inf)


_RAW_SAMPLERS = {"moons": _moons, "swissroll": _swissroll, "8gaussians": _8gaussians,
                 "checkerboard": _checkerboard, "rings": _rings}
_RAW_LOG_DENSITIES = {"8gaussians": _8gaussians_logp, "checkerboard": _checkerboard_logp, "rings": _rings_logp}
TOYS = tuple(_RAW_SAMPLERS)


@dataclass
class Toy2dData:
    """`data.*` options of the toy2d dataset."""

    name: str = "toy2d"
    toy: str = "moons"          # moons | swissroll | 8gaussians | checkerboard | rings
    n_train: int = 0            # training points (0 = 100,000); test always has 10,000
    seed: int = 0               # seed of the sampled points

    def check(self) -> None:
        options.one_of("data.toy", self.toy, TOYS)
        options.non_negative("data.n_train", self.n_train)
        options.seed("data.seed", self.seed)


def _check_name(name: str) -> None:
    if name not in _RAW_SAMPLERS:
        raise UserError(f"unknown toy2d distribution {name!r}; choose one of: {', '.join(_RAW_SAMPLERS)}")


def sample_toy2d(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`n` fresh standardised samples (float32, (n, 2)) of toy distribution `name`."""
    _check_name(name)
    if n < 0:
        raise UserError(f"number of toy2d samples must be >= 0, got {n}")
    g = generator if generator is not None else torch.default_generator
    (mx, my), (sx, sy) = TOY2D_STATS[name]
    raw = _RAW_SAMPLERS[name](n, g)                                            # (n, 2) float64
    mean, sd = torch.tensor([mx, my], dtype=torch.float64), torch.tensor([sx, sy], dtype=torch.float64)
    return ((raw - mean) / sd).float()


def toy2d_log_density(name: str, x: torch.Tensor) -> torch.Tensor:
    """Exact log-density (N,) of standardised toy `name` at points x (N, 2); -inf off the support."""
    _check_name(name)
    if name not in _RAW_LOG_DENSITIES:
        raise UserError(f"toy2d {name!r} has no closed-form density; ones that do: {', '.join(_RAW_LOG_DENSITIES)}")
    if x.dim() != 2 or x.shape[1] != 2:
        raise UserError(f"toy2d_log_density expects points of shape (N, 2), got {tuple(x.shape)}")
    (mx, my), (sx, sy) = TOY2D_STATS[name]
    raw = x.double() * torch.tensor([sx, sy], dtype=torch.float64) + torch.tensor([mx, my], dtype=torch.float64)
    return (_RAW_LOG_DENSITIES[name](raw) + math.log(sx) + math.log(sy)).to(x.dtype)


def load_toy2d(cfg: Toy2dData, split: str) -> Dataset:
    """Toy 2-D points `{"x": (N, 2) float32}`; train has `n_train` (default 100,000), test 10,000 from another seed."""
    check_split(split)
    cfg.check()
    n = (cfg.n_train or N_TRAIN) if split == "train" else N_TEST
    seed = split_seed(cfg.seed, split, "toy2d:" + cfg.toy)
    x = cached(("toy2d", cfg.toy, n, seed), lambda: sample_toy2d(cfg.toy, n, torch.Generator().manual_seed(seed)))
    info = {"name": "toy2d", "toy": cfg.toy, "split": split, "shape": (2,),
            "closed_form_density": cfg.toy in _RAW_LOG_DENSITIES}
    return Dataset({"x": x.clone()}, info)
