"""Resume is bit-exact for a parameter whose strides are transposed (a `w.T`-like view, as a QR factor gives).

torch's optimizer loader gives the AdamW moments the saved (contiguous) layout, and the fused kernel then pairs the
parameter's elements with the wrong moments: before `load_optimizer_state` the resumed weights differed by ~0.04."""
import pathlib

import pytest
import torch
from torch import nn

from unigen.config import TrainConfig
from unigen.data.dataset import Dataset
from unigen.train import fit


class Rotation(nn.Module):
    def __init__(self):
        super().__init__()
        w = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))[0]
        self.w = nn.Parameter(w)                                       # column-major strides (1, 4)

    def forward(self, x):
        return x @ self.w.T


def _loss(m, b):
    return ((m(b["x"]) - 1) ** 2).mean() + 0.1 * torch.linalg.slogdet(m.w)[1] ** 2


def test_resume_is_exact_for_a_parameter_with_transposed_strides(tmp_path: pathlib.Path):
    assert Rotation().w.stride() == (1, 4)
    data = Dataset({"x": torch.randn(64, 4, generator=torch.Generator().manual_seed(1))}, {"shape": (4,)})
    cfg = TrainConfig(steps=4, batch_size=8, lr=0.05, ckpt_every=2, log_every=2, progress=False, ema_decay=0)
    whole = Rotation()
    fit(whole, _loss, data, cfg, tmp_path / "whole")
    calls = [0]

    def crash_at_step_3(m, b):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return _loss(m, b)

    with pytest.raises(KeyboardInterrupt):
        fit(Rotation(), crash_at_step_3, data, cfg, tmp_path / "cut")
    resumed = Rotation()
    fit(resumed, _loss, data, cfg, tmp_path / "cut", resume=True)
    assert torch.equal(resumed.w, whole.w)
