"""Noise sources for stochastic samplers: `noise(sigma, sigma_next) -> z ~ N(0, I)` shaped like x.

A stochastic sampler asks its noise source for the fresh noise of the step from sigma to sigma_next (k-diffusion's
`noise_sampler` contract). Two sources:
    gaussian   independent draws from a torch.Generator (what `generator=` gives every sampler)
    brownian   increments of one Brownian path W(sigma) (torchsde.BrownianTree, Li et al. 2020), normalised:
               z = (W(sigma_next) - W(sigma)) / sqrt|sigma_next - sigma|. The path is fixed by its seed, so the noise
               of a step is the same path's increment whatever the grid: an SDE sample with n steps and with 2n
               steps see the same Brownian motion and converge to the same sample as n grows.
Any callable with the same signature works too (tests pass one that both libraries read).

This is the one module of the family that imports a third-party package besides torch (torchsde, lazily, for the
Brownian tree); tests/continuous_diffusion/test_noise.py checks it stays the only one.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from unigen.errors import UserError

NoiseSource = Callable[[float, float], Tensor]


def gaussian_noise(x: Tensor, generator: torch.Generator | None = None) -> NoiseSource:
    """Fresh N(0, I) noise like x from `generator` at every call (the arguments are ignored)."""
    return lambda sigma, sigma_next: torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def brownian_noise(x: Tensor, sigma_min: float, sigma_max: float, seed: int | list[int]) -> NoiseSource:
    """Brownian-tree noise on [sigma_min, sigma_max] (k-diffusion's BrownianTreeNoiseSampler): one torchsde tree, or
    one tree per example when `seed` is a list of len(x) seeds (so an example's noise does not depend on the batch)."""
    import torchsde                                                  # third-party, lazy: only SDE sampling needs it

    if not 0 <= sigma_min < sigma_max:
        raise UserError(f"Brownian noise needs 0 <= sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    t0, t1 = torch.as_tensor(sigma_min, dtype=torch.float64), torch.as_tensor(sigma_max, dtype=torch.float64)
    batched = isinstance(seed, (list, tuple))
    if batched and len(seed) != x.shape[0]:
        raise UserError(f"per-example Brownian seeds: need {x.shape[0]}, got {len(seed)}")
    w0 = torch.zeros_like(x[0] if batched else x)
    trees = [torchsde.BrownianTree(t0, w0, t1, entropy=s) for s in (seed if batched else [seed])]

    def noise(sigma: float, sigma_next: float) -> Tensor:
        a, b = torch.as_tensor(sigma, dtype=torch.float64), torch.as_tensor(sigma_next, dtype=torch.float64)
        lo, hi, sign = (a, b, 1) if a < b else (b, a, -1)
        w = torch.stack([tree(lo, hi) for tree in trees]) * sign
        return (w if batched else w[0]) / (b - a).abs().sqrt()

    return noise


def seed_from(generator: torch.Generator | None) -> int:
    """A 63-bit seed drawn from `generator` (or torch's global RNG)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2 ** 63 - 1, (1,), generator=generator, device=device).item())


def resolve_noise(noise, x: Tensor, sigmas: list[float], generator: torch.Generator | None,
                  default: str = "gaussian") -> NoiseSource:
    """A sampler's noise source: a callable as is, "gaussian" from `generator`, "brownian" on the grid's range
    [smallest positive sigma, largest sigma] (from 0 when the grid has one positive level) seeded from `generator`;
    None means `default`."""
    noise = default if noise is None else noise
    if callable(noise):
        return noise
    if noise == "gaussian":
        return gaussian_noise(x, generator)
    if noise == "brownian":
        positive = [s for s in sigmas if s > 0]
        lo, hi = min(positive), max(positive)
        return brownian_noise(x, lo if lo < hi else 0.0, hi, seed_from(generator))
    raise UserError(f"unknown noise source {noise!r}; choose gaussian, brownian or pass a callable")
