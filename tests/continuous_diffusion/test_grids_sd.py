"""Grids as Stable Diffusion and SD3 sample with them, against diffusers: DDIM with set_alpha_to_one=False,
steps_offset=1 and scaled-linear betas (ends above sigma = 0), and FlowMatchEulerDiscreteScheduler's default grid,
which starts at t = 1 (sigma = inf, pure noise)."""
import math

import numpy as np
import pytest
import torch

from unigen.errors import UserError
from unigen.families.continuous_diffusion import Gaussian, ddpm_timesteps
from unigen.families.continuous_diffusion.grids import ddpm_sigmas, flow_sigmas, polyexponential_sigmas
from unigen.families.continuous_diffusion.precond import make_denoiser
from unigen.families.continuous_diffusion.samplers import SAMPLERS, sample_ddim
from unigen.families.continuous_diffusion.schedules import Flow, ddpm_scaled_linear, scaled_linear_betas

F64 = torch.float64
DATA = Gaussian(torch.tensor([0.3, -0.5], dtype=F64), torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64))
B = 16


def _sd_ddim():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                    set_alpha_to_one=False, steps_offset=1, clip_sample=False)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.final_alpha_cumprod = sched.alphas_cumprod[0]
    return sched


def test_scaled_linear_alpha_bar_matches_diffusers():
    sched = _sd_ddim()
    torch.testing.assert_close(ddpm_scaled_linear().alpha_bar, sched.alphas_cumprod, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(scaled_linear_betas()[[0, -1]], torch.tensor([0.00085, 0.012], dtype=F64))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_stable_diffusion_ddim_matches_diffusers(eta):
    """50 leading steps + steps_offset 1 (timesteps 981 ... 1), last step to alpha_bar_0 (set_alpha_to_one=False):
    our grid ends at sigma_0 > 0 and sample_ddim returns x there; in VP variables it is diffusers' output."""
    sched = _sd_ddim()
    sched.set_timesteps(50)
    ts = ddpm_timesteps(1000, 50, "leading", steps_offset=1)
    assert ts.tolist() == sched.timesteps.tolist() and ts[0] == 981 and ts[-1] == 1
    schedule = ddpm_scaled_linear()
    schedule = type(schedule)(sched.alphas_cumprod)                # diffusers' float32 levels, held in float64
    sigmas = ddpm_sigmas(schedule, 50, "leading", steps_offset=1, set_alpha_to_one=False)
    assert sigmas[-1] == schedule.sigmas[0] > 0.02
    x_vp = torch.randn(B, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = x_vp * (1 + sigmas[0] ** 2).sqrt()
    g = torch.Generator().manual_seed(1)
    for t in sched.timesteps:
        sigma = schedule.sigmas[int(t)]
        x_in = x_vp * (1 + sigma ** 2).sqrt()
        eps = (x_in - DATA.denoiser(x_in, sigma.expand(B))) / sigma
        x_vp = sched.step(eps, t, x_vp, eta=eta, generator=g).prev_sample
    ours = sample_ddim(DATA.denoiser, x, sigmas, eta=eta, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours / (1 + sigmas[-1] ** 2).sqrt(), x_vp, rtol=1e-9, atol=1e-9)


def test_set_alpha_to_one_false_needs_a_grid_without_level_0():
    with pytest.raises(UserError):
        ddpm_sigmas(ddpm_scaled_linear(), 10, "leading", steps_offset=0, set_alpha_to_one=False)
    with pytest.raises(UserError):
        ddpm_sigmas(ddpm_scaled_linear(), 10, "leading", steps_offset=100)                         # past 999


def _velocity_net():
    """A fixed random velocity field v(x_t, t) (a 'flow' network's output F), as a native-variables network."""
    g = torch.Generator().manual_seed(3)
    W, b = torch.randn(3, 16, generator=g, dtype=F64), torch.randn(16, 2, generator=g, dtype=F64) / 4
    return lambda x_t, t: torch.tanh(torch.cat([x_t, t.reshape(-1, 1)], 1) @ W) @ b + x_t


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("n", [1, 4, 28])
def test_flow_match_euler_default_grid_matches_diffusers(shift, n):
    """FlowMatchEulerDiscreteScheduler(shift).set_timesteps(n): t = linspace(1, 1/1000, n) shifted, then 0; the model
    is first called at t = 1 (timestep 1000) on pure noise. Our grid starts at sigma = inf and flow Euler takes the
    noise itself there (float32 inside diffusers' step, so the match is to float32 rounding). diffusers' lower end
    is its *shifted* training minimum, shift(1/1000), which then gets shifted again with the rest of the grid."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(n)
    t_min = shift / 1000 / (1 + (shift - 1) / 1000)
    sigmas = flow_sigmas(n, t_max=1.0, t_min=t_min, shift=shift)
    assert math.isinf(sigmas[0]) and sigmas[-1] == 0
    t_ours = torch.where(sigmas.isinf(), torch.ones_like(sigmas), sigmas / (1 + sigmas))
    torch.testing.assert_close(sched.sigmas.double(), t_ours, rtol=1e-6, atol=1e-7)
    v_net = _velocity_net()
    D = make_denoiser(lambda x_in, c_noise: v_net(x_in, c_noise), "flow", Flow())
    z = torch.randn(B, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    x = z.float()
    for i, ts in enumerate(sched.timesteps):
        v = v_net(x.double(), (ts / 1000).double().expand(B))
        x = sched.step(v.float(), ts, x).prev_sample
    ours = SAMPLERS["flow-euler"](D, z, sigmas)
    torch.testing.assert_close(ours.float(), x, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name, order", [("flow-euler", 1), ("flow-midpoint", 2)])
def test_flow_samplers_from_t1_converge_to_the_exact_endpoint(name, order):
    """From pure noise z at t = 1 the exact Gaussian ODE ends at mu + Sigma^(1/2) z."""
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    exact = DATA._spectral(z + DATA.mu, DATA.lam.sqrt())
    steps, errors = [16, 32, 64, 128], []
    for n in steps:
        out = SAMPLERS[name](DATA.denoiser, z, flow_sigmas(n, t_max=1.0))
        errors.append((out - exact).abs().max().item())
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert slope > order - 0.2, (errors, slope)


def test_only_flow_samplers_take_an_infinite_first_level():
    with pytest.raises(UserError):
        SAMPLERS["euler"](DATA.denoiser, torch.zeros(2, 2, dtype=F64), flow_sigmas(4, t_max=1.0))


def test_polyexponential_grid_endpoints_and_rho():
    g1, g2 = polyexponential_sigmas(10, 0.02, 80.0, 1.0), polyexponential_sigmas(10, 0.02, 80.0, 2.0)
    assert g1[0] == pytest.approx(80.0) and g1[-2] == pytest.approx(0.02) and g1[-1] == 0
    assert (g2[1:-2] < g1[1:-2]).all()                              # rho > 1: more steps at low noise
