"""Receptive fields of conv stacks: the closed form of Araujo, Norris & Sim, "Computing Receptive Fields of
Convolutional Neural Networks" (Distill 2019), the empirical check by gradient support, and the *effective*
receptive field of Luo et al., "Understanding the Effective Receptive Field in Deep CNNs" (NeurIPS 2016).

Notation, per spatial axis, layer l = 1..L with kernel k_l, stride s_l, padding p_l, dilation d_l (Araujo eq. 1-3):

    k_eff = d (k - 1) + 1                                 the dilated kernel's extent
    r_l   = r_{l-1} + (k_eff - 1) j_{l-1}                 receptive field (input pixels), r_0 = 1
    j_l   = j_{l-1} s_l                                   jump: input pixels between adjacent outputs, j_0 = 1
    start_l = start_{l-1} + ((k_eff - 1) / 2 - p_l) j_{l-1}   centre of output 0's field in input pixels, start_0 = 0

Output unit i of layer l sees input pixels [start_l + i j_l - (r_l - 1) / 2, start_l + i j_l + (r_l - 1) / 2]
(negative indices are padding). Branches that meet (residual sums, concatenations) see the union of their
fields: with aligned branches that is the max of their r (Araujo, "arbitrary computation graphs").

A spec is a `Layer`, a list of specs (applied in order) or `Branches` (specs applied to the same input and then
merged). `layers_of(module)` reads the spec of an `nn.Sequential` of convs, pools and pointwise layers.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import torch
from torch import nn

from unigen.errors import UserError


class Layer(NamedTuple):
    """One sliding-window layer; each field is a tuple with one int per spatial axis."""
    name: str
    k: tuple[int, ...]
    s: tuple[int, ...]
    p: tuple[int, ...]
    d: tuple[int, ...]


class Branches(NamedTuple):
    """Specs applied to the same input whose outputs are merged (summed or concatenated)."""
    name: str
    paths: tuple


Spec = Union[Layer, Branches, Sequence]


class Row(NamedTuple):
    """The receptive field after one layer (per spatial axis)."""
    name: str
    k: tuple
    s: tuple
    p: tuple
    d: tuple
    r: tuple
    j: tuple
    start: tuple


def layer(name: str, k, s=1, p=0, d=1, ndim: int = 2) -> Layer:
    """A `Layer` from ints or tuples (an int is repeated over the `ndim` axes)."""
    def tup(v):
        v = tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * ndim
        if len(v) != ndim:
            raise UserError(f"layer {name!r}: {v} does not give one value per axis ({ndim})")
        return tuple(int(x) for x in v)
    k, s, p, d = tup(k), tup(s), tup(p), tup(d)
    if min(k) < 1 or min(s) < 1 or min(d) < 1 or min(p) < 0:
        raise UserError(f"layer {name!r}: kernel, stride and dilation must be >= 1 and padding >= 0, "
                        f"got k={k} s={s} d={d} p={p}")
    return Layer(name, k, s, p, d)


def k_eff(k: int, d: int) -> int:
    """Dilated kernel extent k_eff = d (k - 1) + 1 (Araujo eq. 1)."""
    return d * (k - 1) + 1


def _step(row: Row, L: Layer) -> Row:
    """Araujo's recurrences for r, j and start through one layer, axis by axis."""
    ke = tuple(k_eff(k, d) for k, d in zip(L.k, L.d))
    r = tuple(r0 + (e - 1) * j0 for r0, e, j0 in zip(row.r, ke, row.j))
    j = tuple(j0 * s for j0, s in zip(row.j, L.s))
    start = tuple(c0 + ((e - 1) / 2 - p) * j0 for c0, e, p, j0 in zip(row.start, ke, L.p, row.j))
    return Row(L.name, L.k, L.s, L.p, L.d, r, j, start)


def _merge(name: str, ends: list[Row]) -> Row:
    """Union of the fields of branches that share an input: r = max over branches when they are aligned."""
    jumps = {e.j for e in ends}
    if len(jumps) != 1:
        raise UserError(f"branches of {name!r} have different jumps {sorted(jumps)}: their outputs do not align")
    left = tuple(min(e.start[a] - (e.r[a] - 1) / 2 for e in ends) for a in range(len(ends[0].r)))
    right = tuple(max(e.start[a] + (e.r[a] - 1) / 2 for e in ends) for a in range(len(ends[0].r)))
    r = tuple(int(round(b - a + 1)) for a, b in zip(left, right))
    start = tuple((a + b) / 2 for a, b in zip(left, right))
    dash = ("-",) * len(r)
    return Row(f"{name} (max of {len(ends)} branches)", dash, dash, dash, dash, r, ends[0].j, start)


