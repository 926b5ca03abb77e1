"""Weight initialisation: pure in-place functions of a tensor (or module), and a plain-dict registry.

Notation:
    W (fan_out, fan_in, *kernel)   torch's layout for Linear and Conv weights
    fan_in  = W.shape[1] * prod(kernel),  fan_out = W.shape[0] * prod(kernel)
    gain g  the factor that keeps the second moment of activations constant through a nonlinearity:
            g = 1 / sqrt(E[f(z)^2]), z ~ N(0, 1)  (ReLU: sqrt(2), He et al. 2015 eq. 10; identity: 1)

Embedding weights (num_embeddings, dim) follow the same rule, so their fan_in is `dim`. ConvTranspose weights
are laid out (in, out, ...) and get torch's convention (dim 0 as fan_out), as torch.nn.init does.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unigen.errors import UserError

INIT_MODULES = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d,
                nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def fans(w: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight laid out (fan_out, fan_in, *kernel); needs at least 2 dims."""
    if w.dim() < 2:
        raise UserError(f"fan_in/fan_out need a weight with at least 2 dims; got shape {tuple(w.shape)}")
    receptive = math.prod(w.shape[2:])
    return w.shape[1] * receptive, w.shape[0] * receptive


@lru_cache(maxsize=None)
def _quadrature_gain(name: str) -> float:
    """g = 1 / sqrt(E[f(z)^2]), z ~ N(0, 1), by 101-point Gauss-Hermite quadrature (exact to ~1e-12 for smooth f)."""
    z, w = np.polynomial.hermite_e.hermegauss(101)  # nodes and weights for the weight exp(-z^2 / 2)
    f = {"silu": F.silu, "gelu": F.gelu, "tanh": torch.tanh}[name]
    second_moment = float((w * f(torch.from_numpy(z)).double().square().numpy()).sum() / math.sqrt(2 * math.pi))
    return 1.0 / math.sqrt(second_moment)


def gain(nonlinearity: str) -> float:
    """Second-moment-preserving gain, He et al. 2015 ("Delving Deep into Rectifiers"), Sec. 2.2, eq. 10.

    linear: 1; relu: sqrt(2) (exactly, since E[relu(z)^2] = 1/2); silu, gelu, tanh: 1 / sqrt(E[f(z)^2]) for
    z ~ N(0, 1), by quadrature (silu ~ 1.68). Note torch.nn.init.calculate_gain('tanh') is the different
    heuristic 5/3.
    """
    if nonlinearity == "linear":
        return 1.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity in ("silu", "gelu", "tanh"):
        return _quadrature_gain(nonlinearity)
    raise UserError(f"unknown nonlinearity {nonlinearity!r} for init gain; choose linear, relu, silu, gelu, tanh")


def _fill(w: Tensor, std: float, distribution: str) -> Tensor:
    with torch.no_grad():
        if distribution == "normal":
            return w.normal_(0.0, std)
        if distribution == "uniform":
            a = math.sqrt(3.0) * std  # U[-a, a] has standard deviation a / sqrt(3)
            return w.uniform_(-a, a)
    raise UserError(f"unknown init distribution {distribution!r}; choose 'normal' or 'uniform'")


def xavier_(w: Tensor, gain: float = 1.0, distribution: str = "normal") -> Tensor:
    """Xavier/Glorot init, Glorot & Bengio 2010, eq. 16: Var = g^2 * 2 / (fan_in + fan_out).

    'uniform' is the paper's U[-a, a], a = g sqrt(6 / (fan_in + fan_out)); 'normal' has the same variance.
    """
    fan_in, fan_out = fans(w)
    return _fill(w, gain * math.sqrt(2.0 / (fan_in + fan_out)), distribution)


