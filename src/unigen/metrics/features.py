"""The MNIST feature network behind the Frechet distance (`fd`) of image diffusion runs.

A small CNN classifier that unigen trains itself, deterministically, with the generic `fit()` on first use (about a
minute on one CPU core) and caches as safetensors under `$UNIGEN_CACHE` (default `~/.cache/unigen`) in
`features/mnist-cnn-<hash>.safetensors`, where <hash> is a hash of its `FeatureNetConfig`; a JSON file beside it
records the config and the test accuracy. Features are the penultimate layer (`hidden` units after GELU), the
analogue of Inception's pool features in FID (Heusel et al. 2017).

    net = ensure_feature_net()                    # trains once, then loads from the cache
    f = mnist_features(net, images)               # (N, hidden) for images (N, 1, H, W) in [-1, 1]
    python -m unigen.metrics.features                     # train (or load) and print the test accuracy
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from safetensors.torch import load_file, save_file

from unigen.config import TrainConfig
from unigen.data import MnistData, load, resize
from unigen.errors import UserError
from unigen.io import atomic_path, atomic_write_json, read_json
from unigen.metrics.classification import accuracy, cross_entropy
from unigen.train import fit


@dataclass(frozen=True)
class FeatureNetConfig:
    version: int = 1            # bump when the architecture or the training recipe changes (changes the hash)
    width: int = 32            # channels of the first conv (the second has 2 * width)
    hidden: int = 128          # feature dimension (penultimate layer)
    steps: int = 800           # optimisation steps of batch `batch_size` on the 55,000 MNIST training images
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


class FeatureCNN(nn.Module):
    """conv3x3(width) - GELU - maxpool - conv3x3(2 width) - GELU - maxpool - Linear(hidden) - GELU - Linear(10)."""

    def __init__(self, width: int = 32, hidden: int = 128, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 7 * 7, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise UserError(f"the MNIST feature net expects images (B, 1, 28, 28), got {tuple(x.shape)}")
        h = F.max_pool2d(F.gelu(self.conv1(x)), 2)                    # (B, W, 14, 14)
        h = F.max_pool2d(F.gelu(self.conv2(h)), 2)                    # (B, 2W, 7, 7)
        return F.gelu(self.fc(h.flatten(1)))                          # (B, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))                           # (B, 10)


def cache_dir() -> Path:
    """`$UNIGEN_CACHE`, or `~/.cache/unigen`."""
    return Path(os.environ.get("UNIGEN_CACHE") or Path.home() / ".cache" / "unigen")


def config_hash(cfg: FeatureNetConfig) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]


def weights_path(cfg: FeatureNetConfig | None = None) -> Path:
    cfg = cfg or FeatureNetConfig()
    return cache_dir() / "features" / f"mnist-cnn-{config_hash(cfg)}.safetensors"


def train_feature_net(cfg: FeatureNetConfig) -> tuple[FeatureCNN, float]:
    """Train the CNN with `fit()` from seed `cfg.seed` (same config, same weights on one machine); (net, test accuracy)."""
    train_cfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=min(50, cfg.steps // 10),
                            ema_decay=0.0, seed=cfg.seed, progress=False, log_every=max(cfg.steps, 1),
                            ckpt_every=max(cfg.steps, 1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = FeatureCNN(cfg.width, cfg.hidden)
        fit(net, lambda m, b: cross_entropy(m(b["x"]), b["y"]), load(MnistData(), "train"),
            train_cfg, run_dir=None)
    net.eval()
    return net, accuracy(net, load(MnistData(), "test"))


_LOADED: dict[Path, FeatureCNN] = {}


def ensure_feature_net(cfg: FeatureNetConfig | None = None) -> FeatureCNN:
    """The trained feature CNN for `cfg` (default `FeatureNetConfig()`): from the cache, or trained and cached now."""
    cfg = cfg or FeatureNetConfig()
    path = weights_path(cfg)
    if path in _LOADED:
        return _LOADED[path]
    net = FeatureCNN(cfg.width, cfg.hidden)
    if path.exists():
        try:
            net.load_state_dict(load_file(path))
        except Exception as e:  # a corrupt cache file is the user's to delete, with a clear message
            raise UserError(f"cached feature net {path} is unreadable ({e}); delete it to retrain") from None
    else:
        net, acc = train_feature_net(cfg)
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
        info = {"config": dataclasses.asdict(cfg), "test_accuracy": acc, "weights": path.name}
        atomic_write_json(path.with_suffix(".json"), info)
    _LOADED[path] = net.eval().requires_grad_(False)
    return _LOADED[path]


def feature_net_info(cfg: FeatureNetConfig | None = None) -> dict:
    """The JSON record of a cached feature net (config, test accuracy); trains it first if needed."""
    ensure_feature_net(cfg)
    return read_json(weights_path(cfg).with_suffix(".json"), "feature net record")


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] != 1:
        raise UserError(f"the MNIST feature net needs greyscale images (N, 1, H, W), got {tuple(x.shape)}")
    return torch.cat([fn(resize(x[i:i + batch_size].float().clamp(-1, 1), 28).to(device)).cpu()
                      for i in range(0, x.shape[0], batch_size)])


def mnist_features(net: FeatureCNN, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate-layer features (N, hidden) of greyscale images (N, 1, H, W) in [-1, 1] (resized to 28 x 28)."""
    return _batched(net.features, x, batch_size, next(net.parameters()).device)     # (N, hidden)


def mnist_predict(net: FeatureCNN, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted digit (N,) of images (N, 1, H, W) in [-1, 1]."""
    return _batched(lambda b: net(b).argmax(-1), x, batch_size, next(net.parameters()).device)   # (N,)


def main() -> None:
    info = feature_net_info()
    print(json.dumps({**info, "path": str(weights_path())}, indent=2))


if __name__ == "__main__":
    main()