def _walk(spec: Spec, row: Row, rows: list[Row], prefix: str) -> Row:
    if isinstance(spec, Layer):
        out = _step(row, spec._replace(name=prefix + spec.name))
        rows.append(out)
        return out
    if isinstance(spec, Branches):
        if not spec.paths:
            raise UserError(f"branches {spec.name!r} have no path")
        ends = [_walk(path, row, rows, f"{prefix}{spec.name}/{i}/") for i, path in enumerate(spec.paths)]
        out = _merge(prefix + spec.name, ends)
        rows.append(out)
        return out
    if isinstance(spec, (list, tuple)):
        for part in spec:
            row = _walk(part, row, rows, prefix)
        return row
    raise UserError(f"a receptive-field spec is a Layer, Branches or a list of them, got {type(spec).__name__}")


def ndim_of(spec: Spec) -> int:
    if isinstance(spec, Layer):
        return len(spec.k)
    parts = spec.paths if isinstance(spec, Branches) else spec
    for part in parts:
        if (n := ndim_of(part)):
            return n
    return 0


def rf_table(spec: Spec) -> list[Row]:
    """Layer-by-layer receptive field, jump and start of `spec` (Araujo eq. 1-3; max over branches).
    The first row is the input (r = 1, j = 1, start = 0)."""
    n = ndim_of(spec)
    if n == 0:
        raise UserError("the receptive-field spec holds no layer")
    one = (1,) * n
    rows = [Row("input", ("-",) * n, ("-",) * n, ("-",) * n, ("-",) * n, one, one, (0.0,) * n)]
    _walk(spec, rows[0], rows, "")
    return rows


def format_table(rows: list[Row]) -> str:
    """The table as aligned text, one line per layer (per-axis values joined by 'x')."""
    def cell(v):
        return "x".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, tuple) else str(v)
    head = ("layer", "k", "s", "p", "d", "r", "jump", "start")
    body = [tuple(cell(v) for v in row) for row in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body])


# ---- reading a spec from a module ---------------------------------------------------------------------------

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
POINTWISE = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Identity, nn.Dropout,
             nn.Dropout2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d)


def _pool_spec(name: str, m: nn.Module) -> Layer:
    nd = int(type(m).__name__[-2])
    dilation = getattr(m, "dilation", 1)
    return layer(name, m.kernel_size, m.stride or m.kernel_size, m.padding, dilation, ndim=nd)


def layers_of(module: nn.Module, prefix: str = "") -> list:
    """The spec of an `nn.Sequential` of convs (1-3-D), max / average pools and pointwise layers (activations,
    norms, dropout), nested Sequentials included. A module with a `receptive_field()` method returning a spec
    (e.g. a residual block's `Branches`) is asked for it. Anything else (attention, linear, transposed conv,
    string padding) is a UserError: its receptive field is not a sliding window's."""
    if hasattr(module, "receptive_field"):
        return [module.receptive_field()]
    if isinstance(module, CONVS):
        if isinstance(module.padding, str):
            raise UserError(f"{prefix or 'conv'}: padding={module.padding!r} is not a number of pixels")
        nd = len(module.kernel_size)
        return [layer(prefix or "conv", module.kernel_size, module.stride, module.padding, module.dilation, nd)]
    if isinstance(module, POOLS):
        return [_pool_spec(prefix or "pool", module)]
    if isinstance(module, POINTWISE):
        return []
    if isinstance(module, nn.Sequential):
        out = []
        for name, child in module.named_children():
            out += layers_of(child, f"{prefix}.{name}" if prefix else name)
        return out
    raise UserError(f"{prefix or 'module'}: {type(module).__name__} is not a conv, pool, pointwise layer or "
                    "Sequential of them; its receptive field is not computed")


# ---- empirical checks ---------------------------------------------------------------------------------------

def gradient_support(net: nn.Module, x: torch.Tensor, index: tuple[int, ...]) -> list[tuple[int, int]]:
    """Per spatial axis, the [first, last] input pixel with a non-zero gradient of the output unit `index`
    (spatial position, channels summed) of `net` at input `x` (1, C, *spatial). With all-ones weights, zero
    biases and no nonlinearity nothing cancels, so this extent equals the formula's field."""
    x = x.detach().clone().requires_grad_(True)
    y = net(x)                                                                   # (1, C', *spatial')
    y[(0, slice(None), *index)].sum().backward()
    g = x.grad[0].abs().sum(0)                                                   # (*spatial)
    nz = torch.nonzero(g > 0)
    if nz.numel() == 0:
        raise UserError("the output unit has no gradient with respect to the input")
    return [(int(nz[:, a].min()), int(nz[:, a].max())) for a in range(g.dim())]


def effective_rf(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Luo et al.'s effective receptive field: |d y_centre / d x| of the centre output unit (channels summed),
    summed over input channels and averaged over the batch x (B, C, H, W) -> (H, W), normalised to max 1."""
    x = x.detach().clone().requires_grad_(True)
    y = net(x)                                                                   # (B, C', H', W')
    if y.dim() != 4:
        raise UserError(f"the effective receptive field needs a (B, C, H, W) feature map, got {tuple(y.shape)}")
    y[:, :, y.shape[2] // 2, y.shape[3] // 2].sum().backward()
    erf = x.grad.abs().sum(1).mean(0)                                            # (H, W)
    return erf / erf.max().clamp_min(1e-30)
