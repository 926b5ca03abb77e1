"""Parity of unigen's samplers and grids with diffusers' schedulers on the same analytic denoiser, grid and noise.

Conventions bridged (diffusers -> unigen):
- scale of x: DDPM, DDIM and DPM-Solver++ step x_vp = x / sqrt(1 + sigma^2); Euler and Heun keep EDM's scale-free
  x and scale the model input by 1/sqrt(1 + sigma^2) (`scale_model_input`); flow matching steps x_t = x / (1 + sigma)
  with its "sigma" being our flow time t = sigma / (1 + sigma).
- timestep vs sigma: diffusers' models take the integer level t; our D takes sigma_t = sqrt((1 - a_t) / a_t) with
  a_t = alphas_cumprod[t]. The test's eps model converts back (eps = (x - D(x; sigma)) / sigma).
- final step: diffusers' last DDPM/DDIM step goes to alpha_bar = 1 (`set_alpha_to_one`) and its Euler, Heun and
  DPM-Solver++ grids end with sigma = 0 (`final_sigmas_type="zero"`); our grids end with 0 too. Heun's last step
  is Euler in both, DPM-Solver++'s last step is first order in both (`lower_order_final` / the h = inf limit).
- noise injection order: both draw one randn of x's shape per stochastic step from the same generator, after the
  model call; diffusers' DDIM also draws on its final step, where the noise has weight 0, so the streams agree.
- precision: for DDPM, DDIM and Heun we hand diffusers float64 `alphas_cumprod` / `sigmas` (it stores float32) so
  both sides compute in float64 from the same level values; Euler, DPM-Solver++ and flow matching upcast to float32
  inside `step`, so those comparisons hold to float32 rounding accumulated over the steps.
"""
import pytest
import torch

from unigen.families.continuous_diffusion import Gaussian, ddpm_linear, ddpm_sigmas, ddpm_timesteps, flow_sigmas
from unigen.families.continuous_diffusion.samplers import (sample_ddim, sample_ddpm, sample_dpmpp_2m, sample_euler, sample_flow_euler,
                                       sample_heun)

diffusers = pytest.importorskip("diffusers")

DATA = Gaussian(torch.tensor([0.3, -0.5], dtype=torch.float64),
                torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64))
D = DATA.denoiser
B = 16


def _sigma_of_t(sched, t):
    a = sched.alphas_cumprod.double()[int(t)]
    return ((1 - a) / a).sqrt()


def _eps_from_vp(x_vp, sigma):
    """The eps-prediction a VP network would output at (x_vp, sigma): eps = (x - D(x; sigma)) / sigma, x = x_vp s^-1."""
    x = x_vp * (1 + sigma ** 2).sqrt()
    return (x - D(x, sigma.expand(x.shape[0]))) / sigma


def _x_vp(seed, dtype=torch.float64):
    return torch.randn(B, 2, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _grid_from_timesteps(sched, timesteps):
    return torch.cat([torch.stack([_sigma_of_t(sched, t) for t in timesteps]), torch.zeros(1, dtype=torch.float64)])


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_ddpm_matches_diffusers(variance):
    """DDPMScheduler (clip_sample off, 50 leading steps) vs sample_ddpm on the same levels, in float64."""
    sched = diffusers.DDPMScheduler(beta_schedule="linear", clip_sample=False, variance_type=variance)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.set_timesteps(50)
    sigmas = _grid_from_timesteps(sched, sched.timesteps)
    x_vp, g = _x_vp(0), torch.Generator().manual_seed(1)
    x0 = x_vp * (1 + sigmas[0] ** 2).sqrt()
    for t in sched.timesteps:
        x_vp = sched.step(_eps_from_vp(x_vp, _sigma_of_t(sched, t)), t, x_vp, generator=g).prev_sample
    ours = sample_ddpm(D, x0, sigmas, variance=variance.split("_")[1], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, x_vp, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_matches_diffusers(eta):
    """DDIMScheduler (set_alpha_to_one, clip_sample off, 25 leading steps) vs sample_ddim, in float64."""
    sched = diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False, set_alpha_to_one=True)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.set_timesteps(25)
    sigmas = _grid_from_timesteps(sched, sched.timesteps)
    x_vp, g = _x_vp(2), torch.Generator().manual_seed(3)
    x0 = x_vp * (1 + sigmas[0] ** 2).sqrt()
    for t in sched.timesteps:
        x_vp = sched.step(_eps_from_vp(x_vp, _sigma_of_t(sched, t)), t, x_vp, eta=eta, generator=g).prev_sample
    ours = sample_ddim(D, x0, sigmas, eta=eta, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, x_vp, rtol=1e-9, atol=1e-9)


def test_euler_matches_diffusers():
    """EulerDiscreteScheduler (linspace spacing, fractional timesteps) vs sample_euler on its sigmas."""
    sched = diffusers.EulerDiscreteScheduler(beta_schedule="linear")
    sched.set_timesteps(30)
    sigmas = sched.sigmas.double()
    x = _x_vp(4, torch.float32) * sched.init_noise_sigma
    ours = sample_euler(D, x.double(), sigmas)
    for i, t in enumerate(sched.timesteps):
        x_in = sched.scale_model_input(x, t)                          # x / sqrt(sigma^2 + 1)
        x = sched.step(_eps_from_vp(x_in.double(), sigmas[i]).float(), t, x).prev_sample
    torch.testing.assert_close(ours.float(), x, rtol=1e-5, atol=1e-5)


def test_heun_matches_diffusers():
    """HeunDiscreteScheduler (2 model calls per step, Euler last step) vs sample_heun (EDM Alg. 1), float64."""
    sched = diffusers.HeunDiscreteScheduler(beta_schedule="linear", timestep_spacing="trailing")
    sched.set_timesteps(20)
    sched.sigmas = sched.sigmas.double()
    sigmas = torch.cat([sched.sigmas[0::2], sched.sigmas[-1:]])      # undo the repeat_interleave(2)
    assert sigmas[-1] == 0 and len(sigmas) == 21
    x = _x_vp(5) * sched.init_noise_sigma
    ours = sample_heun(D, x, sigmas)
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)                          # x / sqrt(sigma^2 + 1)
        sigma = sched.sigmas[sched.step_index]                        # the level this call evaluates
        x = sched.step(_eps_from_vp(x_in, sigma), t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-9, atol=1e-9)