def kaiming_(w: Tensor, nonlinearity: str = "relu", distribution: str = "normal", mode: str = "fan_in") -> Tensor:
    """He (Kaiming) init, He et al. 2015, eq. 10: std = gain(nonlinearity) / sqrt(fan_in).

    mode='fan_out' uses fan_out instead (their eq. 14, preserving gradients in the backward pass).
    """
    fan_in, fan_out = fans(w)
    if mode not in ("fan_in", "fan_out"):
        raise UserError(f"unknown kaiming mode {mode!r}; choose 'fan_in' or 'fan_out'")
    fan = fan_in if mode == "fan_in" else fan_out
    return _fill(w, gain(nonlinearity) / math.sqrt(fan), distribution)


def lecun_normal_(w: Tensor) -> Tensor:
    """LeCun init, LeCun et al. 1998 ("Efficient BackProp"), Sec. 4.6: w ~ N(0, 1 / fan_in)."""
    fan_in, _ = fans(w)
    return _fill(w, 1.0 / math.sqrt(fan_in), "normal")


def trunc_normal_(w: Tensor, std: float = 0.02, mean: float = 0.0) -> Tensor:
    """N(mean, std^2) truncated to [mean - 2 std, mean + 2 std] (resampled, not clamped); BERT/ViT init.

    `std` is the parameter of the untruncated normal; the truncated values have standard deviation
    std * sqrt(1 - 4 phi(2) / (2 Phi(2) - 1)) ~ 0.880 std.
    """
    if std <= 0:
        raise UserError(f"trunc_normal_ needs std > 0; got {std}")
    with torch.no_grad():
        return nn.init.trunc_normal_(w, mean=mean, std=std, a=mean - 2 * std, b=mean + 2 * std)


def scaled_residual_init_(linear: nn.Linear, n_layers: int, std: float = 0.02) -> nn.Linear:
    """GPT-2 residual scaling, Radford et al. 2019, Sec. 2.3: weights ~ N(0, (std / sqrt(2 n_layers))^2), bias 0.

    For the projections that write into the residual stream (attention output, MLP output); 2 n_layers counts
    the two residual branches per block.
    """
    if n_layers <= 0:
        raise UserError(f"scaled_residual_init_ needs n_layers > 0; got {n_layers}")
    _fill(linear.weight, std / math.sqrt(2 * n_layers), "normal")
    if linear.bias is not None:
        zero_init_(linear.bias)
    return linear


def zero_init_(module: nn.Module | Tensor) -> nn.Module | Tensor:
    """Set every parameter (or the tensor) to zero, e.g. the last layer of a residual branch so that the block
    starts as the identity (Goyal et al. 2017, Sec. 5.1; Peebles & Xie 2023, adaLN-Zero)."""
    with torch.no_grad():
        if isinstance(module, Tensor):
            return module.zero_()
        for p in module.parameters():
            p.zero_()
    return module


def _normal_(w: Tensor, std: float = 0.02) -> Tensor:
    """Plain N(0, std^2) (GPT-2's 0.02), for schemes that name a fixed std."""
    return _fill(w, std, "normal")


INIT_SCHEMES = {
    "trunc_normal": trunc_normal_,
    "normal": _normal_,
    "xavier": xavier_,
    "kaiming": kaiming_,
    "lecun_normal": lecun_normal_,
}


def init_weights(model: nn.Module, scheme: str = "trunc_normal", **kw) -> nn.Module:
    """Apply INIT_SCHEMES[scheme](weight, **kw) to every Linear/Embedding/Conv weight; zero their biases.

    Other parameters (norm scales, learned biases of other modules) are left alone. Returns the model.
    """
    if scheme not in INIT_SCHEMES:
        raise UserError(f"unknown init scheme {scheme!r}; choose one of {sorted(INIT_SCHEMES)}")
    fn = INIT_SCHEMES[scheme]
    for m in model.modules():
        if isinstance(m, INIT_MODULES):
            fn(m.weight, **kw)
            if getattr(m, "bias", None) is not None:
                zero_init_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
    return model
