"""Each loss fed an oracle network that knows x0 and inverts the forward process from its own inputs with the
papers' formulas: the loss must be exactly zero, and the recovered noise standard normal.

The Monte Carlo tests of test_diffusion_losses.py compare means within standard errors taken from the sample itself,
so a corrupted noising formula (x_t = sqrt(a) / x0 + ...) inflated both and passed (mutation testing, issue 20).
Here every check is exact: a wrong x_t, a wrong target, a wrong scale or a level that does not reach the network
makes the loss non-zero. The remaining tests pin the contracts around the formulas: the generator is the only
source of randomness, float64 stays float64, the levels cover their ranges, labels reach the network.
"""
import math

import pytest
import torch

from unigen.errors import UserError
from unigen.families.continuous_diffusion import (VE, ContinuousVP, SubVP, ddpm_linear, ddpm_loss, drop_labels,
                                                  dsm_loss, edm_loss, edm_weight, flow_matching_loss)

F64 = torch.float64
B = 4000


def _x0(shape=(B, 3), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64) * 0.7 + 0.2


def _gen(seed=1):
    return torch.Generator().manual_seed(seed)


def _standard_normal(eps):
    """Mean 0 and variance 1 within 6 standard errors (the recovered noise of an oracle)."""
    n = eps.numel()
    assert abs(eps.mean().item()) < 6 / math.sqrt(n), eps.mean().item()
    assert abs(eps.var().item() - 1) < 6 * math.sqrt(2 / n), eps.var().item()


