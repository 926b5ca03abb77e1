"""experiments/trajectory.py: the demo's denoising and unmasking pictures, recorded with Task.sample's callback on
tiny trained runs, checked against what the sampler returned."""
import json
import re

import pytest
import torch
from safetensors.torch import load_file

from unigen.config import apply_overrides
from unigen.data import load_tokenizer
from unigen.errors import UserError
from unigen.experiments.trajectory import (Recorder, evenly, image_trajectory, save_image_trajectory,
                                           save_text_trajectory, text_trajectory)
from unigen.registry import get_preset
from unigen.run import sample, train

FAST = ["train.steps=2", "train.batch_size=8", "train.progress=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trajectory")
    train(apply_overrides(get_preset("mnist-fm"), FAST + ["model.width=8", "model.depth=1"]), root / "image")
    train(apply_overrides(get_preset("text-mdlm"), FAST + ["data.seq_len=32", "model.size=tiny"]), root / "text")
    return root


def test_evenly_spreads_rows_and_keeps_the_ends():
    assert evenly(18, 6) == [0, 3, 7, 10, 14, 17]
    assert evenly(3, 6) == [0, 1, 2]
    assert evenly(5, 1) == [4]
    with pytest.raises(UserError):
        evenly(0, 3)


def test_image_trajectory_ends_on_the_final_sample(runs, tmp_path):
    rec = Recorder()
    out = sample(runs / "image", n=5, steps=7, seed=3, out_dir=tmp_path / "s", callback=rec)
    final = load_file(out["samples"])["x"]                                       # (5, 1, 28, 28)
    assert len(rec.reports) == 7
    grid, sigmas = image_trajectory(rec.reports, rows=4, k=3)
    assert grid.shape == (4 * 2 * 3, 1, 28, 28)
    assert sigmas[-1] == 0 and all(a > b for a, b in zip(sigmas, sigmas[1:]))   # decreasing noise, row by row
    assert torch.equal(grid[-6:-3], final[:3].clamp(-1, 1))                      # last row's x_t: the samples
    assert torch.equal(grid[-3:], rec.reports[-1]["denoised"][:3].float().clamp(-1, 1))   # then its x0 estimate
    assert torch.equal(grid[3:6], rec.reports[0]["denoised"][:3].float().clamp(-1, 1))
    written = save_image_trajectory(rec.reports, tmp_path / "t.png", rows=4, k=3)
    assert (tmp_path / "t.png").stat().st_size > 0 and written["sigmas"][-1] == 0


def test_text_trajectory_unmasks_to_the_final_text(runs, tmp_path):
    rec = Recorder()
    out = sample(runs / "text", sampler="mdlm", n=3, seed=1, out_dir=tmp_path / "s", callback=rec)
    record = json.loads(open(out["json"], encoding="utf-8").read())
    snaps = text_trajectory(rec.reports, load_tokenizer(runs / "text").decode, snapshots=5)
    masked = [s["masked"] for s in snaps]
    assert masked[0] > 0 and masked[-1] == 0
    assert all(a >= b for a, b in zip(masked, masked[1:]))
    assert snaps[-1]["tokens"] == record["tokens"]                               # the final canvas is the sample
    assert all(step is not None for row in snaps[-1]["rows"] for _, step in row)
    page = save_text_trajectory(snaps, tmp_path / "t.html", title="t")
    html = open(page, encoding="utf-8").read()
    blanks = [len(re.findall('class="m"', part)) for part in html.split("<h3>")[1:]]
    assert blanks == masked                                                      # one blank per masked position


def test_trajectories_refuse_the_other_kind_of_reports(runs, tmp_path):
    rec = Recorder()
    sample(runs / "text", sampler="mdlm", n=1, seed=0, out_dir=tmp_path / "s", callback=rec)
    with pytest.raises(UserError):
        image_trajectory(rec.reports)
    with pytest.raises(UserError):
        text_trajectory([], str)


def test_demo_text_quality_reads_samples_and_heldout_text(runs, tmp_path):
    from unigen.experiments.demo import text_quality
    out = sample(runs / "text", sampler="mdlm", n=2, seed=0, out_dir=tmp_path / "s")
    got = text_quality(runs / "text", json.loads(open(out["json"], encoding="utf-8").read()))
    assert 0 <= got["real_word_fraction"] <= 1 and got["words"] >= 0
    assert got["real_word_fraction_heldout"] > 0.5        # held-out English: most words are training-split words
    assert 0 < got["unigram_entropy"] <= torch.log(torch.tensor(32.0)) + 1e-6          # at most log(L) nats
    assert 0 < got["unigram_entropy_heldout"] <= torch.log(torch.tensor(32.0)) + 1e-6


@pytest.mark.slow
def test_demo_writes_trajectories_and_summary(tmp_path, monkeypatch):
    """The whole demo on tiny settings: its files exist and metrics.json's summary holds the issue's numbers."""
    from unigen.experiments import demo
    monkeypatch.setattr(demo, "IMAGE", ("mnist-fm", FAST + ["model.width=8", "model.depth=1"], {"n": 8}))
    monkeypatch.setattr(demo, "TEXT", ("text-mdlm", FAST + ["data.seq_len=32", "model.size=tiny"],
                                       {"sampler": "mdlm", "n": 4}))
    demo.run_demo(tmp_path)
    for name in ("mnist_samples.png", "image_trajectory.png", "text_trajectory.html", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 0
    summary = json.loads((tmp_path / "metrics.json").read_text())["summary"]
    assert summary["fd"] > summary["fd_data"] > 0
    assert 0 <= summary["real_word_fraction"] <= 1 and summary["real_word_fraction_heldout"] > 0.5
    assert summary["bits_per_byte"] > 0 and summary["unigram_entropy_heldout"] > 0
