"""UniPC (Zhao et al. 2023, arXiv:2302.04867): the unified predictor-corrector multistep solver, data prediction.

In EDM variables (alpha = 1, lambda = -ln sigma) with h = lambda' - lambda and the denoised values D_k of earlier
steps, UniP-p (Alg. 2/3 of the paper, diffusers' UniPCMultistepScheduler with predict_x0) is
    x' = (sigma'/sigma) x + (1 - e^{-h}) D_0 - B(h) sum_k rho_k (D_k - D_0) / r_k,   r_k = (lambda_k - lambda_0) / h,
and UniC-p corrects the same step once D(x'; sigma') is known (no extra evaluation) with one more difference term,
D(x') - D_0. The rho solve R rho = b with R_ik = r_k^(i-1), b_i = phi_{i+1}(-h) i! / B(h) (Eq. 8; B(h) = e^{-h} - 1
for "bh2", -h for "bh1"); order 2 uses rho = 1/2 for the predictor and order 1 for the corrector (their Sec. 3.2).

Notation
    lam, lams        lambda = -ln sigma of the current and earlier steps (inf at sigma = 0)
    Ds               the denoised values of earlier steps, newest last
    rks, D1s         r_k and the scaled differences (D_k - D_0) / r_k
    h_phi_1, B_h     e^{-h} - 1 and B(h)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from unigen.errors import UserError
from unigen.families.continuous_diffusion.sampling import Denoiser, check_grid, denoise, report


def _lam(sigma: float) -> float:
    return math.inf if sigma == 0 else -math.log(sigma)


def _coefficients(h: float, order: int, variant: str) -> tuple[float, float, list[float]]:
    """(e^{-h} - 1, B(h), b_1..b_order) of UniPC's linear system (diffusers' h_phi_k recursion)."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    B_h = hh if variant == "bh1" else math.expm1(hh)
    b, factorial = [], 1
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / B_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, B_h, b


def _solve(rks: list[float], b: list[float]) -> list[float]:
    """rho with sum_k rks[k]^(i-1) rho_k = b_i, i = 1..len(rks) (R rho = b, R_ik = r_k^(i-1))."""
    R = torch.tensor([[r ** i for r in rks] for i in range(len(rks))], dtype=torch.float64)
    return torch.linalg.solve(R, torch.tensor(b, dtype=torch.float64)).tolist()


def uni_step(x: Tensor, sigma_s0: float, sigma_t: float, Ds: list[Tensor], lams: list[float], order: int,
             variant: str, D_t: Tensor | None = None) -> Tensor:
    """UniP-order from (x, sigma_s0) to sigma_t with history Ds / lams (newest = D_0 at sigma_s0); with D_t = D(x';
    sigma_t) given, UniC-order: the corrected x' (Zhao et al. 2023, Alg. 2-3, "B(h)" variants)."""
    lam_s0, h = lams[-1], _lam(sigma_t) - lams[-1]
    m0 = Ds[-1]
    rks = [(lams[-(k + 1)] - lam_s0) / h for k in range(1, order)]
    D1s = [(Ds[-(k + 1)] - m0) / rk for k, rk in zip(range(1, order), rks)]
    h_phi_1, B_h, b = _coefficients(h, order, variant)
    x_t = sigma_t / sigma_s0 * x - h_phi_1 * m0
    if D_t is None:                                                   # predictor
        if not D1s:
            return x_t
        rhos = [0.5] if order == 2 else _solve(rks, b[:-1])
        return x_t - B_h * sum(r * d for r, d in zip(rhos, D1s))
    rhos = [0.5] if order == 1 else _solve(rks + [1.0], b)            # corrector: one more term, D_t - D_0
    corr = sum((r * d for r, d in zip(rhos[:-1], D1s)), torch.zeros_like(m0))
    return x_t - B_h * (corr + rhos[-1] * (D_t - m0))


def sample_unipc(D: Denoiser, x: Tensor, sigmas: Tensor, *, order: int = 2, variant: str = "bh2",
                 lower_order_final: bool = True, corrector: bool = True, generator=None, callback=None) -> Tensor:
    """Zhao et al. 2023 (UniPC-p, data prediction), as diffusers' UniPCMultistepScheduler steps it: at each new point
    UniC corrects the previous step with the fresh D (free), then UniP steps on; warm-up and (lower_order_final)
    the last steps use lower orders; the step to sigma = 0 is x = D."""
    if order not in (1, 2, 3) or variant not in ("bh1", "bh2"):
        raise UserError(f"UniPC needs order 1, 2 or 3 and variant bh1 or bh2, got {order!r}, {variant!r}")
    s = check_grid(sigmas)
    N = len(s) - 1
    Ds: list[Tensor] = []
    lams: list[float] = []
    last, this_order = None, 0
    for i in range(N):
        D_x = denoise(D, x, s[i])
        if corrector and last is not None:
            x = uni_step(last, s[i - 1], s[i], Ds, lams, this_order, variant, D_t=D_x)
        Ds, lams = (Ds + [D_x])[-order:], (lams + [_lam(s[i])])[-order:]
        this_order = min(order, N - i if lower_order_final else order, len(Ds))
        this_order = 1 if s[i + 1] == 0 else this_order                  # h = inf: only D_0 survives (x' = D)
        last = x
        x = uni_step(x, s[i], s[i + 1], Ds, lams, this_order, variant)
        report(callback, i, x, s[i], D_x)
    return x
