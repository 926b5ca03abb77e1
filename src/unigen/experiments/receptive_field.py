"""`unigen rf RUN`: the receptive field of every conv stack of a trained run, layer by layer (Araujo et al.), and
with `erf=True` the effective receptive field (Luo et al.) of the first stack on the run's test data, as a picture
RUN/figures/erf.png.

A conv stack is an `nn.Sequential` holding a conv directly, not inside another such stack (the frame CNN of the
action detectors, a classifier's conv trunk); stacks with modules whose receptive field is not a sliding window's
(attention, residual blocks without a `receptive_field()` spec) are reported as such.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from unigen.data import load as load_data
from unigen.errors import UserError
from unigen.metrics.receptive_field import CONVS, Row, effective_rf, format_table, layers_of, rf_table
from unigen.plot import figure
from unigen.run import load, read_config


def conv_stacks(model: nn.Module) -> list[tuple[str, nn.Sequential]]:
    """(name, module) of the outermost Sequentials that hold a conv as a direct child."""
    found: list[tuple[str, nn.Sequential]] = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Sequential) and any(isinstance(c, CONVS) for c in m.children()):
            if not any(name.startswith(f"{outer}.") for outer, _ in found):
                found.append((name, m))
    return found


def erf_picture(stack: nn.Sequential, x: torch.Tensor, row: Row, path: Path) -> Path:
    """Luo et al.'s ERF of `stack`'s centre output unit averaged over images x (B, C, H, W), with the theoretical
    field of that unit (the table's last `row`: centre start + i jump, side r) as a square."""
    erf = effective_rf(stack, x).cpu()
    with torch.no_grad():
        out_hw = stack(x[:1]).shape[-2:]
    (cy, cx) = [row.start[a] + (out_hw[a] // 2) * row.j[a] for a in (0, 1)]
    r = row.r[0]
    with figure(path, size=(4.5, 4)) as ax:
        im = ax.imshow(erf.numpy(), cmap="magma")
        ax.figure.colorbar(im, ax=ax, fraction=0.046)
        half = (r - 1) / 2
        ax.plot([cx - half - 0.5 + dx for dx in (0, r, r, 0, 0)],
                [cy - half - 0.5 + dy for dy in (0, 0, r, r, 0)], color="cyan", lw=1)
        ax.set_title(f"effective RF (|grad|, mean of {len(x)} inputs); square: theoretical r={r}", fontsize=8)
    return path


def rf_report(run_dir: str | Path, erf: bool = False) -> str:
    """The tables of every conv stack of the run's model; with erf=True also RUN/figures/erf.png."""
    run_dir = Path(run_dir)
    model = load(run_dir)
    stacks = conv_stacks(model)
    if not stacks:
        raise UserError(f"the model of {run_dir} has no conv stack (an nn.Sequential of convs) to measure")
    parts, first = [], None
    for name, stack in stacks:
        try:
            rows = rf_table(layers_of(stack))
        except UserError as e:
            parts.append(f"{name}: {e}")
            continue
        parts.append(f"{name}:\n{format_table(rows)}")
        first = first or (stack, rows[-1])
    if erf and first:
        cfg = read_config(run_dir)
        data = load_data(cfg.data, "test")
        x = data.batch(torch.arange(min(64, len(data))))["x"]
        if x.dim() == 5:                                  # streams: frames, with the channels the stack expects
            x = x.flatten(0, 1)[:256]
        c_in = next(m for m in first[0].modules() if isinstance(m, CONVS)).in_channels
        x = x.repeat(1, c_in // x.shape[1], 1, 1) if c_in != x.shape[1] else x   # the frame on every channel
        device = next(model.parameters()).device
        path = erf_picture(first[0], x.to(device), first[1], run_dir / "figures" / "erf.png")
        parts.append(f"effective receptive field: {path}")
    return "\n\n".join(parts)
