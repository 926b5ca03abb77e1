"""train.precision=auto: bf16 autocast only where the device has bf16 matrix units (train/precision.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from unigen.config import CHOICES, TrainConfig
from unigen.registry import PRESETS, get_preset
from unigen.train import fit
from unigen.train.precision import PRECISIONS, autocast, emulated_bf16_warning, native_bf16, resolve_precision


@pytest.fixture(params=[False, True], ids=["cpu-without-bf16", "cpu-with-amx"])
def cpu_bf16(request, monkeypatch):
    """Pretend the CPU has (or lacks) bf16 units, through the PyTorch checks native_bf16 reads."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: request.param)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return request.param


def test_auto_is_bf16_exactly_where_it_is_native(cpu_bf16):
    assert native_bf16("cpu") is cpu_bf16
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_bf16 else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"       # explicit is obeyed either way


def test_avx512_bf16_alone_counts_as_native(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp8"):
        resolve_precision("fp8", "cpu")


def test_autocast_computes_a_matmul_in_the_resolved_dtype(cpu_bf16):
    lin = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for precision, expected in [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                ("auto", torch.bfloat16 if cpu_bf16 else torch.float32)]:
        with autocast(precision, "cpu"):
            assert lin(x).dtype == expected, precision


def test_only_an_explicit_emulated_bf16_is_warned_about(cpu_bf16):
    msg = emulated_bf16_warning("bf16", "cpu")
    assert (msg is None) is cpu_bf16
    if msg:
        assert "auto" in msg and "slower" in msg
    assert emulated_bf16_warning("auto", "cpu") is None
    assert emulated_bf16_warning("fp32", "cpu") is None


class _DtypeProbe(nn.Module):
    """A linear model that records the dtype its matmul ran in."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.seen: set[torch.dtype] = set()

    def forward(self, x):
        y = self.lin(x)
        self.seen.add(y.dtype)
        return y


class _Data:
    def __len__(self):
        return 8

    def batch(self, idx):
        return {"x": torch.ones(len(idx), 3)}


@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_fit_trains_in_the_resolved_precision_and_warns_on_emulated_bf16(cpu_bf16, precision, capsys):
    model = _DtypeProbe()
    cfg = TrainConfig(steps=2, batch_size=4, precision=precision, ema_decay=0.0, progress=False)
    fit(model, lambda m, b: m(b["x"]).float().pow(2).mean(), _Data(), cfg)
    bf16 = precision == "bf16" or cpu_bf16
    assert model.seen == {torch.bfloat16 if bf16 else torch.float32}
    warned = "without bf16 matrix units" in capsys.readouterr().err
    assert warned is (precision == "bf16" and not cpu_bf16)


def test_the_config_accepts_exactly_the_precisions_resolve_knows():
    assert set(CHOICES["train.precision"]) == set(PRECISIONS)


def test_no_preset_forces_emulated_bf16():
    """A preset that said bf16 would run 8-50x slower on a CPU without bf16 units (benchmarks kernels table)."""
    assert {get_preset(name).train.precision for name in PRESETS} <= {"auto", "fp32"}
