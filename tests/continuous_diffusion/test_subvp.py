"""Song et al. 2021's sub-VP SDE (Eq. 12): schedule, preconditioning and probability-flow likelihood against closed
forms. Marginal: x_native = alpha x0 + (1 - alpha^2) eps, alpha = e^{-B(t)/2}, B(t) = int_0^t beta."""
import math

import numpy as np
import pytest
import torch

from unigen.errors import UserError
from unigen.families.continuous_diffusion import Gaussian, make_denoiser, ode_nll
from unigen.families.continuous_diffusion.grids import default_sigmas, subvp_sigmas
from unigen.families.continuous_diffusion.likelihood import native_nll
from unigen.families.continuous_diffusion.losses import dsm_loss
from unigen.families.continuous_diffusion.samplers import SAMPLERS
from unigen.families.continuous_diffusion.schedules import ContinuousVP, SubVP, get_schedule

F64 = torch.float64
SUB = SubVP()
DATA = Gaussian(torch.tensor([0.5, -0.3], dtype=F64), torch.tensor([[1.0, 0.7], [0.7, 0.9]], dtype=F64))
T = torch.tensor([1e-3, 0.05, 0.3, 0.7, 1.0], dtype=F64)


def test_marginal_is_alpha_x0_plus_one_minus_alpha_squared_eps():
    """sigma_n = s sigma = 1 - s^2 (Song et al. App. C), with the VP schedule's alpha: s(t) = sqrt(alpha_bar_VP(t))."""
    s, sigma = SUB.s(T), SUB.sigma(T)
    torch.testing.assert_close(s * sigma, 1 - s ** 2, rtol=1e-12, atol=1e-14)
    vp = ContinuousVP()
    torch.testing.assert_close(s, vp.s(T), rtol=1e-12, atol=0)                  # same mean coefficient as VP
    assert (s * sigma < vp.s(T) * vp.sigma(T)).all()                         # smaller variance: "sub"-VP


def test_variance_obeys_the_sub_vp_sde():
    """For x0 = 0 the native variance V = sigma_n^2 satisfies dV/dt = -beta V + g^2, g^2 = beta (1 - e^{-2B})
    (the moment ODE of Eq. 12), checked by central differences."""
    t, h = T[1:-1], 1e-6
    V = lambda u: (SUB.s(u) * SUB.sigma(u)) ** 2                     # noqa: E731
    dV = (V(t + h) - V(t - h)) / (2 * h)
    torch.testing.assert_close(dV, -SUB.beta(t) * V(t) + SUB.diffusion_sq(t), rtol=1e-7, atol=1e-9)


def test_time_inverse_and_scale_round_trip():
    torch.testing.assert_close(SUB.t(SUB.sigma(T)), T, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(SUB.scale(SUB.sigma(T)), SUB.s(T), rtol=1e-12, atol=0)
    assert get_schedule("subvp") == SUB and SUB.c_noise(SUB.sigma(T)).allclose(999 * T)
    grid = default_sigmas(SUB, 10)
    torch.testing.assert_close(grid, subvp_sigmas(10))
    assert grid[0].item() == pytest.approx(SUB.sigma_max) and grid[-2].item() == pytest.approx(SUB.sigma_min)


@pytest.mark.parametrize("parameterization", ["score", "sigma-score", "eps", "x0"])
def test_preconditioning_recovers_the_exact_denoiser(parameterization):
    """The MSE-optimal network in native sub-VP variables (x_n, c_noise = 999 t), wrapped by make_denoiser, is the
    exact Gaussian denoiser in EDM variables."""
    def net(x_n, c_noise):
        t = c_noise / 999
        alpha, sigma_n = SUB.s(t)[:, None], (SUB.s(t) * SUB.sigma(t))[:, None]
        x = x_n / alpha
        x0 = DATA.denoiser(x, sigma_n[:, 0] / alpha[:, 0])
        eps = (x_n - alpha * x0) / sigma_n
        return {"score": -eps / sigma_n, "sigma-score": -eps, "eps": eps, "x0": x0}[parameterization]

    D = make_denoiser(net, parameterization, SUB)
    sigma = SUB.sigma(T)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * (1 + sigma[:, None])
    torch.testing.assert_close(D(x, sigma), DATA.denoiser(x, sigma), rtol=1e-9, atol=1e-9)


def test_dsm_loss_of_a_zero_network_is_one_per_dimension():
    x0 = torch.randn(20000, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    zero = dsm_loss(lambda x, c: torch.zeros_like(x), x0, SUB, generator=torch.Generator().manual_seed(2))
    assert zero.mean().item() == pytest.approx(1.0, rel=0.03)          # E ||eps||^2 / d = 1
    with pytest.raises(UserError):
        dsm_loss(lambda x, c: x, x0, SUB, parameterization="v")


def test_pf_likelihood_matches_the_exact_native_log_density():
    """ode_nll on the sub-VP grid gives -log p(x; sigma_min) in EDM variables; native_nll turns it into the native
    -log N(x_n; alpha mu, alpha^2 Sigma + sigma_n^2 I) at t = eps_t, computed here independently."""
    sigmas = subvp_sigmas(64)[:-1].flip(0)                             # increasing, eps_t -> 1
    sigma_min = sigmas[0]
    x = DATA.sample(32, torch.Generator().manual_seed(3)) + sigma_min * torch.randn(32, 2, dtype=F64,
                                                                                     generator=torch.Generator().manual_seed(4))
    out = ode_nll(DATA.denoiser, x, sigmas, trace="exact")
    alpha = SUB.scale(sigma_min)
    x_n = alpha * x
    cov = alpha ** 2 * DATA.cov + (alpha * sigma_min) ** 2 * torch.eye(2, dtype=F64)
    exact = -torch.distributions.MultivariateNormal(alpha * DATA.mu, cov).log_prob(x_n)
    # the prior N(0, sigma_max^2 I) stands in for p(.; sigma_max): that known gap is removed before comparing
    x_T = DATA.ode(x, sigma_min, sigmas[-1])
    gap = DATA.log_prob(x_T, sigmas[-1]) - (-0.5 * (x_T ** 2).sum(1) / sigmas[-1] ** 2
                                            - math.log(2 * math.pi * sigmas[-1] ** 2))
    torch.testing.assert_close(native_nll(out["nll"], alpha, 2) - gap, exact, rtol=0, atol=1e-4)


def test_samplers_converge_on_the_sub_vp_grid():
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    errs = []
    for n in (16, 32, 64):
        sigmas = subvp_sigmas(n + 1)[:-1]                              # ends at sigma(eps_t) > 0
        x = z * sigmas[0]
        errs.append((SAMPLERS["heun"](DATA.denoiser, x, sigmas) - DATA.ode(x, sigmas[0], sigmas[-1])).abs().max().item())
    assert abs(-np.polyfit(np.log([16, 32, 64]), np.log(errs), 1)[0] - 2) < 0.3, errs
