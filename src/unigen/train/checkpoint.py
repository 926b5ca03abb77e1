"""Checkpoints without pickled code, written so that a kill at any moment leaves the previous one loadable.

Layout of one checkpoint (a folder under RUN/checkpoints/):

    step_000120/model.safetensors      weights of the trained model
    step_000120/ema.safetensors        EMA weights (if EMA is on; the averaged submodule's, under the model's keys)
    step_000120/optimizer.safetensors  optimizer tensors (Adam moments, step counts); with several objectives
                                       one file per objective: optimizer_<name>.safetensors
    step_000120/rng.safetensors        torch RNG states (CPU of every process, and CUDA when present)
    step_000120/state.json             step, optimizer hyper-parameters (under the same names as the files),
                                       sizes and SHA-256 of every file above

A checkpoint is first written to a hidden temp folder, every file fsync'ed, `state.json` last, then the folder is
renamed into place (atomic on POSIX) and the parent folder fsync'ed; old checkpoints leave by a rename to a hidden
name before they are deleted. So a kill at any instant leaves every `step_*` folder complete or absent.
`state.json` carries a manifest, so a truncated or altered file is detected at load time with a message naming it;
resume then falls back to the newest intact checkpoint (see `resumable_checkpoint`) and renames the damaged ones
to `damaged-step_*`, with a warning. No file is ever unpickled: tensors are safetensors, everything else JSON.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unigen.errors import UserError
from unigen.io import atomic_path, atomic_write_json, fsync_dir, read_json

# unigen.run and continuous_diffusion.rectified still call `ckpt.atomic_write_json` (imported above for state.json);
# they should call unigen.io's directly.

FORMAT = "unigen-checkpoint-v1"
STEP_PREFIX = "step_"


def plain_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU tensors that safetensors accepts: tied weights (one storage, two names) are cloned apart."""
    out, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().contiguous().cpu()
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset())
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path,
                            metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file(plain_tensors(tensors), tmp, metadata=metadata)


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
    load_state_into(module, load_safetensors(path), path)


def load_run_weights(model: torch.nn.Module, run_dir: Path, *, ema: bool = True) -> None:
    """The trained weights of a run: RUN/model.safetensors, then (if `ema` and present) RUN/ema.safetensors laid
    over it. The EMA file may hold a subset of the keys (`fit(..., ema_of=...)` averages a submodule only)."""
    load_weights_into(model, Path(run_dir) / "model.safetensors")
    if ema and (Path(run_dir) / "ema.safetensors").exists():
        path = Path(run_dir) / "ema.safetensors"
        load_state_into(model, load_safetensors(path), path, partial=True)


