"""The normalizing-flow presets: NICE, RealNVP and Glow on MNIST at one training budget, and on toy2d."""
from __future__ import annotations

from unigen.config import Config, SampleConfig, TrainConfig
from unigen.data import MnistData, Toy2dData
from unigen.families.normalizing_flows.network import FlowConfig


def _mnist(arch: str, **model) -> Config:
    """Equal budget for the three: 600 steps of batch 64, Adam 1e-3 with warm-up, no weight decay."""
    return Config(task="normalizing_flows", preset=f"mnist-{arch}", data=MnistData(),
                  model=FlowConfig(arch=arch, **model),
                  train=TrainConfig(steps=600, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.999,
                                    grad_clip=50.0, ckpt_every=300, log_every=50),
                  sample=SampleConfig(sampler="ancestral", n=100))


def mnist_nice() -> Config:
    """NICE on MNIST: 4 additive couplings (MLPs 4 x 512 in place of the paper's 5 x 1000), exp(s) scaling,
    logistic prior."""
    return _mnist("nice", hidden=512, depth=4, couplings=4)


def mnist_realnvp() -> Config:
    """RealNVP on MNIST: logit pre-processing, 2 scales of checkerboard / squeeze / channel affine couplings
    (width 32)."""
    return _mnist("realnvp", hidden=32, levels=2)


def mnist_glow() -> Config:
    """Glow on MNIST: 2 levels of K = 8 steps (actnorm, 1x1 conv, affine coupling; width 32), learned priors."""
    return _mnist("glow", hidden=32, levels=2, flow_steps=8)


def _toy(arch: str) -> Config:
    return Config(task="normalizing_flows", preset=f"toy2d-{arch}", data=Toy2dData(toy="checkerboard"),
                  model=FlowConfig(arch=arch, hidden=64, depth=3, couplings=8),
                  train=TrainConfig(steps=2000, batch_size=512, lr=2e-3, warmup_steps=100, ema_decay=0.999,
                                    ckpt_every=1000, log_every=100),
                  sample=SampleConfig(sampler="ancestral", n=2000))


def toy2d_nice() -> Config:
    """NICE on 2-D checkerboard (8 additive couplings, MLP 3 x 64); eval reports KL to the exact density."""
    return _toy("nice")


def toy2d_realnvp() -> Config:
    """RealNVP on 2-D checkerboard (8 affine couplings, MLP 3 x 64); eval reports KL to the exact density."""
    return _toy("realnvp")


def toy2d_glow() -> Config:
    """Glow on 2-D checkerboard (8 steps of actnorm, 2x2 invertible linear, affine coupling); eval: KL."""
    return _toy("glow")


PRESETS = {"mnist-nice": mnist_nice, "mnist-realnvp": mnist_realnvp, "mnist-glow": mnist_glow,
           "toy2d-nice": toy2d_nice, "toy2d-realnvp": toy2d_realnvp, "toy2d-glow": toy2d_glow}
