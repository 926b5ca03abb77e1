"""Same seed, same result on CPU: two trainings give identical loss curves and weights, two samplings identical
files; a different seed gives different ones (so the equalities are not vacuous)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import unigen
from unigen import cli
from unigen.registry import PRESETS, TASKS, get_preset
from unigen.task import samplers

# dropout and EMA on, so the training-noise RNG and the EMA state take part
TRAIN = ["--train.steps=12", "--train.log_every=1", "--train.ckpt_every=5", "--train.ema_decay=0.9",
         "--model.dropout=0.2", "--model.hidden=32", "--train.progress=false"]


def curve(run: Path) -> list[tuple]:
    """Every metric of every line except the wall-clock speed."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [tuple(sorted((k, v) for k, v in d.items() if k != "it_s")) for d in lines]


def weights(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.glob("*.safetensors"))}


def test_same_seed_same_training(tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        runs[name] = tmp_path / name
        assert cli.run(["train", "mlp-digits", "--out", str(runs[name]), *TRAIN, f"--train.seed={seed}"]) == 0
    assert len(curve(runs["a"])) == 12 and set(weights(runs["a"])) == {"model.safetensors", "ema.safetensors"}
    assert curve(runs["a"]) == curve(runs["b"])
    assert weights(runs["a"]) == weights(runs["b"])
    assert unigen.evaluate(runs["a"]) == unigen.evaluate(runs["b"])
    assert curve(runs["a"]) != curve(runs["c"])
    assert all(weights(runs["a"])[k] != weights(runs["c"])[k] for k in weights(runs["a"]))


def test_evaluation_does_not_disturb_training(tmp_path):
    """Evaluating every step (under its own RNG) leaves the training stream, hence the weights, unchanged."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.run(["train", "mlp-digits", "--out", str(a), *TRAIN]) == 0
    assert cli.run(["train", "mlp-digits", "--out", str(b), *TRAIN, "--train.eval_every=1"]) == 0
    assert weights(a) == weights(b)
    assert sum("eval/accuracy" in line for line in (b / "metrics.jsonl").read_text().splitlines()) == 12


# small, fast settings for the default suite; every other preset with a sampler runs under -m slow
FAST_SAMPLING = {"toy2d-edm": ["--train.batch_size=64"],
                 "text-mdlm": ["--data.seq_len=32", "--model.size=tiny", "--train.batch_size=8"],
                 "text-ar": ["--data.seq_len=32", "--model.size=tiny", "--train.batch_size=8"]}
SAMPLING = [p for p in sorted(PRESETS) if samplers(TASKS[get_preset(p).task])]
TIMING = ("second", "per_s", "time", "elapsed")


def _sampling_params():
    params = [pytest.param(p, marks=() if p in FAST_SAMPLING else pytest.mark.slow) for p in SAMPLING]
    return params or [pytest.param(None, marks=pytest.mark.skip(reason="no preset with a sampler is registered"))]


def _without_timing(x):
    """Wall-clock fields (seconds, tokens per second) are the only thing allowed to differ between runs."""
    if isinstance(x, dict):
        return {k: _without_timing(v) for k, v in x.items() if not any(t in k for t in TIMING)}
    if isinstance(x, list):
        return [_without_timing(v) for v in x]
    return x


def sample_files(d: Path) -> dict[str, object]:
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file():
            key = str(p.relative_to(d))
            out[key] = _without_timing(json.loads(p.read_text())) if p.suffix == ".json" else p.read_bytes()
    return out


# two-stage presets read a trained first stage: (its preset, the override that names its run directory)
FIRST_STAGE = {"mnist-vqgan-prior": ("mnist-vqgan", "model.first_stage"),
               "mnist-vqgan-maskprior": ("mnist-vqgan", "model.first_stage"),
               "shapes-ldm": ("shapes-kl", "model.autoencoder")}


@pytest.mark.parametrize("preset", _sampling_params())
def test_same_seed_same_samples(preset, tmp_path):
    run, extra = tmp_path / "run", []
    if preset in FIRST_STAGE:
        first, key = FIRST_STAGE[preset]
        assert cli.run(["train", first, "--out", str(tmp_path / "first"), "--train.steps=2",
                        "--train.progress=false"]) == 0
        extra = [f"--{key}={tmp_path / 'first'}"]
    assert cli.run(["train", preset, "--out", str(run), "--train.steps=2", "--train.progress=false",
                    *FAST_SAMPLING.get(preset, []), *extra]) == 0
    outs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        outs[name] = tmp_path / name
        summary = unigen.sample(run, n=4, steps=4, seed=seed, out_dir=outs[name])
        assert Path(summary["out_dir"]) == outs[name]
    a, b, c = (sample_files(outs[k]) for k in "abc")
    assert a and a == b
    assert a != c
