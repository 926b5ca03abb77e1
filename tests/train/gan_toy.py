"""A 2-D GAN small enough to train in milliseconds, for the multi-objective tests of `fit()`; also a script.

    python gan_toy.py RUN [--resume]     trains RUN for 30 steps (checkpoints every 3), as a run a test can SIGKILL

The generator objective's loss back-propagates through the discriminator (the gradients that must not reach the
discriminator's optimizer); the discriminator detaches the fakes; `spare` belongs to the generator objective but
no loss ever uses it (a parameter without a gradient, which plain DDP refuses).
"""
from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from unigen.config import TrainConfig
from unigen.train import Objective, fit


class Blobs:
    """Real points ~ N((2, -1), diag(0.5, 0.2)^2) and, when `with_z`, a fixed latent per example (noise that does
    not come from the RNG, so that runs at different batch splits see the same latents)."""

    def __init__(self, n: int = 256, with_z: bool = True, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.tensors = {"x": torch.randn(n, 2, generator=g) * torch.tensor([0.5, 0.2]) + torch.tensor([2.0, -1.0])}
        if with_z:
            self.tensors["z"] = torch.randn(n, 2, generator=g)
        self.info = {"dim": 2}

    def __len__(self):
        return len(self.tensors["x"])

    def batch(self, idx):
        return {k: v[idx] for k, v in self.tensors.items()}


class ToyGAN(nn.Module):
    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.generator = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
        self.discriminator = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))
        self.spare = nn.Linear(2, 2)


def make_model(seed: int = 0, dropout: float = 0.0) -> ToyGAN:
    torch.manual_seed(seed)
    return ToyGAN(dropout)


def latents(batch):
    return batch["z"] if "z" in batch else torch.randn_like(batch["x"])


def gen_loss(model, batch):
    """Non-saturating generator loss -log D(G(z)); its gradient also reaches the discriminator's weights."""
    fake = model.generator(latents(batch))
    return F.softplus(-model.discriminator(fake)).mean()


def disc_loss(model, batch):
    """-log D(x) - log(1 - D(G(z))), fakes detached; logs the mean logit on real points."""
    fake = model.generator(latents(batch)).detach()
    real_logit = model.discriminator(batch["x"])
    loss = F.softplus(-real_logit).mean() + F.softplus(model.discriminator(fake)).mean()
    return loss, {"d_real": real_logit.mean().item()}


def gen_params(m):
    return [*m.generator.parameters(), *m.spare.parameters()]


def disc_params(m):
    return m.discriminator.parameters()


def objectives(disc_start: int = 2, disc_every: int = 2, gen=gen_loss, disc=disc_loss) -> list[Objective]:
    """Generator every step at TrainConfig's settings; discriminator from `disc_start`, every `disc_every` steps,
    with its own learning rate, betas, weight decay and warm-up."""
    return [Objective("gen", gen, params=gen_params),
            Objective("disc", disc, params=disc_params, lr=2e-2, betas=(0.5, 0.9), weight_decay=0.01,
                      warmup_steps=2, start=disc_start, every=disc_every)]


def config(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=16, grad_accum=2, lr=1e-2, warmup_steps=3, min_lr=1e-3, weight_decay=0.05,
                ema_decay=0.0, grad_clip=0.5, log_every=1, ckpt_every=4, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def slow(loss, seconds: float):
    """`loss` that also sleeps, so that a test can kill the run between steps."""
    def wrapped(model, batch):
        time.sleep(seconds)
        return loss(model, batch)
    return wrapped


if __name__ == "__main__":
    run_dir, resume = sys.argv[1], "--resume" in sys.argv[2:]
    # training noise from the RNG (latents, dropout) and an EMA of the generator: all of it must come back
    fit(make_model(dropout=0.1), objectives(gen=slow(gen_loss, 0.004), disc=slow(disc_loss, 0.004)),
        Blobs(with_z=False), config(steps=30, ckpt_every=3, keep_last=2, ema_decay=0.9), run_dir, resume=resume,
        ema_of=lambda m: m.generator)