def load_state_into(module: torch.nn.Module, sd: dict[str, torch.Tensor], source: str | Path, *,
                    partial: bool = False) -> None:
    """`module.load_state_dict(sd)`, but keys, shapes or dtypes that differ are a UserError naming `source`.
    With `partial`, `sd` may hold a subset of the keys (the rest keep their values)."""
    own = module.state_dict()
    missing = [] if partial else sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise UserError(f"{source} does not match this model: {len(missing)} missing keys (e.g. {missing[:3]}), "
                        f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    for k in [k for k in own if k in sd]:
        if own[k].shape != sd[k].shape:
            raise UserError(f"{source} does not match this model: {k} has shape {tuple(sd[k].shape)}, "
                            f"expected {tuple(own[k].shape)}")
        if own[k].is_floating_point() != sd[k].is_floating_point():
            raise UserError(f"{source} does not match this model: {k} has dtype {sd[k].dtype}, expected {own[k].dtype}")
    module.load_state_dict(sd, strict=not partial)


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
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)
            and p.name[len(STEP_PREFIX):].isascii() and p.name[len(STEP_PREFIX):].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def save_checkpoint(run_dir: Path, step: int, files: dict[str, dict[str, torch.Tensor]], state: dict,
                    keep_last: int) -> Path:
    """Write `files` (name -> tensors, saved as NAME.safetensors) and `state` (JSON) as checkpoint `step`.

    Every change to `checkpoints/` is a rename, so a kill at any instant leaves each `step_*` folder either
    complete or absent: the new one is built in a hidden temp folder; a folder being replaced or pruned is first
    renamed to a hidden trash name and only then deleted. Hidden leftovers of killed saves are removed here.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{final.name}-"))
    try:
        manifest = {}
        for name, tensors in files.items():
            p = tmp / f"{name}.safetensors"
            save_file(plain_tensors(tensors), str(p))  # no rename of its own: the whole folder is renamed below
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
            manifest[p.name] = {"bytes": p.stat().st_size, "sha256": sha256(p)}
        atomic_write_json(tmp / "state.json", {"format": FORMAT, "step": step, "files": manifest, **state})
        fsync_dir(tmp)
        if final.exists():  # the same step saved again (e.g. after a resume): move the old one aside first
            _trash(final)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(run_dir)[:-keep_last]:
        _trash(old)
    remove_leftovers(run_dir)
    return final


def remove_leftovers(run_dir: Path) -> None:
    """Delete what killed saves leave behind: hidden temp and trash folders in checkpoints/ and the temp files
    (`.NAME.xxxx.tmp`) of atomic writes in the run directory. Only the writing process may call this."""
    root = Path(run_dir) / "checkpoints"
    for stale in list(root.glob(".tmp-*")) + list(root.glob(".trash-*")):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in Path(run_dir).glob(".*.tmp"):
        if stale.is_file():
            stale.unlink(missing_ok=True)


def _trash(folder: Path) -> None:
    """Take `folder` out of the checkpoint list in one rename; the hidden copy is deleted by the next save."""
    dest = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".trash-{folder.name}-"))
    os.rename(folder, dest / folder.name)
    fsync_dir(folder.parent)


def read_checkpoint(ckpt: Path) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """Verify a checkpoint against its manifest and load it; any damage is a UserError naming the file."""
    ckpt = Path(ckpt)
    state_path = ckpt / "state.json"
    state = read_json(state_path, "checkpoint", missing=f"checkpoint {ckpt} has no state.json (incomplete save?)")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        fmt = state.get("format") if isinstance(state, dict) else None
        raise UserError(f"{ckpt} is not a unigen checkpoint (format {fmt!r}, expected {FORMAT!r})")
    manifest = state.get("files")
    if not isinstance(state.get("step"), int) or not isinstance(manifest, dict) or not all(
            isinstance(m, dict) and isinstance(m.get("bytes"), int) and isinstance(m.get("sha256"), str)
            and isinstance(f, str) and f.endswith(".safetensors") for f, m in manifest.items()):
        raise UserError(f"checkpoint {state_path} is malformed (no step or no valid file manifest)")
    outside = [f for f in manifest if "/" in f]
    if outside:
        raise UserError(f"checkpoint {state_path} lists {outside[0]!r}, which is not a file name inside the checkpoint")
    files = {}
    for fname, meta in manifest.items():
        p = ckpt / fname
        if not p.is_file():
            raise UserError(f"checkpoint file {p} is missing")
        if p.stat().st_size != meta["bytes"]:
            raise UserError(f"checkpoint file {p} is truncated or altered: {p.stat().st_size} bytes, state.json "
                            f"says {meta['bytes']}")
        if sha256(p) != meta["sha256"]:
            raise UserError(f"checkpoint file {p} is truncated or altered: its SHA-256 differs from state.json")
        files[fname.removesuffix(".safetensors")] = load_safetensors(p)
    return state, files


def resumable_checkpoint(run_dir: Path) -> tuple[Path | None, dict, dict, list[tuple[Path, str]]]:
    """The newest checkpoint of `run_dir` that passes `read_checkpoint`, with its state and tensors, and the
    newer ones that failed as (folder, reason). Read-only. (None, {}, {}, damaged) when none is intact."""
    damaged = []
    for d in reversed(checkpoint_dirs(run_dir)):
        try:
            state, files = read_checkpoint(d)
        except UserError as e:
            damaged.append((d, str(e)))
            continue
        return d, state, files, damaged
    return None, {}, {}, damaged


def set_aside(folder: Path) -> Path:
    """Rename a damaged checkpoint to `damaged-step_*` so resume and pruning ignore it; it is kept for inspection."""
    dest = folder.with_name(f"damaged-{folder.name}")
    n = 1
    while dest.exists():
        dest, n = folder.with_name(f"damaged{n}-{folder.name}"), n + 1
    os.rename(folder, dest)
    fsync_dir(folder.parent)
    return dest


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None
