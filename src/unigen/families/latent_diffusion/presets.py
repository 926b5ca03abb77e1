"""The latent-diffusion preset: Stable Diffusion in miniature on the shapes captions."""
from __future__ import annotations

from unigen.config import Config, SampleConfig, TrainConfig
from unigen.data import ShapesData
from unigen.families.latent_diffusion.network import LatentDiffusionConfig


def shapes_ldm() -> Config:
    """Text-to-image latent diffusion on 32x32 one-shape pictures in the 4x8x8 latents of a `shapes-kl` run
    (runs/shapes-kl): eps prediction on DDPM's linear schedule, a 1.1M-parameter UNet cross-attending to a jointly
    trained text encoder (attention at 8x8 and 4x4), 10% caption dropout; DDIM 50 steps, guidance 3; precision
    "auto" (fp32 where bf16 is emulated: 20x slower on an AVX2 AMD CPU). The linear schedule is what the measured
    runs used (benchmarks/latent_diffusion.md); Stable Diffusion's scaled-linear one is `--model.schedule=ddpm-scaled-linear`."""
    return Config(task="latent_diffusion", preset="shapes-ldm", data=ShapesData(max_shapes=1),
                  model=LatentDiffusionConfig(schedule="ddpm-linear", width=32, mults="1,2", depth=1, attn="8,4",
                                              text_dim=32, text_depth=2),
                  train=TrainConfig(steps=1500, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.995,
                                    precision="auto", ckpt_every=500, log_every=50),
                  sample=SampleConfig(sampler="ddim", steps=50, n=40, guidance=3.0))


PRESETS = {"shapes-ldm": shapes_ldm}
