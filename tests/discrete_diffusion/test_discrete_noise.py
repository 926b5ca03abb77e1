"""Noise schedules against analytic identities and autograd; time sampling invariants."""
import math

import pytest
import torch

from unigen.families.discrete_diffusion import noise as N
from unigen.errors import UserError


def test_loglinear_weight_is_one_over_t():
    # dsigma/dt / (e^sigma - 1) = 1/t exactly under the log-linear schedule (MDLM's "1/t" weight).
    t = torch.linspace(1e-4, 1.0, 1001, dtype=torch.float64)
    sigma, dsigma = N.loglinear(t, eps=1e-3)
    torch.testing.assert_close(dsigma / torch.expm1(sigma), 1 / t, rtol=1e-10, atol=0)
    torch.testing.assert_close(N.nelbo_weight(sigma, dsigma), 1 / t, rtol=1e-10, atol=0)
    # and 1 - alpha_t = (1 - eps) t
    torch.testing.assert_close(N.move_chance(sigma), (1 - 1e-3) * t, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("schedule", [N.loglinear, N.geometric])
def test_dsigma_is_the_derivative_of_sigma(schedule):
    t = torch.linspace(0.01, 0.99, 37, dtype=torch.float64, requires_grad=True)
    sigma, dsigma = schedule(t)
    (grad,) = torch.autograd.grad(sigma.sum(), t)
    torch.testing.assert_close(dsigma.detach(), grad, rtol=1e-10, atol=0)


def test_geometric_endpoints():
    sigma, _ = N.geometric(torch.tensor([0.0, 1.0], dtype=torch.float64), sigma_min=1e-4, sigma_max=20.0)
    torch.testing.assert_close(sigma, torch.tensor([1e-4, 20.0], dtype=torch.float64))


def test_esigm1_both_branches_match_high_precision():
    vals = [1e-7, 1e-4, 0.1, 0.49, 0.5, 0.7, 3.0, 12.0]
    got = N.esigm1(torch.tensor(vals, dtype=torch.float32)).double()
    want = torch.tensor([math.expm1(v) for v in vals], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=0)  # float32 relative precision on both sides


def test_antithetic_times_cover_every_stratum_once():
    n, eps = 64, 1e-3
    t = N.sample_t(n, eps=eps, antithetic=True, generator=torch.Generator().manual_seed(0))
    assert t.min() >= eps and t.max() <= 1
    u = (t - eps) / (1 - eps)
    strata = torch.floor(u * n).long().clamp(max=n - 1)
    assert torch.equal(strata.sort().values, torch.arange(n))


def test_clipped_times_stay_in_range():
    t = N.sample_clipped_t((5, 7), 0.3, 0.8, generator=torch.Generator().manual_seed(1))
    assert t.shape == (5, 7) and t.min() >= 0.3 and t.max() <= 0.8
    strata = torch.floor((t.flatten() - 0.3) / 0.5 * 35).long().clamp(max=34)
    assert torch.equal(strata.sort().values, torch.arange(35))


def test_bad_schedule_arguments():
    with pytest.raises(UserError):
        N.geometric(torch.tensor(0.5), sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(UserError):
        N.sample_clipped_t((2,), 0.0, 0.5)
    with pytest.raises(UserError):
        N.sample_t(0)
