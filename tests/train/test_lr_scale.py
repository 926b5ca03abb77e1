"""`Objective.lr_scale`: parameter groups with their own learning rate (DETR's backbone at 1/10). AdamW's first
step moves every weight by lr * g / (|g| + eps), i.e. by the learning rate itself when eps is negligible, so the
first update of each parameter measures its group's learning rate."""
import dataclasses

import pytest
import torch
from torch import nn

from unigen.config import TrainConfig
from unigen.data import Dataset
from unigen.errors import UserError
from unigen.train import Objective, fit


def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    data = Dataset({"x": torch.randn(32, 3), "y": torch.randn(32, 1)}, {})
    loss = lambda m, b: ((m(b["x"]) - b["y"]) ** 2).mean()
    cfg = TrainConfig(steps=1, batch_size=8, lr=1e-3, schedule="constant", weight_decay=0.0, ema_decay=0.0,
                      grad_clip=0.0, progress=False, log_every=1, ckpt_every=1)
    return model, data, loss, cfg


@pytest.mark.parametrize("scale", [0.1, 3.0])
def test_scaled_group_moves_by_its_own_learning_rate(scale, tmp_path):
    model, data, loss, cfg = setup()
    before = [p.detach().clone() for p in model.parameters()]
    obj = Objective("main", loss, lr_scale=lambda m: [(m[0].parameters(), scale)])
    fit(model, [obj], data, cfg, tmp_path / "run")
    steps = [(p.detach() - b).abs() for p, b in zip(model.parameters(), before)]
    for i, step in enumerate(steps):                                            # m[0].weight, .bias, m[1]...
        want = cfg.lr * (scale if i < 2 else 1.0)
        moved = step[step > 0]
        assert len(moved) and torch.allclose(moved, torch.full_like(moved, want), rtol=1e-3)


def test_bad_multiplier_is_a_user_error(tmp_path):
    model, data, loss, cfg = setup()
    obj = Objective("main", loss, lr_scale=lambda m: [(m[0].parameters(), 0.0)])
    with pytest.raises(UserError, match="LR multiplier must be > 0"):
        fit(model, [obj], data, cfg, tmp_path / "run")


def test_resume_keeps_the_multipliers(tmp_path):
    """Two steps straight equal one step, then a resume to two (the multiplier travels in the checkpoint)."""
    model, data, loss, cfg = setup()
    obj = lambda: Objective("main", loss, lr_scale=lambda m: [(m[0].parameters(), 0.1)])
    fit(model, [obj()], data, dataclasses.replace(cfg, steps=2), tmp_path / "straight")
    model2, *_ = setup()
    fit(model2, [obj()], data, cfg, tmp_path / "resumed")
    model3, *_ = setup()
    fit(model3, [obj()], data, dataclasses.replace(cfg, steps=2), tmp_path / "resumed", resume=True)
    for a, b in zip(model.parameters(), model3.parameters()):
        assert torch.equal(a, b)