# ---- exact oracles -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_ddpm_loss_is_zero_for_the_oracle_of_each_target(target):
    """Ho et al. 2020, Eq. 4: x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps; v = sqrt(a_t) eps - sqrt(1 - a_t) x0."""
    sched, x0, seen = ddpm_linear(), _x0(), {}

    def net(x_t, t):
        assert x_t.dtype == F64 and t.dtype == F64
        a = sched.alpha_bar[t.long()][:, None]
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        seen["eps"], seen["t"] = eps, t
        return {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[target]

    loss = ddpm_loss(net, x0, sched, target=target, generator=_gen())
    assert loss.abs().max().item() < 1e-20
    _standard_normal(seen["eps"])
    assert torch.equal(seen["t"], seen["t"].round()) and seen["t"].min() >= 0 and seen["t"].max() <= sched.T - 1


def test_ddpm_levels_cover_every_index_from_zero():
    """t ~ U{0, ..., T - 1}: with T = 4 every index appears, 0 included, and none beyond."""
    sched = ddpm_linear(T=4)
    seen = []
    ddpm_loss(lambda x, t: seen.append(t) or x, _x0((400, 1)), sched, generator=_gen())
    assert sorted(set(seen[0].long().tolist())) == [0, 1, 2, 3]


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_min_snr_weight_is_applied_per_example(target):
    """Hang et al. 2023: weight min(SNR, gamma) / SNR (eps), min(SNR, gamma) (x0), min(SNR, gamma) / (SNR + 1) (v),
    SNR_t = a_t / (1 - a_t), multiplying each example's squared error; checked against the recorded levels."""
    sched, x0, gamma, seen = ddpm_linear(), _x0((64, 2)), 3.0, []
    net = lambda x, t: seen.append(t) or torch.zeros_like(x)          # noqa: E731
    plain = ddpm_loss(net, x0, sched, target=target, generator=_gen(3))
    weighted = ddpm_loss(net, x0, sched, target=target, min_snr_gamma=gamma, generator=_gen(3))
    a = sched.alpha_bar[seen[1].long()]
    snr = a / (1 - a)
    w = {"eps": snr.clamp(max=gamma) / snr, "x0": snr.clamp(max=gamma), "v": snr.clamp(max=gamma) / (snr + 1)}[target]
    torch.testing.assert_close(weighted, w * plain, rtol=1e-12, atol=0)


def test_flow_matching_loss_is_zero_for_the_oracle():
    """Lipman et al. 2023 / Liu et al. 2023: x_t = (1 - t) x0 + t eps, target eps - x0."""
    x0, seen = _x0(), {}

    def net(x_t, t):
        assert x_t.dtype == F64 and t.dtype == F64
        eps = (x_t - (1 - t[:, None]) * x0) / t[:, None]
        seen["eps"], seen["t"] = eps, t
        return eps - x0

    assert flow_matching_loss(net, x0, generator=_gen()).abs().max().item() < 1e-18
    _standard_normal(seen["eps"])
    assert 0 < seen["t"].min() < 0.01 and 0.99 < seen["t"].max() < 1


def _dsm_sigma(schedule, c_noise):
    """The noise level from the network's c_noise: 999 t for VP / sub-VP, ln(sigma / 2) for VE."""
    return 2 * c_noise.exp() if isinstance(schedule, VE) else schedule.sigma(c_noise / 999)


@pytest.mark.parametrize("schedule", [ContinuousVP(), SubVP(), VE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("parameterization", ["score", "sigma-score"])
def test_dsm_loss_is_zero_for_the_oracle(schedule, parameterization):
    """Song et al. 2021: x_n = s (x0 + sigma eps), score -eps / (s sigma); "sigma-score" outputs s sigma score = -eps."""
    x0, seen = _x0(), {}

    def net(x_n, c_noise):
        sigma = _dsm_sigma(schedule, c_noise)[:, None]
        s = schedule.scale(sigma)
        eps = (x_n / s - x0) / sigma
        seen["eps"], seen["t"] = eps, schedule.t(sigma[:, 0])
        return -eps if parameterization == "sigma-score" else -eps / (s * sigma)

    loss = dsm_loss(net, x0, schedule, eps_t=0.5, generator=_gen(), parameterization=parameterization)
    assert loss.abs().max().item() < 1e-16
    _standard_normal(seen["eps"])
    t = seen["t"]
    assert 0.5 - 1e-9 <= t.min() < 0.51 and 0.99 < t.max() <= 1 + 1e-9         # t ~ U(eps_t, 1)


def test_edm_loss_equals_its_formula_on_the_recorded_noise():
    """Karras et al. 2022, Eq. 8: D sees x0 + sigma eps and sigma with ln sigma ~ N(P_mean, P_std^2); the loss of
    D(x, sigma) = x is lambda(sigma) mean((sigma eps)^2)."""
    x0, seen = _x0(), {}

    def D(x, sigma):
        assert x.dtype == F64 and sigma.dtype == F64
        seen["n"], seen["sigma"] = x - x0, sigma
        return x

    loss = edm_loss(D, x0, P_mean=-0.4, P_std=0.8, sigma_data=0.3, generator=_gen())
    sigma = seen["sigma"]
    torch.testing.assert_close(loss, edm_weight(sigma, 0.3) * seen["n"].pow(2).mean(1), rtol=1e-12, atol=0)
    _standard_normal(seen["n"] / sigma[:, None])
    ln = sigma.log()
    assert abs(ln.mean().item() + 0.4) < 6 * 0.8 / math.sqrt(B) and abs(ln.std().item() - 0.8) < 0.05


# ---- randomness, dtype, labels ----------------------------------------------------------------------------------

def _zero_net(x, c, **kw):
    return torch.zeros_like(x)


def _half_net(x, c, **kw):
    """An output that depends on the noisy input, so the loss depends on every random draw (a zero network's
    flow-matching or DSM loss does not depend on t)."""
    return 0.5 * x


LOSSES = {
    "edm": lambda g, **kw: edm_loss(_half_net, _x0((16, 2)), generator=g, **kw),
    "ddpm": lambda g, **kw: ddpm_loss(_half_net, _x0((16, 2)), ddpm_linear(), generator=g, **kw),
    "flow": lambda g, **kw: flow_matching_loss(_half_net, _x0((16, 2)), generator=g, **kw),
    "flow-logit-normal": lambda g, **kw: flow_matching_loss(_half_net, _x0((16, 2)), t_dist="logit-normal",
                                                            generator=g, **kw),
    "dsm": lambda g, **kw: dsm_loss(_half_net, _x0((16, 2)), VE(), generator=g, **kw),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_a_generator_is_the_only_source_of_randomness(name):
    """The same generator seed gives the same loss whatever the global RNG holds (a draw that ignores `generator`
    would follow the global state); another seed gives another loss."""
    torch.manual_seed(0)
    a = LOSSES[name](_gen(5))
    torch.manual_seed(1)
    b = LOSSES[name](_gen(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, LOSSES[name](_gen(6)))
    assert a.dtype == F64


def _label_spy(seen):
    def net(x, c, y=None):
        seen.append(y)
        return torch.zeros_like(x)
    return net


LABEL_LOSSES = {
    "ddpm": lambda net, x0, **kw: ddpm_loss(net, x0, ddpm_linear(), **kw),
    "flow": lambda net, x0, **kw: flow_matching_loss(net, x0, **kw),
    "dsm": lambda net, x0, **kw: dsm_loss(net, x0, ContinuousVP(), **kw),
    "edm": lambda net, x0, **kw: edm_loss(net, x0, **kw),
}


@pytest.mark.parametrize("name", list(LABEL_LOSSES))
def test_label_dropout_follows_the_generator(name):
    seen, y = [], torch.arange(64) % 3
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        LABEL_LOSSES[name](_label_spy(seen), _x0((64, 2)), y=y, p_uncond=0.5, num_classes=3, generator=_gen(5))
    assert torch.equal(seen[0], seen[1]) and set(seen[0].tolist()) == {0, 1, 2, 3}


def test_drop_labels_follows_the_generator_not_the_global_rng():
    y = torch.zeros(256, dtype=torch.long)
    torch.manual_seed(0)
    a = drop_labels(y, 0.5, 7, generator=_gen(2))
    torch.manual_seed(1)
    assert torch.equal(a, drop_labels(y, 0.5, 7, generator=_gen(2)))
    assert set(a.tolist()) == {0, 7}


@pytest.mark.parametrize("name", list(LABEL_LOSSES))
def test_labels_reach_the_network(name):
    """No dropout by default (labels arrive unchanged, num_classes not needed); p_uncond = 1 drops every label to
    the null id num_classes."""
    seen, x0, y, loss = [], _x0((32, 2)), torch.arange(32) % 5, LABEL_LOSSES[name]
    loss(_label_spy(seen), x0, y=y)
    assert torch.equal(seen[-1], y)
    loss(_label_spy(seen), x0, y=y, p_uncond=1.0, num_classes=5)
    assert (seen[-1] == 5).all()


# ---- messages ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda: ddpm_loss(_zero_net, _x0((2, 1)), VE()), "discrete DDPM schedule, got VE"),
    (lambda: ddpm_loss(_zero_net, _x0((2, 1)), ddpm_linear(), target="score"), "unknown DDPM target 'score'"),
    (lambda: flow_matching_loss(_zero_net, _x0((2, 1)), t_dist="beta"), "time distribution 'beta'"),
    (lambda: dsm_loss(_zero_net, _x0((2, 1)), ddpm_linear()), "continuous VP, sub-VP or VE schedule, got DiscreteVP"),
    (lambda: dsm_loss(_zero_net, _x0((2, 1)), VE(), parameterization="eps"), "score or sigma-score network, got 'eps'"),
    (lambda: drop_labels(torch.zeros(2, dtype=torch.long), 1.5, 3), r"p_uncond must be in \[0, 1\], got 1.5"),
    (lambda: edm_loss(lambda x, s, **k: x, _x0((2, 1)), y=torch.zeros(2, dtype=torch.long), p_uncond=0.5),
     "needs num_classes"),
])
def test_bad_arguments_name_the_problem(call, match):
    with pytest.raises(UserError, match=match):
        call()
