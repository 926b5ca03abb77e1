"""Run directories written before the package was re-laid out (commit 711c073, `tests/data/legacy_runs/`) still
load, sample the same numbers, evaluate, and resume.

The three runs are tiny (2 steps): toy2d-edm (MLP width 16, with EMA and checkpoints), mlp-digits (hidden 16, no
EMA) and text-ar (byte tokenizer, no checkpoints). `expected/` holds what the old code sampled from them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unigen import run
from unigen.config import apply_overrides
from unigen.errors import UserError

LEGACY = Path(__file__).parent / "data" / "legacy_runs"


@pytest.fixture
def legacy(tmp_path):
    """A writable copy of the legacy runs (evaluation and resuming write into the run directory)."""
    shutil.copytree(LEGACY, tmp_path / "runs")
    return tmp_path / "runs"


def test_old_config_files_load_with_their_meaning(legacy):
    cfg = run.read_config(legacy / "toy2d-edm")
    assert (cfg.task, cfg.preset, cfg.data.name, cfg.data.toy) == ("diffusion", "toy2d-edm", "toy2d", "checkerboard")
    assert (cfg.model.width, cfg.model.depth, cfg.train.steps) == (16, 1, 2)
    assert run.read_config(legacy / "text-ar").data.seq_len == 16


def test_old_diffusion_run_samples_what_the_old_code_sampled(legacy, tmp_path):
    run.sample(legacy / "toy2d-edm", steps=4, n=8, seed=3, out_dir=tmp_path / "s")
    new = load_file(tmp_path / "s" / "samples.safetensors")["x"]
    old = load_file(LEGACY / "expected" / "toy2d-edm-heun4-seed3.safetensors")["x"]
    torch.testing.assert_close(new, old, rtol=0, atol=0)


def test_old_text_run_generates_the_same_tokens(legacy, tmp_path):
    out = run.sample(legacy / "text-ar", n=2, seed=3, out_dir=tmp_path / "t")
    got = json.loads(Path(out["json"]).read_text())
    want = json.loads((LEGACY / "expected" / "text-ar-seed3.json").read_text())
    assert (got["sampler"], got["steps"], got["tokens"]) == (want["sampler"], want["steps"], want["tokens"])


def test_old_classifier_run_evaluates(legacy):
    metrics = run.evaluate(legacy / "mlp-digits")
    assert metrics["accuracy"] == pytest.approx(0.1)                 # what the old code measured
    assert set(metrics) == {"accuracy", "macro_f1"}                  # macro-F1 came later, for the surrogate losses


@pytest.mark.parametrize("name", ["toy2d-edm", "mlp-digits"])
def test_old_run_resumes_from_its_checkpoint(legacy, name):
    cfg = apply_overrides(run.read_config(legacy / name), ["train.steps=3", "train.progress=false"])
    result = run.train(cfg, legacy / name, resume=True)
    assert result.step == 3
    assert (legacy / name / "checkpoints" / "step_0000003").is_dir()


def test_an_old_run_with_a_changed_meaning_fails_in_one_line(legacy):
    path = legacy / "mlp-digits" / "config.json"
    d = json.loads(path.read_text())
    d["data"]["toy"] = "rings"             # a field digits never had, set to a non-default value
    path.write_text(json.dumps(d))
    with pytest.raises(UserError) as e:
        run.read_config(legacy / "mlp-digits")
    assert "\n" not in str(e.value) and "toy" in str(e.value)
