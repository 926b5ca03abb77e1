"""The generic loop: exact resume, checkpoint round trip, LR schedule, EMA, accumulation, non-finite guard."""
import json

import pytest
import torch
from torch import nn

from unigen.config import TrainConfig
from unigen.errors import NonFiniteError, UserError
from unigen.train import fit, lr_at
from unigen.train import checkpoint as ckpt


class Regression:
    """A tiny in-memory Dataset (same interface as unigen.data's)."""

    def __init__(self, n=256, d=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.tensors = {"x": torch.randn(n, d, generator=g)}
        self.tensors["y"] = self.tensors["x"] @ torch.randn(d, 1, generator=g) + 0.1
        self.info = {"dim": d}

    def __len__(self):
        return len(self.tensors["x"])

    def batch(self, idx):
        return {k: v[idx] for k, v in self.tensors.items()}


def noisy_loss(model, batch):
    """Uses the global RNG like a diffusion loss (noise + dropout), so resume must restore RNG state."""
    x = batch["x"] + 0.1 * torch.randn_like(batch["x"])
    return ((model(x) - batch["y"]) ** 2).mean()


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.Dropout(0.1), nn.GELU(), nn.Linear(32, 1))


def cfg(**kw):
    base = dict(steps=20, batch_size=16, lr=1e-2, warmup_steps=3, ema_decay=0.9, log_every=5, ckpt_every=10,
                progress=False, grad_clip=1.0)
    base.update(kw)
    return TrainConfig(**base)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_is_bit_exact(tmp_path):
    data = Regression()
    straight = make_model()
    fit(straight, noisy_loss, data, cfg(), tmp_path / "a")
    # the same 20-step run crashes in step 13 (last checkpoint: step 10), then resumes to 20
    calls = {"n": 0}

    class Crash(Exception):
        pass

    def crashing(m, b):
        calls["n"] += 1
        if calls["n"] == 13:
            raise Crash
        return noisy_loss(m, b)

    with pytest.raises(Crash):
        fit(make_model(), crashing, data, cfg(), tmp_path / "b")
    resumed = make_model(seed=123)  # weights come from the checkpoint, not from the init
    fit(resumed, noisy_loss, data, cfg(), tmp_path / "b", resume=True)
    for k, v in state(straight).items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    ema_a = ckpt.load_safetensors(tmp_path / "a" / "ema.safetensors")
    ema_b = ckpt.load_safetensors(tmp_path / "b" / "ema.safetensors")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    # the metrics file reads as one run
    steps = [json.loads(l)["step"] for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20]


def test_checkpoint_round_trip(tmp_path):
    data = Regression()
    model = make_model()
    fit(model, noisy_loss, data, cfg(steps=4, ckpt_every=2, keep_last=1), tmp_path)
    dirs = ckpt.checkpoint_dirs(tmp_path)
    assert [d.name for d in dirs] == ["step_0000004"]  # keep_last=1
    st, files = ckpt.read_checkpoint(dirs[-1])
    assert st["step"] == 4 and set(files) == {"model", "ema", "optimizer", "rng"}
    fresh = make_model(seed=5)
    ckpt.load_weights_into(fresh, tmp_path / "model.safetensors")
    x = torch.randn(3, 8)
    model.eval(), fresh.eval()
    assert torch.equal(model(x), fresh(x))


def test_corrupt_checkpoint_is_detected(tmp_path):
    fit(make_model(), noisy_loss, Regression(), cfg(steps=2, ckpt_every=2), tmp_path)
    d = ckpt.latest_checkpoint(tmp_path)
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(UserError, match="truncated or altered"):
        ckpt.read_checkpoint(d)
    with pytest.raises(UserError, match="does not match this model"):
        ckpt.load_weights_into(nn.Linear(3, 3), tmp_path / "model.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable safetensors"):
        ckpt.load_safetensors(tmp_path / "junk.safetensors")


def test_lr_schedule():
    c = TrainConfig(steps=100, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert lr_at(0, c) == pytest.approx(0.1) and lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(10, c) == pytest.approx(1.0)
    assert lr_at(55, c) == pytest.approx(0.1 + 0.9 * 0.5)  # cosine midpoint
    assert lr_at(100, c) == pytest.approx(0.1)


def test_grad_accum_equals_big_batch():
    """accum=2 at batch 8 equals batch 16 (deterministic loss, no dropout, no clipping)."""
    data = Regression()

    def loss(m, b):
        return ((m(b["x"]) - b["y"]) ** 2).mean()

    torch.manual_seed(0)
    a = nn.Linear(8, 1)
    b = nn.Linear(8, 1)
    b.load_state_dict(a.state_dict())
    fit(a, loss, data, cfg(steps=6, batch_size=16, grad_clip=0, ema_decay=0))
    fit(b, loss, data, cfg(steps=6, batch_size=8, grad_accum=2, grad_clip=0, ema_decay=0))
    assert torch.allclose(a.weight, b.weight, atol=1e-6)


def test_nonfinite_stop_keeps_last_checkpoint(tmp_path):
    data = Regression()
    calls = {"n": 0}

    def poisoned(m, b):
        calls["n"] += 1
        out = noisy_loss(m, b)
        return out * float("nan") if calls["n"] == 5 else out

    with pytest.raises(NonFiniteError, match="step 5"):
        fit(make_model(), poisoned, data, cfg(steps=10, ckpt_every=2), tmp_path)
    st, _ = ckpt.read_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert st["step"] == 4


def test_nonfinite_skip():
    data = Regression()
    calls = {"n": 0}

    def poisoned(m, b):
        calls["n"] += 1
        out = noisy_loss(m, b)
        return out * float("inf") if calls["n"] == 3 else out

    model = make_model()
    res = fit(model, poisoned, data, cfg(steps=6, nonfinite="skip"))
    assert res.skipped == 1 and all(torch.isfinite(p).all() for p in model.parameters())


def test_batch_bigger_than_dataset_is_user_error():
    with pytest.raises(UserError, match="fewer than one global batch"):
        fit(make_model(), noisy_loss, Regression(n=8), cfg(batch_size=16))


def test_one_loss_keeps_its_formats_and_equals_one_objective(tmp_path):
    """A plain loss is the objective "main": metric keys, checkpoint files and state.json keys as before the
    multi-objective loop; a one-element list of Objective trains the same weights; hooks get the EMA in eval mode."""
    from unigen.train import Objective

    seen = []
    a, b = make_model(), make_model()
    fit(a, noisy_loss, Regression(), cfg(steps=4, ckpt_every=4), tmp_path / "a",
        on_eval=lambda m, step: seen.append((m is not a, m.training)) or {})
    fit(b, [Objective("anything", noisy_loss)], Regression(), cfg(steps=4, ckpt_every=4), tmp_path / "b")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    lines = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert list(lines[0]) == ["step", "loss", "lr", "grad_norm", "it_s", "skipped"]
    st, files = ckpt.read_checkpoint(ckpt.latest_checkpoint(tmp_path / "b"))
    assert set(files) == {"model", "ema", "optimizer", "rng"}
    assert set(st) == {"format", "step", "files", "skipped", "world_size", "optimizer", "ema_updates"}
    assert seen == [(True, False)]  # the EMA copy, in eval mode
