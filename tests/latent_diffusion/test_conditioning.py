"""Caption dropout, text classifier-free guidance (scale 1 = conditional, 0 = unconditional, else Ho & Salimans'
combination), the scale_by_std factor, and SD's scaled-linear schedule against diffusers' DDPMScheduler."""
import pytest
import torch

from unigen.errors import UserError
from unigen.families.continuous_diffusion import Gaussian, ddpm_scaled_linear
from unigen.families.continuous_diffusion.samplers import sample_ddpm
from unigen.families.continuous_diffusion.schedules import get_schedule
from unigen.families.latent_diffusion.conditioning import drop_captions, std_scale_factor, text_guided
from unigen.families.latent_diffusion.network import LatentDiffusionConfig, check

F64 = torch.float64


def test_drop_captions_replaces_whole_rows_at_the_rate():
    ids = torch.arange(1, 6).repeat(20_000, 1)                                   # (B, 5)
    null = torch.tensor([1, 2, 0, 0, 0])
    out = drop_captions(ids, 0.1, null, torch.Generator().manual_seed(0))
    dropped = (out == null).all(1)
    assert ((out == ids).all(1) | dropped).all()                                 # a row is kept or replaced whole
    assert abs(dropped.float().mean().item() - 0.1) < 4 * (0.1 * 0.9 / 20_000) ** 0.5
    assert torch.equal(drop_captions(ids, 0.0, null), ids)
    with pytest.raises(UserError):
        drop_captions(ids, 1.5, null)


def _toy_denoiser():
    """D(x, sigma, context, context_mask): depends on the context's masked mean, so the branches differ."""
    def D(x, sigma, context, context_mask):
        c = (context * context_mask[..., None]).sum(1) / context_mask.sum(1, keepdim=True)    # (B, E)
        return x * torch.tanh(c[:, :1]) + sigma[:, None] * c[:, 1:2]
    return D


@pytest.mark.parametrize("scale", [0.0, 1.0, 2.0, 7.5])
def test_text_guidance_equals_separate_calls(scale):
    g = torch.Generator().manual_seed(0)
    D = _toy_denoiser()
    x, sigma = torch.randn(4, 3, generator=g, dtype=F64), torch.rand(4, generator=g, dtype=F64) + 0.1
    c, c_null = torch.randn(4, 5, 2, generator=g, dtype=F64), torch.randn(1, 5, 2, generator=g, dtype=F64)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 4, dtype=torch.bool)
    m_null = torch.tensor([[1, 1, 0, 0, 0]], dtype=torch.bool)
    cond = D(x, sigma, c, mask)
    uncond = D(x, sigma, c_null.expand_as(c), m_null.expand_as(mask))
    got = text_guided(D, c, mask, c_null, m_null, scale)(x, sigma)
    torch.testing.assert_close(got, uncond + scale * (cond - uncond), rtol=1e-12, atol=1e-12)
    if scale == 1:
        assert torch.equal(got, cond)
    if scale == 0:
        assert torch.equal(got, uncond)
    with pytest.raises(UserError, match=">= 0"):
        text_guided(D, c, mask, c_null, m_null, -0.5)


def test_std_scale_factor_gives_unit_variance_latents():
    z = torch.randn(64, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 5.3 + 0.2
    s = std_scale_factor(z)
    assert (z * s).flatten().std().item() == pytest.approx(1.0, abs=1e-5)
    assert s == pytest.approx(1 / z.flatten().std().item(), rel=1e-6)
    with pytest.raises(UserError):
        std_scale_factor(torch.zeros(2, 4))


def test_scaled_linear_schedule_and_ddpm_sampling_match_diffusers():
    """DDPMScheduler(beta_schedule="scaled_linear"), 1000 levels: the same betas / alpha_bar, and 25 leading steps
    of its ancestral sampler with an exact eps-model on Gaussian data equal sample_ddpm on the same levels."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                    clip_sample=False)
    ours = ddpm_scaled_linear()
    torch.testing.assert_close(ours.alpha_bar, sched.alphas_cumprod.double(), rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(1 - ours.alpha_bar[1:] / ours.alpha_bar[:-1], sched.betas[1:].double(),
                               rtol=1e-5, atol=1e-8)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.set_timesteps(25)
    data = Gaussian(torch.tensor([0.3, -0.5], dtype=F64), torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64))
    a = sched.alphas_cumprod
    sig = lambda t: ((1 - a[int(t)]) / a[int(t)]).sqrt()
    sigmas = torch.cat([torch.stack([sig(t) for t in sched.timesteps]), torch.zeros(1, dtype=F64)])
    x_vp = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = x_vp * (1 + sigmas[0] ** 2).sqrt()
    g = torch.Generator().manual_seed(1)
    for t in sched.timesteps:
        s = sig(t)
        x_in = x_vp * (1 + s ** 2).sqrt()
        eps = (x_in - data.denoiser(x_in, s.expand(8))) / s
        x_vp = sched.step(eps, t, x_vp, generator=g).prev_sample
    got = sample_ddpm(data.denoiser, x, sigmas, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, x_vp, rtol=1e-9, atol=1e-9)


def test_ddpm_without_a_schedule_is_stable_diffusions_scaled_linear():
    """model.method=ddpm with model.schedule="" means SD's scaled-linear betas (the documented default), compared
    with diffusers' alphas_cumprod; the continuous-diffusion method's own first schedule (ddpm-linear, whose last
    level is 100x noisier) was used by mistake before."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    name, param = check(LatentDiffusionConfig(method="ddpm"))
    assert (name, param) == ("ddpm-scaled-linear", "eps")
    torch.testing.assert_close(get_schedule(name).alpha_bar, sched.alphas_cumprod.double(), rtol=2e-6, atol=1e-7)
    assert check(LatentDiffusionConfig(method="ddpm", schedule="ddpm-linear"))[0] == "ddpm-linear"
