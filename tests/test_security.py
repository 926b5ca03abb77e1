"""No code runs from files: weights are read only as safetensors, everything else as JSON.

Malicious pickles (unpickling them creates a marker file through `__reduce__` -> os.system) are planted in a run
directory under every name a loader might try; load, sample, eval and resume must never execute one (the marker
never appears) and must give a clear error where the planted file takes the place of a required one. A positive
control shows each payload does fire when unpickled, so the test is not vacuous. A source scan checks that nothing
in src/ unpickles.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

import unigen
from unigen import cli
from unigen.errors import UserError
from unigen.registry import PRESETS
from unigen.train import checkpoint as ckpt

SRC = Path(__file__).resolve().parents[1] / "src" / "unigen"


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps({"state_dict": Payload(marker)})


def torch_pickle(path: Path, marker: Path) -> None:
    torch.save({"model": Payload(marker)}, path)  # a zip with data.pkl, what `torch.load` reads


RUNS = {"mlp-digits": ["--model.hidden=16"], "toy2d-edm": ["--model.size=tiny", "--train.batch_size=64"]}


@pytest.fixture(scope="module", params=[p for p in RUNS if p in PRESETS])
def trained(tmp_path_factory, request) -> Path:
    """A classifier run and, when registered, a diffusion run (so `sample` really loads weights)."""
    run = tmp_path_factory.mktemp("sec") / "run"
    assert cli.run(["train", request.param, "--out", str(run), "--train.steps=4", "--train.ckpt_every=2",
                    "--train.ema_decay=0.9", "--train.progress=false", *RUNS[request.param]]) == 0
    return run


def _preset(run: Path) -> str:
    return json.loads((run / "config.json").read_text())["preset"] if (run / "config.json").exists() else ""


def test_payloads_are_live(tmp_path):
    """Positive control: these files do execute code when unpickled the unsafe way."""
    marker = tmp_path / "fired"
    pickle.loads(pickle_bytes(marker))
    assert marker.exists()
    marker.unlink()
    torch_pickle(tmp_path / "model.pt", marker)
    torch.load(tmp_path / "model.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError):  # the safe way refuses
        torch.load(tmp_path / "model.pt", weights_only=True)
    assert not marker.exists()


def plant_extra_files(run: Path, marker: Path) -> None:
    """Pickles beside the real files, under the names other libraries load by default."""
    for name in ("model.pt", "optimizer.pt", "pytorch_model.bin", "ema.pt", "scheduler.pt"):
        torch_pickle(run / name, marker)
    for name in ("training_state.pkl", "rng_state.pth", "args.pkl"):
        (run / name).write_bytes(pickle_bytes(marker))
    for d in ckpt.checkpoint_dirs(run):
        torch_pickle(d / "optimizer.pt", marker)
        (d / "training_state.pkl").write_bytes(pickle_bytes(marker))
        (d / "random_states_0.pkl").write_bytes(pickle_bytes(marker))


def all_entry_points(run: Path, capsys, preset: str) -> list[str]:
    """load, eval, sample and resume through the API and the CLI; returns each error message."""
    errors = []
    for call in (lambda: unigen.load(run), lambda: unigen.load(run, ema=False),
                 lambda: unigen.evaluate(run, quick=True), lambda: unigen.sample(run, n=4, steps=2)):
        try:
            call()
        except UserError as e:
            errors.append(str(e))
    cli_eval = [["eval", str(run)]] if preset == "mlp-digits" else []  # the same path as the API's (full eval: slow)
    for argv in cli_eval + [["sample", str(run), "--n=4", "--steps=2"],
                            ["train", preset, "--out", str(run), "--resume", "--train.steps=6"]]:
        try:
            cli.main(argv)
        except SystemExit as e:
            err = capsys.readouterr().err
            assert "Traceback" not in err and err.count("\n") <= 1 + err.count("warning:")
            if e.code:
                errors.append(err)
    return errors


def test_planted_pickles_beside_real_files_are_ignored(trained, tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "fired"
    shutil.copytree(trained, run)
    plant_extra_files(run, marker)
    errors = all_entry_points(run, capsys, _preset(run))
    assert not marker.exists()
    assert all("no samplers" in e for e in errors), errors  # everything else works, from the real files
    assert isinstance(unigen.load(run), torch.nn.Module)


@pytest.mark.parametrize("victim", ["model.safetensors", "ema.safetensors"])
def test_pickle_named_safetensors_is_refused(trained, tmp_path, capsys, victim):
    run, marker = tmp_path / "run", tmp_path / "fired"
    shutil.copytree(trained, run)
    (run / victim).write_bytes(pickle_bytes(marker))
    with pytest.raises(UserError, match=f"{victim} is not a readable safetensors file"):
        unigen.load(run, ema=victim == "ema.safetensors")
    if victim == "ema.safetensors":  # eval and sample read the EMA weights
        for argv in (["eval", str(run)], ["sample", str(run), "--n=4", "--steps=2"]):
            with pytest.raises(SystemExit):
                cli.main(argv)
            err = capsys.readouterr().err
            assert err.startswith("error: ") and ("ema.safetensors is not a readable safetensors file" in err
                                                  or "no samplers" in err), err
    assert not marker.exists()


@pytest.mark.parametrize("victim", ["model", "optimizer", "rng", "ema"])
def test_pickle_in_checkpoint_with_forged_manifest_is_refused(trained, tmp_path, capsys, victim):
    """Even with state.json rewritten to the pickle's size and SHA-256, the file is parsed only as safetensors."""
    run, marker = tmp_path / "run", tmp_path / "fired"
    shutil.copytree(trained, run)
    for d in ckpt.checkpoint_dirs(run):
        p = d / f"{victim}.safetensors"
        torch_pickle(p, marker)
        state = json.loads((d / "state.json").read_text())
        state["files"][p.name] = {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        (d / "state.json").write_text(json.dumps(state))
    with pytest.raises(SystemExit) as e:
        cli.main(["train", _preset(run), "--out", str(run), "--resume", "--train.steps=6"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: cannot resume: no intact checkpoint")
    assert f"{victim}.safetensors is not a readable safetensors file" in err
    assert not marker.exists()


@pytest.mark.parametrize("victim", ["config.json", "data_info.json", "checkpoints/*/state.json"])
def test_pickle_in_json_files_is_refused(trained, tmp_path, capsys, victim):
    run, marker = tmp_path / "run", tmp_path / "fired"
    shutil.copytree(trained, run)
    for p in run.glob(victim):
        p.write_bytes(pickle_bytes(marker))
    errors = all_entry_points(run, capsys, _preset(trained))
    assert errors and all(("JSON" in e or "corrupt" in e or "no samplers" in e) for e in errors), errors
    assert not marker.exists()


def test_pickle_tokenizer_is_refused(tmp_path):
    from unigen.data import load_tokenizer
    marker = tmp_path / "fired"
    (tmp_path / "tokenizer.json").write_bytes(pickle_bytes(marker))
    with pytest.raises(UserError, match="tokenizer file .* is corrupt"):
        load_tokenizer(tmp_path)
    assert not marker.exists()


# --- source scan ----------------------------------------------------------------------------------------

UNSAFE = [
    (re.compile(r"\b(c?pickle|_pickle|dill|cloudpickle|joblib|marshal)\.loads?\b", re.IGNORECASE), "unpickling"),
    (re.compile(r"\bshelve\.open\b"), "unpickling"),
    (re.compile(r"^\s*(import|from)\s+(c?pickle|_pickle|dill|cloudpickle|joblib)\b", re.MULTILINE | re.IGNORECASE),
     "a pickle module imported"),
    (re.compile(r"\bUnpickler\b"), "unpickling"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy pickle loading"),
    (re.compile(r"\byaml\.(unsafe_)?load\("), "YAML object loading"),
    (re.compile(r"weights_only\s*=\s*False"), "torch.load with code"),
]


def _torch_loads_without_weights_only(text: str) -> list[str]:
    """Every `torch.load(` call whose argument list (up to the matching parenthesis) lacks weights_only=True."""
    bad = []
    for m in re.finditer(r"\btorch\.load\s*\(", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        args = text[m.end():i - 1]
        if not re.search(r"weights_only\s*=\s*True", args):
            bad.append(text[m.start():i])
    return bad


def test_scanner_finds_what_it_should():
    assert _torch_loads_without_weights_only("x = torch.load(f, map_location=dict(a=1))") != []
    assert _torch_loads_without_weights_only("x = torch.load(f, map_location='cpu', weights_only=True)") == []
    assert UNSAFE[0][0].search("obj = pickle.load(f)") and UNSAFE[0][0].search("cPickle.loads(b)")
    assert UNSAFE[2][0].search("x = 1\n    from pickle import load\n")


def test_no_unpickling_anywhere_in_src():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 10
    problems = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        problems += [f"{f.relative_to(SRC)}: {call}" for call in _torch_loads_without_weights_only(text)]
        for pattern, what in UNSAFE:
            problems += [f"{f.relative_to(SRC)}: {what}: {m.group(0)}" for m in pattern.finditer(text)]
    assert not problems, "\n".join(problems)
