"""Rectified flow: straightness against quadrature, the reflow and distillation losses, reflow pairs on an exact flow."""

import numpy as np
import pytest
import torch
from torch import nn

from unigen.families.continuous_diffusion import Gaussian
from unigen.families.continuous_diffusion.network import DiffusionModelConfig, DiffusionNet, generate
from unigen.experiments.rectified_flow import reflow_pairs
from unigen.families.continuous_diffusion.rectified import coupled_flow_loss, distill_loss, euler_path, straightness
from unigen.errors import UserError


class PointMassVelocity(nn.Module):
    """Exact velocity when all data sits at c: x_t = (1 - t) c + t z, so v = z - c = (x_t - c) / t (straight paths)."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x, t):
        return (x - self.c) / t[:, None]


class GaussianVelocity(nn.Module):
    """Exact marginal velocity for data N(0, s^2 I) and independent noise: E[z - x0 | x_t] = x_t g'(t) / g(t) with
    g(t)^2 = (1 - t)^2 s^2 + t^2, so each path is x_t = z g(t): curved unless s = 1."""

    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x, t):
        t = t[:, None]
        return x * (t - (1 - t) * self.s ** 2) / ((1 - t) ** 2 * self.s ** 2 + t ** 2)


def test_straight_paths_have_zero_straightness():
    z = torch.randn(100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x0, vs = euler_path(PointMassVelocity(c), z, 10)
    assert torch.allclose(x0, c.expand_as(x0), atol=1e-12)
    assert straightness(PointMassVelocity(c), z, 10) < 1e-20


def test_straightness_of_gaussian_flow_matches_quadrature_at_first_order():
    # S = E|z|^2 int_0^1 (g(1) - g(0) - g'(t))^2 dt along x_t = z g(t) (Liu et al. 2022, Eq. 5), computed by the
    # trapezoid rule on a fine grid; the Euler estimate converges to it at first order (error halves per doubling).
    s = 0.3
    u = np.linspace(0, 1, 200_001)
    g = np.sqrt((1 - u) ** 2 * s ** 2 + u ** 2)
    gp = (u - (1 - u) * s ** 2) / g
    z = torch.randn(4000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = (z ** 2).sum(1).mean().item() * np.trapezoid((g[-1] - g[0] - gp) ** 2, u)
    errs = [abs(straightness(GaussianVelocity(s), z, n) - exact) for n in (100, 200, 400)]
    assert 1.8 < errs[0] / errs[1] < 2.2 and 1.8 < errs[1] / errs[2] < 2.2, errs


class Recorder(nn.Module):
    """A linear velocity v = A x_t + t b that records its inputs."""

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor([0.7, -0.2], dtype=torch.float64))
        self.seen = []

    def forward(self, x, t):
        self.seen.append((x, t))
        return x @ self.A.T + t[:, None] * self.b


def test_reflow_and_distillation_losses_regress_the_coupling_direction():
    g = torch.Generator().manual_seed(0)
    x0, z = torch.randn(64, 2, generator=g, dtype=torch.float64), torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64)
    m = Recorder()
    loss = coupled_flow_loss(m, x0, z, t)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * z                     # Liu et al. 2022, Eq. 1 (t relabelled)
    v = x_t @ m.A.T + t[:, None] * m.b
    assert torch.allclose(loss, ((v - (z - x0)) ** 2).mean(1))
    assert torch.allclose(m.seen[-1][0], x_t)
    distill_loss(m, x0, z)
    x_in, t_in = m.seen[-1]
    assert torch.equal(x_in, z) and torch.equal(t_in, torch.ones(64, dtype=torch.float64))
    with pytest.raises(UserError):
        coupled_flow_loss(m, x0, z[:, :1])


DATA = Gaussian(torch.tensor([0.5, -1.0], dtype=torch.float64),
                torch.tensor([[0.6, 0.2], [0.2, 0.3]], dtype=torch.float64))


class FlowOracle(nn.Module):
    """Perfect flow network for DATA with the family's time input c_noise = 1000 t: v = (x_t - E[x0 | x_t]) / t."""

    def forward(self, x_t, c_noise, y=None):
        t = (c_noise / 1000).double()[:, None]
        x0_hat = DATA.denoiser(x_t.double() / (1 - t), (t / (1 - t))[:, 0])
        return ((x_t.double() - x0_hat) / t).to(x_t.dtype)


def test_reflow_pairs_are_noise_and_its_ode_endpoint():
    net = DiffusionNet(FlowOracle(), DiffusionModelConfig(method="fm"), (2,))
    net.register_parameter("p", nn.Parameter(torch.zeros((), dtype=torch.float64)))
    net.double()
    z, x0 = reflow_pairs(net, 300, torch.Generator().manual_seed(0), sampler="flow-midpoint", steps=50)
    again, _ = generate(net, 300, sampler="flow-midpoint", steps=50, generator=torch.Generator(), noise=z)
    assert torch.equal(x0, again)                                     # x0 is the ODE solution from this z
    # The sampler starts at t_max = 0.999, x_t = 0.999 z, i.e. EDM's x = 999 z: the exact endpoint is the Gaussian
    # ODE map from sigma = 999. Midpoint with 50 steps is accurate to ~4e-6 here (measured; second order, see test_family).
    exact = DATA.ode(999.0 * z.double(), 999.0, 0.0)
    assert (x0 - exact).abs().max().item() < 1e-4
    with pytest.raises(UserError, match="flow"):
        reflow_pairs(DiffusionNet(FlowOracle(), DiffusionModelConfig(method="edm"), (2,)), 4, torch.Generator())


@pytest.mark.slow
def test_reflow_straightens_the_flow_on_toy_data(tmp_path):
    from unigen.experiments.rectified_flow import toy_experiment
    res = toy_experiment(tmp_path, toy="moons", train_steps=400, distill_steps=200, n_pairs=4000, n_eval=2000)
    one, two = res["models"]["1-rectified"], res["models"]["2-rectified"]
    assert two["straightness"] < one["straightness"]
    assert two["swd@1"] < one["swd@1"]
    assert (tmp_path / "rectified.md").exists()
