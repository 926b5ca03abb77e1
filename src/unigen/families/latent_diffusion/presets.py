"""The latent-diffusion preset: Stable Diffusion in miniature on the shapes captions."""
from __future__ import annotations

from unigen.config import Config, SampleConfig, TrainConfig
from unigen.data import ShapesData
from unigen.families.latent_diffusion.network import LatentDiffusionConfig


def shapes_ldm() -> Config:
    """Text-to-image latent diffusion on 32x32 one-shape pictures in the 4x8x8 latents of a `shapes-kl` run
    (runs/shapes-kl): rectified flow (the flow-matching loss, as Stable Diffusion 3; Esser et al. 2024), a
    1.1M-parameter UNet cross-attending to a jointly trained text encoder (attention at 8x8 and 4x4), 10% caption
    dropout; Euler in flow time from pure noise (t = 1), 50 steps, guidance 3; fp32 (bf16 is emulated, 20x slower,
    on this AMD CPU). Not SD's eps on the scaled-linear schedule (`--model.method=ddpm --sample.sampler=ddim`):
    that schedule's last level keeps signal (alpha_bar = 0.0047), from which the position of a shape is readable
    (benchmarks/latent_diffusion.md), so a model trained on it takes the position from the starting noise, not
    from the prompt (Lin et al. 2023)."""
    return Config(task="latent_diffusion", preset="shapes-ldm", data=ShapesData(max_shapes=1),
                  model=LatentDiffusionConfig(method="fm", width=32, mults="1,2", depth=1, attn="8,4", text_dim=32,
                                              text_depth=2),
                  train=TrainConfig(steps=600, batch_size=32, lr=1e-3, warmup_steps=100, ema_decay=0.995,
                                    ckpt_every=300, log_every=50),
                  sample=SampleConfig(sampler="flow-euler", steps=50, n=40, guidance=3.0))


PRESETS = {"shapes-ldm": shapes_ldm}
