"""read_checkpoint refuses every kind of damage with its own message, and reads an intact checkpoint exactly.

Each check is reached on its own: a byte flipped in place keeps the size, so only the SHA-256 can see it; a
manifest entry `../x.safetensors` with the right size and hash gets past every check but the path check.
"""
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

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


# --- the rest of the module: tensors to disk and back, optimizer state, the checkpoint folder's life ---------------
def test_plain_tensors_detach_make_contiguous_and_split_tied_storage():
    w = torch.randn(3, 4, requires_grad=True)
    out = ckpt.plain_tensors({"a": w, "tied": w, "t": w.detach().t()})
    assert not out["a"].requires_grad and torch.equal(out["a"], w.detach())
    assert out["tied"].untyped_storage().data_ptr() != out["a"].untyped_storage().data_ptr()
    assert torch.equal(out["tied"], out["a"]) and out["t"].is_contiguous() and torch.equal(out["t"], w.detach().t())
    view = torch.arange(10.0)
    parts = ckpt.plain_tensors({"x": view[:5], "y": view[5:]})  # same storage, different offsets: not tied
    assert torch.equal(parts["x"], torch.arange(5.0)) and torch.equal(parts["y"], torch.arange(5.0, 10.0))


def test_sha256_reads_files_in_chunks(tmp_path):
    p = tmp_path / "big.bin"
    data = bytes(range(256)) * 9000  # 2.3 MB: more than one 1 MiB chunk
    p.write_bytes(data)
    assert ckpt.sha256(p) == hashlib.sha256(data).hexdigest()


def test_load_safetensors_and_load_state_into_name_the_problem(tmp_path):
    with pytest.raises(UserError, match=r"^missing weights file .*nope\.safetensors$"):
        ckpt.load_safetensors(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(UserError, match=r"junk\.safetensors is not a readable safetensors file \(truncated or corrupt\?\)"):
        ckpt.load_safetensors(tmp_path / "junk.safetensors")
    m = torch.nn.Linear(3, 2)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(UserError, match=r"^src does not match this model: 1 missing keys \(e\.g\. \['bias'\]\), 0 unexpected"):
        ckpt.load_state_into(m, {"weight": sd["weight"]}, "src")
    with pytest.raises(UserError, match=r"^src does not match this model: 0 missing keys \(e\.g\. \[\]\), 1 unexpected keys "
                                        r"\(e\.g\. \['extra'\]\)$"):
        ckpt.load_state_into(m, {**sd, "extra": sd["bias"]}, "src")
    with pytest.raises(UserError, match=r"^src does not match this model: weight has shape \(2, 4\), expected \(2, 3\)$"):
        ckpt.load_state_into(m, {**sd, "weight": torch.zeros(2, 4)}, "src")
    with pytest.raises(UserError, match=r"^src does not match this model: bias has dtype torch.int64, expected torch.float32$"):
        ckpt.load_state_into(m, {**sd, "bias": torch.zeros(2, dtype=torch.long)}, "src")
    ckpt.load_state_into(m, {"bias": torch.full((2,), 7.0)}, "src", partial=True)  # a subset, the rest kept
    assert torch.equal(m.bias, torch.full((2,), 7.0)) and torch.equal(m.weight, sd["weight"])


def test_run_weights_lay_the_ema_over_the_model(tmp_path):
    m = torch.nn.Linear(3, 2)
    ckpt.atomic_save_safetensors({"weight": torch.ones(2, 3), "bias": torch.ones(2)}, tmp_path / "model.safetensors")
    ckpt.load_run_weights(m, tmp_path)
    assert torch.equal(m.bias, torch.ones(2))
    ckpt.atomic_save_safetensors({"bias": torch.full((2,), 5.0)}, tmp_path / "ema.safetensors")
    ckpt.load_run_weights(m, tmp_path, ema=False)
    assert torch.equal(m.bias, torch.ones(2))
    ckpt.load_run_weights(m, tmp_path)
    assert torch.equal(m.bias, torch.full((2,), 5.0)) and torch.equal(m.weight, torch.ones(2, 3))


def test_optimizer_state_round_trips_through_flat_tensors():
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    opt.state[m.bias]["note"] = 3  # a non-tensor entry goes to the JSON side
    tensors, meta = ckpt.optimizer_to_flat(opt)
    assert {"0.exp_avg", "0.exp_avg_sq", "1.exp_avg", "1.exp_avg_sq"} <= set(tensors)
    assert meta["scalars"]["1.note"] == 3 and "1.note" not in tensors
    back = ckpt.optimizer_from_flat(tensors, json.loads(json.dumps(meta)))
    want = opt.state_dict()
    assert back["param_groups"] == json.loads(json.dumps(want["param_groups"]))  # JSON: tuples come back as lists
    assert set(back["state"]) == set(want["state"]) == {0, 1}
    for pid, st in want["state"].items():
        assert set(back["state"][pid]) == set(st)
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(back["state"][pid][k]), torch.as_tensor(v))


