"""CLI smoke tests: a preset on each dataset trains 2 steps through `unigen train`, then `sample` and `eval --json`.

(Every preset of a family is smoke-tested by that family's own tests; here the point is the CLI path per dataset.)"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unigen.cli import main
from unigen.registry import PRESETS, TASKS, get_preset
from unigen.task import samplers

# Small overrides so each preset's smoke run takes seconds; sizes stay the preset's own unless listed.
FAST = ["--train.steps=2", "--train.batch_size=8", "--train.progress=false", "--sample.n=4"]
DATASETS = {"toy2d", "digits", "mnist", "text", "shapes", "words", "mnist-pixels", "scenes", "stream"}
SMOKE = {"toy2d": "toy2d-edm", "digits": "mlp-digits", "mnist": "vit-mnist", "text": "text-mdlm",
         "shapes": "mlp-shapes", "words": "text-word2vec", "mnist-pixels": "mnist-pixel-ar", "scenes": "shapes-detr",
         "stream": "stream-trn"}
SMALLER = {"mnist-pixel-ar": ["--data.image_size=8"]}   # eval scores every test image: 64 pixels each, not 784
SMALLER["shapes-detr"] = ["--data.n_train=64", "--data.image_size=16"]   # eval scores all 1,000 test scenes


def cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code


def test_presets_cover_every_dataset():
    assert {get_preset(name).data.name for name in PRESETS} == DATASETS
    assert {get_preset(p).data.name for p in SMOKE.values()} == DATASETS


@pytest.mark.parametrize("preset", sorted(SMOKE.values()))
def test_preset_trains_two_steps_and_evaluates(preset, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli("train", preset, "--out", str(out), *FAST, *SMALLER.get(preset, [])) == 0
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    capsys.readouterr()
    task = TASKS[get_preset(preset).task]
    if samplers(task):
        assert cli("sample", str(out), "--steps", "2", "--n", "4", "--seed", "1") == 0
        printed = capsys.readouterr().out.strip().splitlines()
        files = printed[-1].split("files: ")[1].rstrip(")").split(", ")   # the last line says where every file is
        assert files and all(Path(f).is_file() for f in files)
        assert any(f.endswith((".png", ".txt")) for f in files)     # something a person can look at
    assert cli("eval", str(out), "--json") == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics and all(isinstance(v, (int, float)) for v in metrics.values())
    assert json.loads((out / "eval_quick.json").read_text()) == metrics and not (out / "eval.json").exists()


def test_eval_full_is_kept_apart_from_quick_looks(tmp_path, capsys):
    """`eval --full` writes RUN/eval.json; a later quick `eval` writes eval_quick.json and leaves it alone."""
    out = tmp_path / "run"
    assert cli("train", "mlp-digits", "--out", str(out), *FAST) == 0
    assert cli("eval", str(out), "--json", "--full") == 0
    full = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cli("eval", str(out)) == 0
    printed = capsys.readouterr()
    assert "--full" in printed.err and printed.out.startswith("accuracy: ")
    assert json.loads((out / "eval.json").read_text()) == full and (out / "eval_quick.json").exists()


def test_dry_run_prints_resolved_config(capsys):
    assert cli("train", "mlp-digits", "--dry-run", "--train.steps=7", "--model.hidden", "33") == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["steps"] == 7 and cfg["model"]["hidden"] == 33 and cfg["preset"] == "mlp-digits"


def test_presets_lists_descriptions(capsys):
    assert cli("presets") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(PRESETS) and all(len(l.split(None, 1)) == 2 for l in lines)


def test_user_error_is_one_line_exit_2():
    r = subprocess.run([sys.executable, "-m", "unigen", "train", "no-such-preset"], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: unknown preset 'no-such-preset'")
    assert "Traceback" not in r.stderr


def test_torchrun_cli_two_processes(tmp_path):
    """`torchrun -m unigen train` runs data-parallel on CPU and writes one run directory."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "unigen", "train", "mlp-digits", "--out", str(out), "--train.steps=4",
                        "--train.progress=false"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "model.safetensors").exists()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [4]  # one writer, not two
