"""read_checkpoint refuses every kind of damage with its own message, and reads an intact checkpoint exactly.

Each check is reached on its own: a byte flipped in place keeps the size, so only the SHA-256 can see it; a
manifest entry `../x.safetensors` with the right size and hash gets past every check but the path check.
"""
import hashlib
import json

import pytest
import torch

from unigen.errors import UserError
from unigen.train import checkpoint as ckpt

FILES = ("model", "ema", "optimizer_gen", "optimizer_disc", "rng")


def tensors(seed):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g),
            "n": torch.randint(0, 9, (5,), generator=g)}


@pytest.fixture
def saved(tmp_path):
    files = {name: tensors(i) for i, name in enumerate(FILES)}
    d = ckpt.save_checkpoint(tmp_path, 7, files, {"extra": [1, 2]}, keep_last=2)
    return d, files


def rewrite_state(d, edit):
    state = json.loads((d / "state.json").read_text())
    edit(state)
    (d / "state.json").write_text(json.dumps(state))


def test_an_intact_checkpoint_reads_back_every_tensor(saved):
    d, files = saved
    assert d.name == "step_0000007"
    state, got = ckpt.read_checkpoint(d)
    assert state["step"] == 7 and state["extra"] == [1, 2] and state["format"] == ckpt.FORMAT
    assert set(state["files"]) == {f"{n}.safetensors" for n in FILES}
    for name, want in files.items():
        p = d / f"{name}.safetensors"
        assert state["files"][p.name] == {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        assert set(got[name]) == set(want) and all(torch.equal(got[name][k], want[k]) for k in want)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("where", ["header", "data"])
def test_a_same_size_byte_flip_in_any_file_is_refused_by_the_sha256(saved, name, where):
    d, _ = saved
    p = d / f"{name}.safetensors"
    raw = bytearray(p.read_bytes())
    i = 10 if where == "header" else len(raw) - 3   # inside the JSON header / inside the last tensor's bytes
    raw[i] ^= 0x01
    p.write_bytes(bytes(raw))
    assert p.stat().st_size == len(raw)
    with pytest.raises(UserError, match=rf"{name}\.safetensors is truncated or altered: its SHA-256 differs"):
        ckpt.read_checkpoint(d)


@pytest.mark.parametrize("name", FILES)
def test_a_truncated_file_is_refused_by_its_size(saved, name):
    d, _ = saved
    p = d / f"{name}.safetensors"
    n = p.stat().st_size
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(UserError, match=rf"{name}\.safetensors is truncated or altered: {n - 1} bytes, state.json "
                                        rf"says {n}"):
        ckpt.read_checkpoint(d)


def test_a_manifest_entry_outside_the_folder_is_refused_even_with_valid_size_and_hash(saved, tmp_path):
    d, files = saved
    outside = d.parent / "x.safetensors"   # d/../x.safetensors: a real file with the right size and hash
    ckpt.atomic_save_safetensors(files["model"], outside)
    entry = {"bytes": outside.stat().st_size, "sha256": ckpt.sha256(outside)}
    rewrite_state(d, lambda s: s["files"].update({"../x.safetensors": entry}))
    with pytest.raises(UserError, match=r"lists '\.\./x\.safetensors', which is not a file name inside the checkpoint"):
        ckpt.read_checkpoint(d)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.update(format="other-v0"), r"is not a unigen checkpoint \(format 'other-v0', expected"),
    (lambda s: s.pop("format"), r"is not a unigen checkpoint \(format None"),
    (lambda s: s.pop("step"), "is malformed"),
    (lambda s: s.update(step="7"), "is malformed"),
    (lambda s: s.update(files=[]), "is malformed"),
    (lambda s: s["files"]["model.safetensors"].update(bytes="12"), "is malformed"),
    (lambda s: s["files"]["model.safetensors"].pop("sha256"), "is malformed"),
    (lambda s: s["files"].update({"model.pt": s["files"]["model.safetensors"]}), "is malformed"),
    (lambda s: s["files"].update({"gone.safetensors": s["files"]["model.safetensors"]}),
     r"checkpoint file .*gone\.safetensors is missing"),
])
def test_a_malformed_state_json_is_refused_with_its_message(saved, edit, message):
    d, _ = saved
    rewrite_state(d, edit)
    with pytest.raises(UserError, match=message):
        ckpt.read_checkpoint(d)


def test_a_state_json_that_is_not_an_object_or_missing_is_refused(saved):
    d, _ = saved
    (d / "state.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"is not a unigen checkpoint \(format None"):
        ckpt.read_checkpoint(d)
    (d / "state.json").unlink()
    with pytest.raises(UserError, match="has no state.json"):
        ckpt.read_checkpoint(d)


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path):
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, {"model": tensors(step)}, {}, keep_last=3)
    assert [d.name for d in ckpt.checkpoint_dirs(tmp_path)] == ["step_0000001", "step_0000002", "step_0000003"]
    newest = ckpt.latest_checkpoint(tmp_path)
    raw = bytearray((newest / "model.safetensors").read_bytes())
    raw[-1] ^= 0x80
    (newest / "model.safetensors").write_bytes(bytes(raw))
    d, state, files, damaged = ckpt.resumable_checkpoint(tmp_path)
    assert d.name == "step_0000002" and state["step"] == 2 and torch.equal(files["model"]["w"], tensors(2)["w"])
    assert [(p.name, "SHA-256" in why) for p, why in damaged] == [("step_0000003", True)]
    moved = ckpt.set_aside(newest)
    assert moved.name == "damaged-step_0000003" and [x.name for x in ckpt.checkpoint_dirs(tmp_path)][-1] == "step_0000002"
