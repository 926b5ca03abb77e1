"""The per-step hooks the page streams from: `Task.sample(callback=...)` of both diffusion families reports every
step and changes no number (the same samples with and without it, the last report equal to the output)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from unigen.data import load_tokenizer
from unigen.io import read_json
from unigen.run import _untuple, get_task, load, read_config


def _sample(run_dir, out_dir, cfg=None, model=None, **kw):
    cfg = cfg or read_config(run_dir)
    task = get_task(cfg.task)
    if model is None:
        model = load(run_dir)
    with torch.no_grad():
        return task.sample(model, cfg, run_dir=run_dir, out_dir=out_dir, seed=5, **kw)


def keep(reports: list):
    """A callback that keeps copies (samplers may update their tensors in place after the call)."""
    return lambda r: reports.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in r.items()})


def test_diffusion_callback_reports_each_step_and_changes_nothing(runs_root, tmp_path):
    run = runs_root / "mnist"
    reports = []
    _sample(run, tmp_path / "plain", n=3, sampler="euler", steps=4)
    _sample(run, tmp_path / "hooked", n=3, sampler="euler", steps=4, callback=keep(reports))
    plain, hooked = (load_file(tmp_path / d / "samples.safetensors")["x"] for d in ("plain", "hooked"))
    assert torch.equal(plain, hooked)
    assert [r["i"] for r in reports] == [0, 1, 2, 3]
    assert [r["sigma"] for r in reports] == sorted((r["sigma"] for r in reports), reverse=True)
    assert torch.equal(reports[-1]["x"].float(), hooked) and reports[-1]["denoised"].shape == hooked.shape


@pytest.mark.parametrize("method,sampler", [("mdlm", "llada"), ("mdlm", "mdlm"), ("ar", "ar"), ("bd3", "bd3")])
def test_discrete_callback_sees_the_prompt_and_generated_columns_and_changes_nothing(runs_root, tmp_path, method,
                                                                                      sampler):
    """AR's canvas starts with BOS and BD3's is padded to whole blocks: the callback sees neither, only what
    `sample` returns, and its last canvas is the output."""
    run = runs_root / "text"
    cfg = read_config(run)
    cfg = replace(cfg, task=method, model=replace(cfg.model, block_size=4, time_cond=method != "ar"))
    torch.manual_seed(0)
    model = get_task(method).build(cfg, _untuple(read_json(run / "data_info.json"))).eval()
    prompt = "The "
    p = len(load_tokenizer(run).encode(prompt))
    kw = dict(n=2, sampler=sampler, steps=0, prompt=prompt, length=7)
    reports = []
    _sample(run, tmp_path / "plain", cfg, model, **kw)
    summary = _sample(run, tmp_path / "hooked", cfg, model, callback=keep(reports), **kw)
    plain, hooked = (json.loads((tmp_path / d / "samples.json").read_text())["tokens"] for d in ("plain", "hooked"))
    assert plain == hooked
    assert [r["i"] for r in reports] == list(range(len(reports))) and len(reports) >= summary["steps"] // 2
    assert all(r["canvas"].shape == (2, p + 7) and r["prompt_tokens"] == p for r in reports)
    assert reports[-1]["canvas"].tolist() == hooked
    mask = reports[0]["mask_id"]
    assert all((r["canvas"][:, :p] != mask).all() for r in reports) and (reports[0]["canvas"][:, p:] == mask).any()