def test_checkpoint_folders_are_listed_by_step_number(tmp_path):
    root = tmp_path / "checkpoints"
    assert ckpt.checkpoint_dirs(tmp_path) == [] and ckpt.latest_checkpoint(tmp_path) is None
    for name in ("step_9", "step_10", "step_x1", "step_", "stepx_3", ".tmp-step_11-a", "step_\u0663"):
        (root / name).mkdir(parents=True)
    (root / "step_12").write_text("a file, not a folder")
    assert [d.name for d in ckpt.checkpoint_dirs(tmp_path)] == ["step_9", "step_10"]  # by number, not by name
    assert ckpt.latest_checkpoint(tmp_path).name == "step_10"


def test_saving_keeps_the_last_k_and_clears_leftovers(tmp_path):
    root = tmp_path / "checkpoints"
    (root / ".trash-step_1-x").mkdir(parents=True)
    (root / ".tmp-step_2-y").mkdir()
    (tmp_path / ".model.safetensors.abc.tmp").write_text("left by a killed atomic write")
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, {"model": tensors(step)}, {"s": step}, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["step_0000002", "step_0000003"]
    assert not (tmp_path / ".model.safetensors.abc.tmp").exists()
    ckpt.save_checkpoint(tmp_path, 3, {"model": tensors(7)}, {"s": 33}, keep_last=2)  # the same step again: replaced
    state, files = ckpt.read_checkpoint(root / "step_0000003")
    assert state["s"] == 33 and torch.equal(files["model"]["w"], tensors(7)["w"])
    assert sorted(p.name for p in root.iterdir()) == ["step_0000002", "step_0000003"]


def test_set_aside_never_overwrites_an_earlier_damaged_copy(tmp_path):
    for _ in range(3):
        ckpt.save_checkpoint(tmp_path, 5, {"model": tensors(5)}, {}, keep_last=1)
        ckpt.set_aside(tmp_path / "checkpoints" / "step_0000005")
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["damaged-step_0000005", "damaged1-step_0000005", "damaged2-step_0000005"]


def test_messages_name_the_file_and_metadata_is_kept(tmp_path, saved):
    d, _ = saved
    (d / "state.json").write_text("{not json")
    with pytest.raises(UserError, match=rf"^checkpoint {re.escape(str(d / 'state.json'))} is not valid JSON"):
        ckpt.read_checkpoint(d)
    p = tmp_path / "w.safetensors"
    ckpt.atomic_save_safetensors({"weight": torch.zeros(3, 3)}, p, metadata={"arch": "mlp"})
    with safe_open(str(p), "pt") as f:
        assert f.metadata() == {"arch": "mlp"}
    with pytest.raises(UserError, match=rf"^{re.escape(str(p))} does not match this model"):
        ckpt.load_weights_into(torch.nn.Linear(3, 2), p)
    ckpt.atomic_save_safetensors({"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}, tmp_path / "model.safetensors")
    ckpt.atomic_save_safetensors({"extra": torch.zeros(1)}, tmp_path / "ema.safetensors")
    with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path / 'ema.safetensors'))} does not match this model"):
        ckpt.load_run_weights(torch.nn.Linear(3, 2), tmp_path)


def test_temp_and_trash_folders_live_beside_the_checkpoints(tmp_path, monkeypatch):
    """A checkpoint is built and thrown away by renames inside checkpoints/ (atomic only on one filesystem)."""
    made = []
    real = ckpt.tempfile.mkdtemp
    monkeypatch.setattr(ckpt.tempfile, "mkdtemp", lambda **kw: made.append(kw) or real(**kw))
    ckpt.save_checkpoint(tmp_path / "new_run", 1, {"model": tensors(1)}, {}, keep_last=1)  # parents made
    ckpt.save_checkpoint(tmp_path / "new_run", 2, {"model": tensors(2)}, {}, keep_last=1)
    root = tmp_path / "new_run" / "checkpoints"
    assert [(Path(kw["dir"]), kw["prefix"]) for kw in made] == [
        (root, ".tmp-step_0000001-"), (root, ".tmp-step_0000002-"), (root, ".trash-step_0000001-")]


def test_the_first_save_creates_a_run_folder_that_does_not_exist_yet(tmp_path):
    run = tmp_path / "runs" / "new" / "run"                        # no parent exists yet: created as `mkdir -p` would
    d = ckpt.save_checkpoint(run, 1, {"model": tensors(1)}, {"s": 1}, keep_last=1)
    assert d == run / "checkpoints" / "step_0000001"
    assert torch.equal(ckpt.read_checkpoint(d)[1]["model"]["w"], tensors(1)["w"])