def test_dpmpp_2m_matches_diffusers():
    """DPMSolverMultistepScheduler(dpmsolver++, order 2, midpoint, final sigma 0) vs sample_dpmpp_2m."""
    sched = diffusers.DPMSolverMultistepScheduler(beta_schedule="linear", algorithm_type="dpmsolver++",
                                                  solver_order=2, final_sigmas_type="zero")
    sched.set_timesteps(20)                                           # >= 15: second order up to the last step
    sigmas = sched.sigmas.double()
    x_vp = _x_vp(6, torch.float32)
    ours = sample_dpmpp_2m(D, x_vp.double() * (1 + sigmas[0] ** 2).sqrt(), sigmas)
    for i, t in enumerate(sched.timesteps):
        x_vp = sched.step(_eps_from_vp(x_vp.double(), sigmas[i]).float(), t, x_vp).prev_sample
    torch.testing.assert_close(ours.float(), x_vp, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_euler_matches_diffusers(shift):
    """FlowMatchEulerDiscreteScheduler on our t grid (t_max < 1; diffusers applies the same shift) vs flow Euler."""
    n, t_max = 12, 0.995
    ours_sigmas = flow_sigmas(n, t_max=t_max, shift=shift)
    t_plain = t_max * (1 - torch.arange(n, dtype=torch.float64) / n)  # unshifted t_0..t_{n-1}
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(sigmas=t_plain.tolist())
    t_ours = ours_sigmas / (1 + ours_sigmas)
    torch.testing.assert_close(sched.sigmas.double(), t_ours, rtol=1e-6, atol=1e-7)
    x_t = _x_vp(7, torch.float32) * sched.sigmas[0]                   # x_t = t_max eps at the start
    ours = sample_flow_euler(D, x_t.double() / (1 - t_ours[0]), ours_sigmas)
    for i, ts in enumerate(sched.timesteps):
        t = sched.sigmas[i].double()
        x0_hat = D(x_t.double() / (1 - t), (t / (1 - t)).expand(B))
        v = (x_t.double() - x0_hat) / t                               # flow velocity eps - x0
        x_t = sched.step(v.float(), ts, x_t).prev_sample
    torch.testing.assert_close(ours.float(), x_t, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 3, 7, 50, 1000])
def test_ddpm_grid_matches_diffusers_timesteps(spacing, n):
    """ddpm_timesteps picks the same levels as DDPMScheduler's timestep_spacing; ddpm_sigmas takes those levels."""
    sched = diffusers.DDPMScheduler(beta_schedule="linear", timestep_spacing=spacing)
    sched.set_timesteps(n)
    ts = ddpm_timesteps(1000, n, spacing)
    assert ts.tolist() == sched.timesteps.tolist()
    schedule = ddpm_linear()
    ours = ddpm_sigmas(schedule, n, spacing)
    assert ours[-1] == 0 and torch.equal(ours[:-1], schedule.sigmas[ts])


@pytest.mark.parametrize("name", ["linear", "squaredcos_cap_v2"])
def test_schedule_alpha_bar_matches_diffusers(name):
    """Ho et al.'s linear and Nichol & Dhariwal's cosine alpha_bar against diffusers' float32 cumprod."""
    from unigen.families.continuous_diffusion import ddpm_cosine
    ours = (ddpm_linear() if name == "linear" else ddpm_cosine()).alpha_bar
    ref = diffusers.DDPMScheduler(beta_schedule=name).alphas_cumprod.double()
    torch.testing.assert_close(ours, ref, rtol=2e-5, atol=1e-7)
