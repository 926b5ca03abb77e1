"""Classifier-free guidance on a class-conditional Gaussian mixture, checked through Tweedie's formula: the guided
denoiser must equal x + sigma^2 (scale grad log p(x | y; sigma) + (1 - scale) grad log p(x; sigma)), with the scores
taken by autograd of the exact mixture log-density (Ho & Salimans 2022, Eq. 6, in score form)."""
import pytest
import torch

from unigen.families.continuous_diffusion import Gaussian, GaussianMixture, cfg_combine, guided, karras_sigmas
from unigen.families.continuous_diffusion.samplers import sample_heun

F64 = torch.float64
MIX = GaussianMixture(torch.tensor([0.2, 0.5, 0.3], dtype=F64), (
    Gaussian(torch.tensor([-2.0, 0.0], dtype=F64), torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=F64)),
    Gaussian(torch.tensor([1.0, 1.5], dtype=F64), 0.4 * torch.eye(2, dtype=F64)),
    Gaussian(torch.tensor([0.5, -1.5], dtype=F64), torch.tensor([[0.5, -0.2], [-0.2, 0.3]], dtype=F64)),
))
NULL = 3


def _score(x, sigma, y=None):
    """grad_x log p(x; sigma) (or log p(x | y; sigma)) by autograd of the exact log-density."""
    x = x.detach().requires_grad_(True)
    if y is None:
        logp = MIX.log_prob(x, sigma)
    else:
        logp = torch.stack([MIX.components[k].log_prob(x[i:i + 1], sigma[i:i + 1])[0]
                            for i, k in enumerate(y.tolist())])
    (g,) = torch.autograd.grad(logp.sum(), x)
    return g


def _points(seed=0):
    g = torch.Generator().manual_seed(seed)
    sigma = torch.tensor([0.05, 0.3, 1.0, 2.0, 5.0, 0.7], dtype=F64)
    return torch.randn(6, 2, generator=g, dtype=F64) * (1 + sigma[:, None]), sigma, torch.tensor([0, 1, 2, 0, 1, 2])


def test_mixture_denoiser_is_tweedie():
    """The analytic oracle itself: D(x; sigma) = x + sigma^2 grad log p(x; sigma), conditional and unconditional."""
    x, sigma, y = _points()
    s2 = sigma[:, None] ** 2
    torch.testing.assert_close(MIX.denoiser(x, sigma), x + s2 * _score(x, sigma))
    torch.testing.assert_close(MIX.denoiser(x, sigma, y=y), x + s2 * _score(x, sigma, y))
    torch.testing.assert_close(MIX.denoiser(x, sigma, y=torch.full_like(y, NULL)), MIX.denoiser(x, sigma))


@pytest.mark.parametrize("scale", [0.0, 1.0, 2.5, 7.5])
def test_guided_denoiser_is_the_guided_score(scale):
    x, sigma, y = _points(1)
    ref = x + sigma[:, None] ** 2 * (scale * _score(x, sigma, y) + (1 - scale) * _score(x, sigma))
    torch.testing.assert_close(guided(MIX.denoiser, y, NULL, scale)(x, sigma), ref)


def test_guidance_in_d_space_equals_guidance_in_eps_space():
    """Ho & Salimans' eps_tilde = (1 + w) eps_c - w eps_u with scale = 1 + w gives the same D = x - sigma eps_tilde."""
    x, sigma, y = _points(2)
    w = 3.0
    eps = lambda D_x: (x - D_x) / sigma[:, None]                    # noqa: E731
    eps_tilde = (1 + w) * eps(MIX.denoiser(x, sigma, y=y)) - w * eps(MIX.denoiser(x, sigma))
    torch.testing.assert_close(guided(MIX.denoiser, y, NULL, 1 + w)(x, sigma), x - sigma[:, None] * eps_tilde)
    torch.testing.assert_close(cfg_combine(torch.tensor(2.0), torch.tensor(1.0), 3.0), torch.tensor(4.0))


def test_guided_denoiser_makes_one_batched_call():
    calls = []

    def D(x, sigma, y):
        calls.append((x.shape[0], y.tolist()))
        return MIX.denoiser(x, sigma, y=y)

    x, sigma, y = _points(3)
    guided(D, y, NULL, 4.0)(x, sigma)
    assert calls == [(12, y.tolist() + [NULL] * 6)]
    calls.clear()
    guided(D, y, NULL, 1.0)(x, sigma)                                 # scale 1: conditional only
    assert calls == [(6, y.tolist())]


def test_strong_guidance_raises_the_class_posterior_of_samples():
    """Guidance samples from ~ p(x | y)^scale p(x)^(1 - scale), i.e. tilts toward large p(y | x): the mean class
    log-posterior log p(y | x) of the samples (exact, under the mixture) rises with the scale. (Distances to the class
    mean need not shrink: guidance also pushes samples away from the other classes.)"""
    y = torch.arange(3).repeat(100)
    sigmas = karras_sigmas(32)
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(4), dtype=F64) * sigmas[0]
    log_w = MIX.weights.log()
    post = {}
    for scale in (1.0, 2.0, 4.0):
        out = sample_heun(guided(MIX.denoiser, y, NULL, scale), x, sigmas)
        joint = torch.stack([log_w[k] + c.log_prob(out, 0.0) for k, c in enumerate(MIX.components)], 1)   # (300, 3)
        post[scale] = joint.log_softmax(1)[torch.arange(300), y].mean().item()
    assert post[1.0] < post[2.0] < post[4.0] < 0, post
