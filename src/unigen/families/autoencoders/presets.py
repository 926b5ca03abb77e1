"""The autoencoder presets: LDM's KL autoencoder on shapes (the first stage of latent diffusion) and MNIST, and
Kingma & Welling's VAE on 8-bit MNIST.

All train with precision "auto": bf16 only where the CPU has bf16 units (unigen.train.precision). On a 2-core AMD
EPYC (Zen 3: AVX2, no AVX-512 BF16 / AMX) bf16 autocast made a shapes-kl step about 20x slower than fp32 (emulated
bf16 kernels; benchmarks/autoencoders.md)."""
from __future__ import annotations

from unigen.config import Config, SampleConfig, TrainConfig
from unigen.data import MnistData, ShapesData
from unigen.families.autoencoders.network import AutoencoderConfig, PriorConfig


def shapes_kl() -> Config:
    """KL autoencoder (LDM, f=4) on 32x32 shapes: latent 4x8x8, L1 + 1e-6 KL, widths 32/64/64, mid attention."""
    return Config(task="autoencoders", preset="shapes-kl", data=ShapesData(),
                  model=AutoencoderConfig(kind="kl", channels=(32, 64, 64), latent_channels=4, kl_weight=1e-6),
                  train=TrainConfig(steps=1500, batch_size=16, lr=1e-3, warmup_steps=100, ema_decay=0.0,
                                    grad_clip=0.0, precision="auto", ckpt_every=500, log_every=50),
                  sample=SampleConfig(sampler="prior", n=20))


def mnist_kl() -> Config:
    """KL autoencoder (LDM, f=4) on MNIST: latent 4x7x7, L1 + 1e-6 KL, widths 32/64/64, mid attention."""
    cfg = shapes_kl()
    cfg.preset, cfg.data = "mnist-kl", MnistData()
    return cfg


def mnist_vae() -> Config:
    """VAE (Kingma & Welling) on 8-bit MNIST: MLP 2 x 512, z in R^32, discretised-logistic p(x|z); ELBO and IWAE."""
    return Config(task="autoencoders", preset="mnist-vae", data=MnistData(),
                  model=AutoencoderConfig(kind="vae", hidden=512, latent_dim=32, likelihood="logistic"),
                  train=TrainConfig(steps=3000, batch_size=128, lr=1e-3, warmup_steps=100, ema_decay=0.0,
                                    ckpt_every=1000, log_every=100),
                  sample=SampleConfig(sampler="prior", n=100))


def mnist_vqvae() -> Config:
    """VQ-VAE on MNIST (f=4, 7x7 codes of a 512 x 16 EMA codebook, decay 0.99, beta 0.25, dead-code restarts)."""
    return Config(task="autoencoders", preset="mnist-vqvae", data=MnistData(),
                  model=AutoencoderConfig(kind="vq", channels=(32, 64, 64), latent_channels=16, codebook_size=512,
                                          ema=True, beta=0.25, rec_loss="l2", restart=0.01),
                  train=TrainConfig(steps=300, batch_size=32, lr=1e-3, warmup_steps=100, ema_decay=0.0,
                                    grad_clip=0.0, precision="auto", ckpt_every=100, log_every=50),
                  sample=SampleConfig(sampler="prior", n=20))


def mnist_vqgan() -> Config:
    """VQGAN on MNIST: the VQ autoencoder + patch discriminator (hinge, adaptive weight, disc_weight 0.8, from step
    150 of 300), L1 + perceptual term on our MNIST feature CNN, Adam (0.5, 0.9)."""
    return Config(task="autoencoders", preset="mnist-vqgan", data=MnistData(),
                  model=AutoencoderConfig(kind="vq", channels=(32, 64, 64), latent_channels=16, codebook_size=512,
                                          ema=True, beta=0.25, restart=0.01, disc_weight=0.8, disc_start=150,
                                          disc_channels=32, disc_layers=2, perceptual_weight=1.0),
                  train=TrainConfig(steps=300, batch_size=32, lr=5e-4, warmup_steps=100, ema_decay=0.0,
                                    grad_clip=0.0, precision="auto", ckpt_every=500, log_every=50),
                  sample=SampleConfig(sampler="prior", n=20))


def _prior(name: str, prior: str) -> Config:
    return Config(task="code_prior", preset=name, data=MnistData(),
                  model=PriorConfig(first_stage="", prior=prior, size="small", class_cond=False, top_k=100),
                  train=TrainConfig(steps=400, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.999,
                                    precision="auto", ckpt_every=500, log_every=50),
                  sample=SampleConfig(sampler="default", n=100))


def mnist_vqgan_prior() -> Config:
    """Taming's second stage on MNIST: AR transformer (4 x 256) over a VQGAN run's 7x7 codes, top-k 100
    (needs --model.first_stage=RUN of mnist-vqgan)."""
    return _prior("mnist-vqgan-prior", "ar")


def mnist_vqgan_maskprior() -> Config:
    """Masked-diffusion prior (MDLM loss, MaskGIT-style decoding) over a VQGAN run's codes (--model.first_stage=RUN)."""
    return _prior("mnist-vqgan-maskprior", "mask")


PRESETS = {"shapes-kl": shapes_kl, "mnist-kl": mnist_kl, "mnist-vae": mnist_vae, "mnist-vqvae": mnist_vqvae,
           "mnist-vqgan": mnist_vqgan, "mnist-vqgan-prior": mnist_vqgan_prior,
           "mnist-vqgan-maskprior": mnist_vqgan_maskprior}
