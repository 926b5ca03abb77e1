"""UniPC (Zhao et al. 2023) against diffusers' UniPCMultistepScheduler and against the exact Gaussian ODE."""
import numpy as np
import pytest
import torch

from unigen.errors import UserError
from unigen.families.continuous_diffusion import Gaussian, karras_sigmas
from unigen.families.continuous_diffusion.samplers import SAMPLERS

F64 = torch.float64
DATA = Gaussian(torch.tensor([0.3, -0.5], dtype=F64), torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64))
B = 16


@pytest.mark.parametrize("order, variant, lower_order_final, n, final", [
    (2, "bh2", True, 20, "zero"), (3, "bh2", True, 15, "zero"), (1, "bh2", True, 10, "zero"),
    (2, "bh2", False, 12, "sigma_min"), (2, "bh1", True, 12, "sigma_min"), (3, "bh1", False, 25, "sigma_min")])
def test_unipc_matches_diffusers(order, variant, lower_order_final, n, final):
    """UniPCMultistepScheduler(epsilon prediction, predict_x0) vs sample_unipc on its sigmas, ending at 0 or at
    sigma_min (where our grid ends above 0); diffusers steps in float32, so the match is to float32 rounding.
    (diffusers' bh1 with a final sigma of 0 returns NaN: B(h) = -h = -inf times a zero correction; ours returns D.)"""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.UniPCMultistepScheduler(beta_schedule="linear", solver_order=order, solver_type=variant,
                                              lower_order_final=lower_order_final, final_sigmas_type=final)
    sched.set_timesteps(n)
    sigmas = sched.sigmas.double()
    x_vp = torch.randn(B, 2, generator=torch.Generator().manual_seed(6))
    ours = SAMPLERS["unipc"](DATA.denoiser, x_vp.double() * (1 + sigmas[0] ** 2).sqrt(), sigmas, order=order,
                             variant=variant, lower_order_final=lower_order_final)
    for i, t in enumerate(sched.timesteps):
        x = x_vp.double() * (1 + sigmas[i] ** 2).sqrt()
        eps = (x - DATA.denoiser(x, sigmas[i].expand(B))) / sigmas[i]
        x_vp = sched.step(eps.float(), t, x_vp).prev_sample
    ours_vp = ours / (1 + sigmas[-1] ** 2).sqrt()                    # VP variables at the grid's last level
    torch.testing.assert_close(ours_vp.float(), x_vp, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_converges_with_its_order_plus_the_corrector(order):
    """UniPC-p with UniC reaches order p + 1 (Zhao et al. 2023, Thm. 3.1); measured on Karras grids ending at
    sigma_min: slope 2.9 for p = 2, 3.8 for p = 3."""
    steps, errors = [32, 64, 128, 256], []
    X0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    for n in steps:
        sigmas = karras_sigmas(n + 1)[:-1]
        x = X0 * sigmas[0]
        out = SAMPLERS["unipc"](DATA.denoiser, x, sigmas, order=order)
        errors.append((out - DATA.ode(x, sigmas[0], sigmas[-1])).abs().max().item())
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert slope > order + 0.6, (errors, slope)


def test_unipc_bad_options():
    with pytest.raises(UserError):
        SAMPLERS["unipc"](DATA.denoiser, torch.zeros(2, 2, dtype=F64), karras_sigmas(4), order=4)
    with pytest.raises(UserError):
        SAMPLERS["unipc"](DATA.denoiser, torch.zeros(2, 2, dtype=F64), karras_sigmas(4), variant="bh3")
