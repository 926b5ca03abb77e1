"""Shared builders for the normalizing-flow tests: every layer kind with random (non-identity) parameters."""
import torch
from torch import nn

from unigen.families.normalizing_flows.coupling import MLP, ConvNet, Coupling
from unigen.families.normalizing_flows.layers import (ActNorm, DiagonalScaling, Flatten, InvConv1x1, LogitTransform,
                                                      Shift, Squeeze)
from unigen.families.normalizing_flows.network import FlowConfig, build_flow

IMAGE = (4, 4, 4)     # (C, H, W) of the image layers' test inputs
VECTOR = (5,)         # odd, so the two halves of an alternating partition differ in size


def randomize(module: nn.Module, scale: float = 0.3, seed: int = 0) -> nn.Module:
    """Add Gaussian noise to every parameter (zero-initialised last layers would make couplings the identity), mark
    actnorms initialised, switch to eval mode and float64."""
    g = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in module.modules():
            if isinstance(m, ActNorm):
                m.initialized.fill_(1)
    return module.eval()


def _coupling(partition: str, scale: str, parity: int) -> Coupling:
    if partition == "alternate":
        d = VECTOR[0]
        n_in = len(range(parity, d, 2))
        n_out = d - n_in
        return Coupling(MLP(n_in, n_out * (1 if scale == "additive" else 2), 8, 2), VECTOR, partition, parity, scale)
    C = IMAGE[0]
    if partition == "checkerboard":
        n_in, n_out = C, C
    else:
        n_in, n_out = (C // 2, C - C // 2) if parity == 0 else (C - C // 2, C // 2)
    net = ConvNet(n_in, n_out * (1 if scale == "additive" else 2), 6, actnorm=scale == "sigmoid")
    return Coupling(net, IMAGE, partition, parity, scale)


def layer_cases() -> dict[str, tuple[nn.Module, tuple[int, ...], str]]:
    """name -> (layer, one example's shape, input domain: 'real' or 'unit' for [0, 1))."""
    torch.manual_seed(0)
    cases = {
        "actnorm-image": (ActNorm(IMAGE[0]), IMAGE, "real"),
        "actnorm-vector": (ActNorm(VECTOR[0]), VECTOR, "real"),
        "invconv": (InvConv1x1(IMAGE[0]), IMAGE, "real"),
        "invconv-lu": (InvConv1x1(IMAGE[0], lu=True), IMAGE, "real"),
        "invconv-vector": (InvConv1x1(VECTOR[0], lu=True), VECTOR, "real"),
        "squeeze": (Squeeze(), IMAGE, "real"),
        "flatten": (Flatten(IMAGE), IMAGE, "real"),
        "diagonal-scaling": (DiagonalScaling(VECTOR[0]), VECTOR, "real"),
        "shift": (Shift(-0.5), IMAGE, "unit"),
        "logit": (LogitTransform(0.05), IMAGE, "unit"),
    }
    for partition in ("alternate", "checkerboard", "channel"):
        for scale in ("additive", "tanh", "sigmoid"):
            for parity in (0, 1):
                cases[f"coupling-{partition}-{scale}-{parity}"] = (_coupling(partition, scale, parity),
                                                                    VECTOR if partition == "alternate" else IMAGE,
                                                                    "real")
    return {k: (randomize(m, seed=i), s, d) for i, (k, (m, s, d)) in enumerate(cases.items())}


def small_model(arch: str, lu: bool = False, shape=(1, 4, 4), seed: int = 0):
    """A whole multi-scale model (two scales where the arch has them) with random parameters, float64."""
    torch.manual_seed(seed)
    m = FlowConfig(arch=arch, hidden=6, depth=1, couplings=3, levels=2, flow_steps=2, lu=lu)
    return randomize(build_flow(m, shape), seed=seed)
