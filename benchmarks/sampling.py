"""Continuous samplers against diffusers' schedulers: per-step overhead, and end-to-end sampling with a real network.

overhead   the sampler loop alone. The denoiser is trivial (ours: D(x, sigma) = x / 2; diffusers: the model returns
           eps = x_in / 2), so one step costs one multiply plus the sampler's own bookkeeping. A run includes
           building the grid (ours: `karras_sigmas`; diffusers: `set_timesteps`) as a user pays it every call.
e2e        wall time per image at the NFE each sampler is used with (Euler 50 steps, Heun 18 steps = 35 NFE,
           DPM-Solver++(2M) 20 steps), batch of 16 class-conditional 28x28 MNIST images, no_grad, fp32, with a
           randomly initialised DiT "small" (width 128, 6 blocks, patch 4) on both sides: ours through
           `make_denoiser(net, "eps", ddpm-linear)` and our sampler, diffusers' DiTTransformer2DModel through its
           scheduler's loop (scale_model_input, model, step) on the same Karras grid. Random weights do not change
           the cost of a step.
"""
from __future__ import annotations

from functools import partial

import torch

from benchmarks.harness import Case
from unigen.families.continuous_diffusion import SAMPLERS, get_schedule, karras_sigmas, make_denoiser, nfe
from unigen.models import DiT, dit_config

# ours name -> (diffusers scheduler class name, its constructor options, steps used end to end)
PAIRS = {
    "euler": ("EulerDiscreteScheduler", {}, 50),
    "heun": ("HeunDiscreteScheduler", {}, 18),
    "dpmpp-2m": ("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2), 20),
}


def _scheduler(name: str):
    import diffusers
    cls, opts, _ = PAIRS[name]
    return getattr(diffusers, cls)(use_karras_sigmas=True, **opts)


def diffusers_loop(sched, model, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The loop diffusers' pipelines run: set_timesteps, then scale_model_input / model / step per timestep."""
    sched.set_timesteps(steps)
    x = x * sched.init_noise_sigma
    for t in sched.timesteps:
        eps = model(sched.scale_model_input(x, t), t)
        x = sched.step(eps, t, x).prev_sample
    return x


def ours_loop(name: str, D, x: torch.Tensor, steps: int, schedule) -> torch.Tensor:
    sigmas = karras_sigmas(steps, schedule.sigma_min, schedule.sigma_max)
    return SAMPLERS[name](D, x * sigmas[0].item(), sigmas)


def overhead_case(name: str, steps: int = 50, shape=(8, 4, 32, 32)) -> Case:
    schedule = get_schedule("ddpm-linear")

    def setup():
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        sched = _scheduler(name)
        return (lambda: ours_loop(name, lambda x, s: x * 0.5, x, steps, schedule),
                lambda: diffusers_loop(sched, lambda x, t: x * 0.5, x, steps))

    return Case("overhead", f"{name} {steps} steps", setup, items=nfe(name, steps), unit="nfe",
                info={"x": "x".join(map(str, shape)), "NFE": nfe(name, steps)})


def e2e_case(name: str, batch: int = 16, steps: int | None = None) -> Case:
    steps = steps or PAIRS[name][2]
    schedule = get_schedule("ddpm-linear")

    def setup():
        import diffusers
        torch.manual_seed(0)
        cfg = dit_config("small", image_size=28, channels=1, patch=4, num_classes=10)
        net = DiT(cfg).eval()
        ref = diffusers.DiTTransformer2DModel(
            num_attention_heads=cfg.heads, attention_head_dim=cfg.dim // cfg.heads, in_channels=1, out_channels=1,
            num_layers=cfg.depth, sample_size=28, patch_size=cfg.patch, num_embeds_ada_norm=10, norm_eps=1e-6).eval()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        D = partial(make_denoiser(net, "eps", schedule), y=y)
        sched = _scheduler(name)

        def ref_model(x_in, t):
            return ref(x_in, timestep=t.expand(batch), class_labels=y).sample

        @torch.no_grad()
        def ours():
            return ours_loop(name, D, x, steps, schedule)

        @torch.no_grad()
        def theirs():
            return diffusers_loop(sched, ref_model, x, steps)

        return ours, theirs

    return Case("e2e", f"{name} {steps} steps", setup, items=batch, unit="image",
                info={"NFE": nfe(name, steps), "batch": batch})


def overhead_cases(quick: bool = False) -> list[Case]:
    if quick:
        return [overhead_case("euler", steps=10)]
    return [overhead_case(name) for name in PAIRS]


def e2e_cases(quick: bool = False) -> list[Case]:
    if quick:
        return [e2e_case("euler", batch=2, steps=3)]
    return [e2e_case(name) for name in PAIRS]
