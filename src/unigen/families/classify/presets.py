"""The classification presets."""
from __future__ import annotations

from unigen.config import Config, SampleConfig, TrainConfig
from unigen.data import DigitsData, MnistData, ShapesData
from unigen.families.classify.task import ClassifierConfig


def vit_mnist() -> Config:
    """ViT classifier on real MNIST: 97.7% test accuracy in 4500 steps (5-9 minutes on 2 CPU cores)."""
    return Config(task="classify", preset="vit-mnist", data=MnistData(),
                  model=ClassifierConfig(arch="vit", size="tiny", patch=4),
                  train=TrainConfig(steps=4500, batch_size=128, lr=2e-3, warmup_steps=100, weight_decay=0.05,
                                    ema_decay=0.0, precision="auto", ckpt_every=1500, log_every=50),
                  sample=SampleConfig())


def mlp_digits() -> Config:
    """MLP classifier on scikit-learn's 8x8 digits (seconds on a CPU)."""
    return Config(task="classify", preset="mlp-digits", data=DigitsData(),
                  model=ClassifierConfig(arch="mlp", hidden=256),
                  train=TrainConfig(steps=300, batch_size=64, lr=1e-3, ema_decay=0.0, ckpt_every=300),
                  sample=SampleConfig())


def mlp_shapes() -> Config:
    """MLP classifier of the largest shape in the procedural `shapes` images."""
    return Config(task="classify", preset="mlp-shapes", data=ShapesData(),
                  model=ClassifierConfig(arch="mlp", hidden=512),
                  train=TrainConfig(steps=500, batch_size=64, lr=1e-3, ema_decay=0.0, ckpt_every=500),
                  sample=SampleConfig())


def digits_softf1() -> Config:
    """MLP on long-tailed digits (50:1) trained with 0.5 CE + 0.5 soft macro-F1 (seconds on a CPU)."""
    return Config(task="classify", preset="digits-softf1", data=DigitsData(imbalance=50.0),
                  model=ClassifierConfig(arch="mlp", hidden=256, loss="soft_macro_f1", surrogate_weight=0.5,
                                         temperature=1.0),
                  train=TrainConfig(steps=600, batch_size=256, lr=1e-3, ema_decay=0.0, ckpt_every=600),
                  sample=SampleConfig())


PRESETS = {"vit-mnist": vit_mnist, "mlp-digits": mlp_digits, "mlp-shapes": mlp_shapes, "digits-softf1": digits_softf1}
