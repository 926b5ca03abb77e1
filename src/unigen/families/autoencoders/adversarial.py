"""VQGAN's adversarial training (Esser et al. 2021, "Taming Transformers", Sec. 3.1, Eq. 4-7): the PatchGAN
discriminator (Isola et al. 2017), the hinge losses, the adaptive weight lambda and the disc_start gate.

    lambda = ||grad_GL L_rec|| / (||grad_GL L_GAN|| + 1e-4)      (Eq. 7, GL = the decoder's last layer)
             clamped to [0, 1e4] and detached, then times disc_weight (taming: 0.8)
    L_GAN (generator) = -E[D(x_hat)];  L_D = 1/2 (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))])  (hinge)
Before disc_start both the generator's adversarial term and the discriminator's loss are 0 (taming's `adopt_weight`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """4x4 convs: stride 2 (c_in -> ndf), LeakyReLU 0.2, then `layers - 1` stride-2 and one stride-1 conv with
    BatchNorm, widths ndf * min(2^n, 8), then a stride-1 conv to one logit per patch; weights N(0, 0.02), BatchNorm
    scales N(1, 0.02) (taming's NLayerDiscriminator and weights_init)."""

    def __init__(self, c_in: int, ndf: int = 64, layers: int = 3):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(c_in, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < layers else 1
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                    nn.LeakyReLU(0.2)]
        seq.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*seq)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.normal_(mod.weight, 0.0, 0.02)
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.normal_(mod.weight, 1.0, 0.02)
                nn.init.zeros_(mod.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)                                                     # (B, 1, h, w) patch logits


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """1/2 (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: Tensor) -> Tensor:
    """-mean D(x_hat)."""
    return -logits_fake.mean()


def adaptive_weight(nll: Tensor, g_loss: Tensor, last_layer: Tensor, disc_weight: float) -> Tensor:
    """lambda of Eq. 7 at `last_layer`: ||d nll|| / (||d g_loss|| + 1e-4), clamped to [0, 1e4], detached, times
    disc_weight. Both losses must still have their graphs (retain_graph is used)."""
    g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    lam = g_nll.norm() / (g_adv.norm() + 1e-4)
    return torch.clamp(lam, 0.0, 1e4).detach() * disc_weight


def adopt_weight(weight: float, step: int | None, start: int) -> float:
    """`weight` from step `start` on, 0 before it (and at evaluation, step None, the weight itself)."""
    return weight if step is None or step >= start else 0.0


def perceptual_distance(feats_x: list[Tensor], feats_y: list[Tensor]) -> Tensor:
    """Per-image (B,) LPIPS-style distance without learned layer weights (Zhang et al. 2018, Eq. 1 with w = 1):
    sum over layers of the spatial mean of ||f_x / |f_x| - f_y / |f_y|||^2, features unit-normalised per position."""
    total = 0.0
    for fx, fy in zip(feats_x, feats_y):
        nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + (nx - ny).pow(2).sum(1).flatten(1).mean(1)
    return total
