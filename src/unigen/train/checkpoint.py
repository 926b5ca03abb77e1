"""Checkpoints without pickled code, written so that a kill at any moment leaves the previous one loadable.

Layout of one checkpoint (a folder under RUN/checkpoints/):

    step_000120/model.safetensors      weights of the trained model
    step_000120/ema.safetensors        EMA weights (if EMA is on)
    step_000120/optimizer.safetensors  optimizer tensors (Adam moments, step counts)
    step_000120/rng.safetensors        torch RNG states (CPU, and CUDA when present)
    step_000120/state.json             step, optimizer hyper-parameters, sizes and SHA-256 of every file above

A checkpoint is first written to a hidden temp folder, every file fsync'ed, `state.json` last, then the folder is
renamed into place (atomic on POSIX) and the parent folder fsync'ed. `state.json` carries a manifest, so a
truncated or altered file is detected at load time with a message naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unigen.errors import UserError

FORMAT = "unigen-checkpoint-v1"
STEP_PREFIX = "step_"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def plain_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU tensors that safetensors accepts: tied weights (one storage, two names) are cloned apart."""
    out, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().contiguous().cpu()
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset())
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(plain_tensors(tensors), tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or foreign file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing weights file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from None


def load_weights_into(module: torch.nn.Module, path: Path) -> None:
    """Load a state dict from safetensors into `module`; a file from another model is a UserError."""
    sd = load_safetensors(path)
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise UserError(f"{path} does not match this model: {len(missing)} missing keys (e.g. {missing[:3]}), "
                        f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    bad = [k for k in own if own[k].shape != sd[k].shape]
    if bad:
        k = bad[0]
        raise UserError(f"{path} does not match this model: {k} has shape {tuple(sd[k].shape)}, "
                        f"expected {tuple(own[k].shape)}")
    module.load_state_dict(sd)


# --- optimizer state <-> flat tensors + JSON ---------------------------------------------------------------

def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


# --- whole checkpoints -----------------------------------------------------------------------------------

def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first (temp folders of interrupted saves are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)]
    return sorted(dirs, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def save_checkpoint(run_dir: Path, step: int, files: dict[str, dict[str, torch.Tensor]], state: dict,
                    keep_last: int) -> Path:
    """Write `files` (name -> tensors, saved as NAME.safetensors) and `state` (JSON) as checkpoint `step`."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{final.name}-"))
    try:
        manifest = {}
        for name, tensors in files.items():
            p = tmp / f"{name}.safetensors"
            save_file(plain_tensors(tensors), str(p))
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
            manifest[p.name] = {"bytes": p.stat().st_size, "sha256": sha256(p)}
        atomic_write_json(tmp / "state.json", {"format": FORMAT, "step": step, "files": manifest, **state})
        fsync_dir(tmp)
        if final.exists():  # the same step saved again (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # leftovers of saves killed midway
        shutil.rmtree(stale, ignore_errors=True)
    return final


def read_checkpoint(ckpt: Path) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """Verify a checkpoint against its manifest and load it; any damage is a UserError naming the file."""
    ckpt = Path(ckpt)
    state_path = ckpt / "state.json"
    try:
        state = json.loads(state_path.read_text())
    except FileNotFoundError:
        raise UserError(f"checkpoint {ckpt} has no state.json (incomplete save?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"checkpoint {state_path} is not valid JSON: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{ckpt} is not a unigen checkpoint (format {state.get('format') if isinstance(state, dict) else None!r})")
    files = {}
    for fname, meta in state["files"].items():
        p = ckpt / fname
        if not p.is_file():
            raise UserError(f"checkpoint file {p} is missing")
        if p.stat().st_size != meta["bytes"] or sha256(p) != meta["sha256"]:
            raise UserError(f"checkpoint file {p} is truncated or altered (size/SHA-256 differ from state.json)")
        files[fname.removesuffix(".safetensors")] = load_safetensors(p)
    return state, files


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None
