"""The model config of the normalizing-flow family and the three architectures built from it.

    nice     Dinh et al. 2015: `couplings` additive couplings (MLP `depth` x `hidden`) on alternating halves of
             the flattened image, then the diagonal scaling exp(s); logistic prior. Data y in [0, 1).
    realnvp  Dinh et al. 2017, Sec. 3.6 / 4.1: logit(alpha + (1 - 2 alpha) y); per scale 3 checkerboard affine
             couplings, squeeze, 3 channel couplings, factor out half; the last scale 4 checkerboard couplings;
             N(0, I) prior. Scale through c tanh(.).
    glow     Kingma & Dhariwal 2018, Fig. 2: y - 1/2; per level squeeze, K x (actnorm, 1x1 conv, affine coupling
             with sigmoid(h + 2)), then split with a learned conditional prior; learned top prior.

On vectors (toy2d) the same three stack `couplings` layers with MLP networks in one scale (Glow: K = couplings
steps of actnorm, a 2x2 "1x1 conv" and a coupling).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from unigen.errors import UserError
from unigen.families.normalizing_flows.coupling import MLP, ConvNet, Coupling
from unigen.families.normalizing_flows.layers import (ActNorm, DiagonalScaling, Flatten, InvConv1x1,
                                                      LogitTransform, Shift, Squeeze)
from unigen.families.normalizing_flows.model import FlowModel
from unigen.families.normalizing_flows.priors import LearnedPrior, SplitPrior, StandardPrior

ARCHS = ("nice", "realnvp", "glow")
PRIORS = {"nice": "logistic", "realnvp": "gaussian", "glow": "learned"}
PREPROCESS = {"nice": "none", "realnvp": "logit", "glow": "shift"}


@dataclass
class FlowConfig:
    arch: str = "glow"          # nice | realnvp | glow
    hidden: int = 64            # width of the coupling networks (MLP units; conv channels on images)
    depth: int = 3              # nice and toy2d: hidden layers of each coupling MLP
    couplings: int = 4          # nice and toy2d: coupling layers (toy2d glow: flow steps)
    levels: int = 2             # realnvp / glow on images: scales L (the image side must divide by 2^L)
    flow_steps: int = 8         # glow on images: steps K per level
    lu: bool = False            # glow: LU-decomposed 1x1 convolution
    prior: str = ""             # gaussian | logistic | learned ("" = the paper's: nice logistic, realnvp
                                # gaussian, glow learned)
    n_bits: int = 8             # images: bits per pixel of the modelled data (n_bins = 2^n_bits; Glow also used 5)
    preprocess: str = ""        # images: none | shift (y - 1/2) | logit ("" = the paper's: nice none, realnvp
                                # logit, glow shift)
    logit_alpha: float = 0.05   # alpha of the logit pre-processing
    temperature: float = 1.0    # default sampling temperature (`unigen sample --temperature` overrides)


def check(m: FlowConfig) -> None:
    """UserError for a value out of range."""
    if m.arch not in ARCHS:
        raise UserError(f"model.arch={m.arch!r} is not one of: {', '.join(ARCHS)}")
    if m.prior not in ("", "gaussian", "logistic", "learned"):
        raise UserError(f"model.prior={m.prior!r} is not one of: gaussian, logistic, learned (or '' for the paper's)")
    for name in ("hidden", "depth", "couplings", "levels", "flow_steps"):
        if getattr(m, name) < 1:
            raise UserError(f"model.{name} must be >= 1, got {getattr(m, name)}")
    if m.preprocess not in ("", "none", "shift", "logit"):
        raise UserError(f"model.preprocess={m.preprocess!r} is not one of: none, shift, logit (or '' for the paper's)")
    if not 1 <= m.n_bits <= 8:
        raise UserError(f"model.n_bits must be in 1..8, got {m.n_bits}")
    if not 0 <= m.logit_alpha < 0.5:
        raise UserError(f"model.logit_alpha must be in [0, 0.5), got {m.logit_alpha}")
    if m.temperature <= 0:
        raise UserError(f"model.temperature must be > 0, got {m.temperature}")


def build_flow(m: FlowConfig, shape: tuple[int, ...]) -> FlowModel:
    """The flow of `m` for examples of `shape`: (D,) vectors or (C, H, W) images."""
    check(m)
    shape = tuple(shape)
    if len(shape) == 1:
        layers = vector_layers(m, shape[0])
        return FlowModel([layers], [_prior(m, shape, top=True)], shape)
    if len(shape) != 3:
        raise UserError(f"normalizing flows model vectors (D,) or images (C, H, W), got examples of shape {shape}")
    if m.arch == "nice":
        d = shape[0] * shape[1] * shape[2]
        layers = [*_preprocess(m), Flatten(shape), *vector_layers(m, d)]
        return FlowModel([layers], [_prior(m, (d,), top=True)], shape)
    squeezes = m.levels if m.arch == "glow" else m.levels - 1
    if shape[1] % 2 ** squeezes or shape[2] % 2 ** squeezes:
        raise UserError(f"model.levels={m.levels}: {m.arch} squeezes {squeezes} times, so the image side must "
                        f"divide by {2 ** squeezes}; got {shape[1]}x{shape[2]} (lower model.levels)")
    scales, priors = (_glow if m.arch == "glow" else _realnvp)(m, shape)
    scales[0][:0] = _preprocess(m)
    return FlowModel(scales, priors, shape)


def _preprocess(m: FlowConfig) -> list[nn.Module]:
    """The map from dequantised pixels y in [0, 1) to the flow's input (its log|det| counts in bits/dim)."""
    kind = m.preprocess or PREPROCESS[m.arch]
    return {"none": [], "shift": [Shift(-0.5)], "logit": [LogitTransform(m.logit_alpha)]}[kind]


