"""Which floating-point precision to compute in: `train.precision` is "fp32", "bf16" (autocast) or "auto".

bf16 autocast pays only where the hardware has bf16 matrix units. On a CPU without them PyTorch emulates bf16 and
it is far slower than fp32: on an AVX2-only AMD EPYC, a 512 x 512 matmul ran 58x, a 3 x 3 convolution 24x and a
whole mnist-fm training step 8x slower in bf16 (`python -m benchmarks kernels --match "bf16 autocast"`), while on
a CPU with AMX a bf16 matmul runs about 5x faster than fp32. So the presets say "auto": bf16 where it is native
(a CUDA GPU that supports it; an x86 CPU with AMX or AVX512-BF16), fp32 elsewhere. An explicit "bf16" is obeyed
everywhere, with a warning where it is emulated. Callers resolve once (`resolve_precision`) outside their loops.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` has bf16 matrix units, so that bf16 autocast is faster than fp32 there."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # PyTorch's own CPU feature checks (the same ones its oneDNN kernels dispatch on)
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False  # mps, xpu, ...: not measured here; fp32 is the safe choice


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """"fp32" or "bf16": what `precision` means on `device` ("auto" picks bf16 only where it is native)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def emulated_bf16_warning(precision: str, device: torch.device | str) -> str | None:
    """The warning for an explicit "bf16" on a device that only emulates it, else None."""
    if precision != "bf16" or native_bf16(device):
        return None
    return (f"train.precision=bf16 on a {torch.device(device).type} without bf16 matrix units: autocast is emulated "
            f"and runs many times slower than fp32 here (use train.precision=auto or fp32)")


def autocast(precision: str, device: torch.device | str):
    """A context manager computing in `precision` ("auto" resolved for `device`) on `device`."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
