"""Exact likelihood through the probability-flow ODE (Song et al. 2021, App. D.2; Chen et al. 2018, Thm. 1).

In EDM variables the ODE is dx/dsigma = f(x, sigma) = (x - D(x; sigma)) / sigma, and the instantaneous change of
variables gives d log p(x(sigma); sigma) / dsigma = -div f. Integrating from sigma_min (the data, up to a little
noise) to sigma_max:
    log p(x; sigma_min) = log N(x(sigma_max); 0, sigma_max^2 I) + int_{sigma_min}^{sigma_max} div f dsigma,
where the prior N(0, sigma_max^2 I) stands in for p(.; sigma_max) = p_data * N(0, sigma_max^2 I) (exact as
sigma_max -> inf), and div f = (d - tr dD/dx) / sigma.

Notation
    d           number of dimensions per example
    f, div f    ODE drift and its divergence
    tr          trace of the denoiser's Jacobian dD/dx, exact (d backward passes) or Hutchinson's estimate
                E_v[v^T (dD/dx) v] with fixed probes v for the whole trajectory (Grathwohl et al. 2019, FFJORD)
    delta_logp  int div f dsigma
    nll         -log p(x; sigma_min) in nats per example
    bpd         bits per dimension, see `bits_per_dim`
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from unigen.families.continuous_diffusion.sampling import check_grid
from unigen.errors import UserError

Denoiser = Callable[..., Tensor]


def trace_exact(D_x: Tensor, x: Tensor) -> Tensor:
    """tr(dD/dx) per example by one backward pass per dimension (for low dimensions; D must not mix the batch)."""
    flat = D_x.flatten(1)                                             # (B, d)
    tr = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for j in range(flat.shape[1]):
        (g,) = torch.autograd.grad(flat[:, j].sum(), x, retain_graph=True)
        tr = tr + g.flatten(1)[:, j]
    return tr


def trace_hutchinson(D_x: Tensor, x: Tensor, probes: Tensor) -> Tensor:
    """Hutchinson 1989: tr(J) ~ mean_k v_k^T J v_k over probes v_k (n_probes, B, ...) with E[v v^T] = I."""
    est = []
    for v in probes:
        (vJ,) = torch.autograd.grad(D_x, x, grad_outputs=v, retain_graph=True)  # (B, ...) v^T dD/dx
        est.append((vJ * v).flatten(1).sum(1))                        # (B,)
    return torch.stack(est).mean(0)


def _drift_and_div(D: Denoiser, x: Tensor, sigma: float, probes: Tensor | None) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        D_x = D(x_in, x.new_full((x.shape[0],), sigma))
        tr = trace_exact(D_x, x_in) if probes is None else trace_hutchinson(D_x, x_in, probes)
    d = x[0].numel()
    return (x - D_x.detach()) / sigma, (d - tr.detach()) / sigma     # f (B, ...), div f (B,)


def _heun_step(f, x, sigma, h):
    k1, g1 = f(x, sigma)
    k2, g2 = f(x + h * k1, sigma + h)
    return x + 0.5 * h * (k1 + k2), 0.5 * h * (g1 + g2)


def _rk4_step(f, x, sigma, h):
    k1, g1 = f(x, sigma)
    k2, g2 = f(x + 0.5 * h * k1, sigma + 0.5 * h)
    k3, g3 = f(x + 0.5 * h * k2, sigma + 0.5 * h)
    k4, g4 = f(x + h * k3, sigma + h)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), h / 6 * (g1 + 2 * g2 + 2 * g3 + g4)


STEPPERS = {"heun": (_heun_step, 2), "rk4": (_rk4_step, 4)}          # name -> (step, evaluations per step)


def ode_nll(D: Denoiser, x: Tensor, sigmas: Tensor, *, trace: str = "hutchinson", n_probes: int = 1,
            probe: str = "rademacher", method: str = "rk4", generator: torch.Generator | None = None) -> dict:
    """Song et al. 2021, App. D.2: -log p(x; sigma_min) by integrating the probability-flow ODE with its divergence.

    `sigmas` is an increasing grid from sigma_min (where `x` lives) to sigma_max (e.g. karras_sigmas(n)[:-1].flip(0)).
    trace: "exact" or "hutchinson" (`n_probes` fixed probes, "rademacher" or "gaussian"); method: "rk4" (default:
    on the exact Gaussian ODE with a 63-step Karras grid it is 3.4e-5 bits/dim off, Heun 0.031) or "heun".
    Returns {"nll": (B,) nats, "prior_logp": (B,), "delta_logp": (B,), "z": x at sigma_max, "nfe": int,
    "method": str, "trace": str}; `nll_report` turns it into bits/dim with the solver and NFE beside it.
    """
    s = check_grid(sigmas, increasing=True)
    if method not in STEPPERS:
        raise UserError(f"unknown ODE method {method!r}; choose one of: {', '.join(STEPPERS)}")
    if trace not in ("exact", "hutchinson"):
        raise UserError(f"unknown trace estimator {trace!r}; choose exact or hutchinson")
    probes = None
    if trace == "hutchinson":
        if probe not in ("rademacher", "gaussian") or n_probes < 1:
            raise UserError(f"Hutchinson needs n_probes >= 1 and probe rademacher or gaussian, "
                            f"got {n_probes}, {probe!r}")
        probes = torch.randn((n_probes, *x.shape), generator=generator, dtype=x.dtype, device=x.device)
        if probe == "rademacher":
            probes = probes.sign()                                    # +-1 with probability 1/2 each
    step, evals = STEPPERS[method]
    f = lambda x_, sigma: _drift_and_div(D, x_, sigma, probes)        # noqa: E731
    delta_logp = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(len(s) - 1):
        x, d_delta = step(f, x, s[i], s[i + 1] - s[i])
        delta_logp = delta_logp + d_delta
    d, sigma_max = x[0].numel(), s[-1]
    prior_logp = -0.5 * (x.flatten(1) ** 2).sum(1) / sigma_max ** 2 - 0.5 * d * math.log(2 * math.pi * sigma_max ** 2)
    return {"nll": -(prior_logp + delta_logp), "prior_logp": prior_logp, "delta_logp": delta_logp, "z": x,
            "nfe": evals * (len(s) - 1), "method": method, "trace": trace}


def nll_report(result: dict, dims: int, data_range: float = 2.0, bins: int = 256) -> dict:
    """Mean bits/dim of an `ode_nll` result with what produced it: {"bits_per_dim", "solver", "nfe", "trace"}.
    A likelihood from an ODE solve is only as good as the solve, so the number never travels without them."""
    bpd = bits_per_dim(result["nll"], dims, data_range, bins).mean().item()
    return {"bits_per_dim": bpd, "solver": result["method"], "nfe": result["nfe"], "trace": result["trace"]}


def native_nll(nll: Tensor, scale: Tensor, dims: int) -> Tensor:
    """-log p of x_native = s x from -log p of the scale-free x (change of variables): nll + d ln s. `scale` is the
    schedule's s at sigma_min (VP, sub-VP: alpha; flow: 1 - t), a scalar or (B,)."""
    return nll + dims * torch.log(torch.as_tensor(scale, dtype=nll.dtype, device=nll.device))


def bits_per_dim(nll: Tensor, dims: int, data_range: float = 2.0, bins: int = 256) -> Tensor:
    """Song et al. 2021, App. D.2 / Ho et al. 2020, Sec. 4: bits/dim of 8-bit data from a continuous NLL in nats.

    Data in [-1, 1] (data_range = 2) made of `bins` = 256 levels: each level is a cell of width 2/256, so the
    discrete model's bits are nll / (d ln 2) + log2(bins / data_range) = ... + 7. This is an upper bound on the
    discrete NLL when `x` was uniformly dequantized (see `dequantize`).
    """
    return nll / (dims * math.log(2)) + math.log2(bins / data_range)


def dequantize(x: Tensor, bins: int = 256, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization (Theis et al. 2016): x = 2k/(bins-1) - 1 -> (k + u) 2/bins - 1, u ~ U[0, 1)."""
    k = torch.round((x + 1) * (bins - 1) / 2)                         # integer levels 0..bins-1
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (k + u) * (2 / bins) - 1