def vector_layers(m: FlowConfig, d: int) -> list[nn.Module]:
    """One scale of `m.couplings` couplings on (B, d) vectors, alternating halves."""
    if d < 2:
        raise UserError(f"a coupling flow needs at least 2 dimensions, got {d}")
    d_a, d_b = (d + 1) // 2, d // 2          # sizes of the two halves for parity 0; swapped for parity 1
    layers: list[nn.Module] = []
    for i in range(m.couplings):
        parity = i % 2 if m.arch != "glow" else 0
        n_in, n_out = (d_a, d_b) if parity == 0 else (d_b, d_a)
        if m.arch == "nice":
            layers.append(Coupling(MLP(n_in, n_out, m.hidden, m.depth), (d,), "alternate", parity, "additive"))
            continue
        net = MLP(n_in, 2 * n_out, m.hidden, m.depth)
        if m.arch == "glow":
            layers += [ActNorm(d), InvConv1x1(d, m.lu)]
        layers.append(Coupling(net, (d,), "alternate", parity, "tanh" if m.arch == "realnvp" else "sigmoid"))
    if m.arch == "nice":
        layers.append(DiagonalScaling(d))
    return layers


def _prior(m: FlowConfig, shape: tuple[int, ...], top: bool, c_cond: int = 0) -> nn.Module:
    kind = m.prior or PRIORS[m.arch]
    if kind != "learned":
        return StandardPrior(kind)
    return LearnedPrior(shape) if top else SplitPrior(c_cond, shape[0])


def _realnvp(m: FlowConfig, shape: tuple[int, int, int]):
    C, H, W = shape
    scales, priors = [], []
    for s in range(m.levels):
        layers: list[nn.Module] = []
        last = s == m.levels - 1
        for i in range(4 if last else 3):
            net = ConvNet(C, 2 * C, m.hidden, actnorm=False)
            layers.append(Coupling(net, (C, H, W), "checkerboard", i % 2, "tanh"))
        if not last:
            layers.append(Squeeze())
            C, H, W = 4 * C, H // 2, W // 2
            for i in range(3):
                n_in, n_out = (C // 2, C - C // 2) if i % 2 == 0 else (C - C // 2, C // 2)
                layers.append(Coupling(ConvNet(n_in, 2 * n_out, m.hidden, actnorm=False), (C, H, W), "channel",
                                       i % 2, "tanh"))
            priors.append(_prior(m, (C - C // 2, H, W), top=False, c_cond=C // 2))
            C = C // 2
        scales.append(layers)
    priors.append(_prior(m, (C, H, W), top=True))
    return scales, priors


def _glow(m: FlowConfig, shape: tuple[int, int, int]):
    C, H, W = shape
    scales, priors = [], []
    for level in range(m.levels):
        layers: list[nn.Module] = [Squeeze()]
        C, H, W = 4 * C, H // 2, W // 2
        for _ in range(m.flow_steps):
            net = ConvNet(C // 2, 2 * (C - C // 2), m.hidden, actnorm=True)
            layers += [ActNorm(C), InvConv1x1(C, m.lu), Coupling(net, (C, H, W), "channel", 0, "sigmoid")]
        if level < m.levels - 1:
            priors.append(_prior(m, (C - C // 2, H, W), top=False, c_cond=C // 2))
            C = C // 2
        scales.append(layers)
    priors.append(_prior(m, (C, H, W), top=True))
    return scales, priors
