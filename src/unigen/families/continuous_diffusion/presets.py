"""The continuous-diffusion presets: small Python functions returning a `Config`, and the `PRESETS` dict."""
from __future__ import annotations

from unigen.config import Config, SampleConfig, TrainConfig
from unigen.data import MnistData, Toy2dData
from unigen.families.continuous_diffusion.network import DiffusionModelConfig


def _toy(method: str, preset: str, sampler: str, steps: int, **model) -> Config:
    """The toy2d trio shares data, backbone and training budget; only the method (and its sampler) differ."""
    return Config(task="diffusion", preset=preset, data=Toy2dData(toy="checkerboard"),
                  model=DiffusionModelConfig(method=method, backbone="mlp", size="small", **model),
                  train=TrainConfig(steps=3000, batch_size=512, lr=2e-3, warmup_steps=100, ema_decay=0.999,
                                    ckpt_every=1500, log_every=100),
                  sample=SampleConfig(sampler=sampler, steps=steps, n=2000))


def toy2d_ddpm() -> Config:
    """DDPM (eps-prediction, linear betas, 1000 levels) on 2-D checkerboard; ancestral sampling."""
    return _toy("ddpm", "toy2d-ddpm", "ddpm", 1000)


def toy2d_edm() -> Config:
    """EDM (Karras et al. 2022 preconditioning and loss) on 2-D checkerboard; Heun, 18 steps (35 NFE)."""
    return _toy("edm", "toy2d-edm", "heun", 18, sigma_data=1.0)


def toy2d_fm() -> Config:
    """Flow matching / rectified flow on 2-D checkerboard; Euler in flow time, 50 steps."""
    return _toy("fm", "toy2d-fm", "flow-euler", 50)


def _mnist(method: str, preset: str, sampler: str, steps: int, **model) -> Config:
    """A 0.3M-parameter UNet (base width 16; attention only at 7 x 7) trained 600 steps of batch 64 in bf16: the
    size that gives recognisable digits in a few CPU minutes (convolutions learn strokes far sooner than a DiT)."""
    return Config(task="diffusion", preset=preset, data=MnistData(),
                  model=DiffusionModelConfig(method=method, backbone="unet", size="tiny", width=16, attn="7",
                                             **model),
                  train=TrainConfig(steps=600, batch_size=64, lr=2e-3, warmup_steps=50, ema_decay=0.999,
                                    precision="auto", ckpt_every=300, log_every=50),
                  sample=SampleConfig(sampler=sampler, steps=steps, n=100))


def mnist_ddpm() -> Config:
    """DDPM (eps-prediction, linear betas) on MNIST with a small UNet; ancestral sampling, 100 steps."""
    return _mnist("ddpm", "mnist-ddpm", "ddpm", 100)


def mnist_edm() -> Config:
    """EDM on MNIST with a small UNet, recognisable digits in ~2-3 CPU minutes; Heun, 18 steps (35 NFE)."""
    return _mnist("edm", "mnist-edm", "heun", 18)


def mnist_fm() -> Config:
    """Flow matching on MNIST with a small UNet; midpoint, 18 steps (36 NFE)."""
    return _mnist("fm", "mnist-fm", "flow-midpoint", 18)


def mnist_cfg() -> Config:
    """Class-conditional EDM on MNIST with label dropout 0.1 and classifier-free guidance 2 at sampling."""
    cfg = _mnist("edm", "mnist-cfg", "heun", 18, class_cond=True, p_uncond=0.1)
    cfg.sample.guidance = 2.0
    return cfg


PRESETS = {"toy2d-ddpm": toy2d_ddpm, "toy2d-edm": toy2d_edm, "toy2d-fm": toy2d_fm, "mnist-ddpm": mnist_ddpm,
           "mnist-edm": mnist_edm, "mnist-fm": mnist_fm, "mnist-cfg": mnist_cfg}
