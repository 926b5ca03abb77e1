"""Prompt adherence and sample quality of a text-to-image run on shapes (the issue's measure for latent diffusion).

An attribute classifier, a small CNN that unigen trains itself on the real single-shape training pictures (with
`fit()`, deterministically, cached under `$UNIGEN_CACHE/features/` like the MNIST feature net), reads four
attributes off a picture: colour (8), shape (3), size (2) and position (3 x 3 grid). For n test captions of
single-shape pictures the run draws one image each; adherence_<attr> is the fraction whose classified attribute is
the prompted one, adherence_all the fraction with all four right. fd is the Frechet distance between the
classifier's penultimate features of the samples and of the 1,000 real test pictures (FID's recipe with our own
feature net). Beside them: the same numbers for n real training pictures (`*_data`, the ceiling of adherence and
the floor of fd at this n) and chance adherence (`chance_*`, what an image that ignores the prompt scores when
its attributes are uniform; `chance_data_*`, when they are distributed like the training pictures': position is
not uniform, a quarter of the shapes sit in the middle cell).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from unigen.config import Config, TrainConfig
from unigen.data import ShapesData, load
from unigen.data.shapes import COLOURS, POSITIONS, SHAPES, SIZES
from unigen.errors import UserError
from unigen.families.latent_diffusion.network import generate, unwrap
from unigen.io import atomic_path, atomic_write_json
from unigen.metrics.features import cache_dir
from unigen.metrics.sample_quality import frechet_distance_features
from unigen.train import fit

ATTRIBUTES = {"colour": len(COLOURS), "shape": len(SHAPES), "size": len(SIZES), "position": len(POSITIONS)}


@dataclass(frozen=True)
class AttrNetConfig:
    version: int = 1
    width: int = 32
    hidden: int = 128
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


class AttributeCNN(nn.Module):
    """conv3x3(w) - GELU - pool - conv3x3(2w) - GELU - pool - Linear(hidden) - GELU - one linear head per attribute."""

    def __init__(self, width: int = 32, hidden: int = 128):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 8 * 8, hidden)
        self.head = nn.Linear(hidden, sum(ATTRIBUTES.values()))

    def features(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, 32, 32):
            raise UserError(f"the attribute classifier reads 32x32 RGB pictures, got {tuple(x.shape)}")
        h = F.max_pool2d(F.gelu(self.conv1(x)), 2)                    # (B, w, 16, 16)
        h = F.max_pool2d(F.gelu(self.conv2(h)), 2)                    # (B, 2w, 8, 8)
        return F.gelu(self.fc(h.flatten(1)))                          # (B, hidden)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Logits per attribute, in ATTRIBUTES order."""
        return list(self.head(self.features(x)).split(list(ATTRIBUTES.values()), dim=1))


def _loss(net: AttributeCNN, batch: dict) -> Tensor:
    a = batch["attributes"][:, 0]                                      # (B, 4) of the single shape
    return sum(F.cross_entropy(logits, a[:, i]) for i, logits in enumerate(net(batch["x"])))


def _single(split: str) -> dict[str, Tensor]:
    return load(ShapesData(max_shapes=1), split).tensors


_LOADED: dict[str, AttributeCNN] = {}


def attribute_net(cfg: AttrNetConfig = AttrNetConfig()) -> AttributeCNN:
    """The trained classifier for `cfg`: from the cache, or trained now (seconds) and cached."""
    key = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / "features" / f"shapes-attributes-{key}.safetensors"
    if key in _LOADED:
        return _LOADED[key]
    net = AttributeCNN(cfg.width, cfg.hidden)
    if path.exists():
        net.load_state_dict(load_file(path))
    else:
        tc = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=cfg.steps // 10,
                         ema_decay=0.0, seed=cfg.seed, progress=False, log_every=cfg.steps, ckpt_every=cfg.steps)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            fit(net, _loss, load(ShapesData(max_shapes=1), "train"), tc, run_dir=None)
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
        test = _single("test")
        atomic_write_json(path.with_suffix(".json"), {"config": dataclasses.asdict(cfg),
                                                      "test_accuracy": adherence(net.eval(), test["x"],
                                                                                 test["attributes"][:, 0])})
    _LOADED[key] = net.eval().requires_grad_(False)
    return _LOADED[key]


@torch.no_grad()
def adherence(net: AttributeCNN, x: Tensor, attrs: Tensor) -> dict[str, float]:
    """Fraction of pictures x (N, 3, 32, 32) whose classified attributes equal `attrs` (N, 4), per attribute and all."""
    right = torch.stack([lg.argmax(1) == attrs[:, i] for i, lg in enumerate(net(x))], 1)   # (N, 4)
    return {**{f"adherence_{k}": right[:, i].float().mean().item() for i, k in enumerate(ATTRIBUTES)},
            "adherence_all": right.all(1).float().mean().item()}


def test_captions(cfg: Config) -> Tensor:
    """Word ids of the run's test captions (prompts of `unigen sample` without --prompt, and of the evaluation)."""
    return load(cfg.data, "test").tensors["word_ids"]


def _prompts(cfg: Config, n: int) -> tuple[Tensor, Tensor]:
    """(word ids (n, S), attributes (n, 4)) of the first n single-shape test captions of the run's data."""
    t = load(cfg.data, "test").tensors
    one = (t["attributes"][:, 1:, 0] < 0).all(1)                       # pictures with a single shape
    if int(one.sum()) < n:
        raise UserError(f"the test split has {int(one.sum())} single-shape captions, fewer than n={n}")
    return t["word_ids"][one][:n], t["attributes"][one][:n, 0]


def score(model: nn.Module, cfg: Config, *, sampler: str, steps: int, guidance: float, n: int) -> dict[str, float]:
    """Draw n images for n single-shape test captions and score them (see the module docstring)."""
    net = unwrap(model)
    if tuple(net.image_shape) != (3, 32, 32):
        raise UserError(f"prompt adherence is measured on 32x32 shapes pictures, this run has {net.image_shape}")
    clf = attribute_net()
    ids, attrs = _prompts(cfg, n)
    t0 = time.perf_counter()
    x = generate(model, ids, sampler=sampler, steps=steps, guidance=guidance,
                 generator=torch.Generator(net.scale_factor.device).manual_seed(cfg.sample.seed))
    seconds = time.perf_counter() - t0
    real_test, real_train = _single("test"), _single("train")
    f_ref = clf.features(real_test["x"])
    out = {**adherence(clf, x, attrs), "fd": frechet_distance_features(clf.features(x), f_ref).item(),
           "guidance": guidance, "n": float(n), "seconds": seconds}
    base = adherence(clf, real_train["x"][:n], real_train["attributes"][:n, 0])
    out.update({f"{k}_data": v for k, v in base.items()})
    out["fd_data"] = frechet_distance_features(clf.features(real_train["x"][:n]), f_ref).item()
    out.update({f"chance_{k}": 1 / v for k, v in ATTRIBUTES.items()})
    out.update(data_chance(attrs, real_train["attributes"][:, 0]))
    return out


def data_chance(prompts: Tensor, data: Tensor) -> dict[str, float]:
    """chance_data_<attr>: the adherence of images that ignore their prompts (N, 4) but whose attributes are
    distributed like `data` (M, 4): sum_c p_prompts(c) p_data(c) per attribute."""
    out = {}
    for i, (k, v) in enumerate(ATTRIBUTES.items()):
        p = torch.bincount(prompts[:, i], minlength=v).double() / len(prompts)
        q = torch.bincount(data[:, i], minlength=v).double() / len(data)
        out[f"chance_data_{k}"] = float(p @ q)
    return out
