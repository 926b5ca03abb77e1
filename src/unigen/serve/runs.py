"""Which runs `unigen serve` may load: run directories under the folders the user named, and nothing else.

Each folder given on the command line is a *mount*, named by its base name (`outputs/demo/runs` -> `runs`; a second
folder of the same name becomes `runs-2`). A run is named `MOUNT/RELATIVE/PATH` (the mount's name alone when the
folder is itself a run). A request names a run only that way: an absolute path, a `..` or `.` part, a backslash or a
symlink that leads out of the mount is refused before anything is read, so a request can never reach a file outside
the folders the user named.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unigen.errors import UserError
from unigen.run import get_task, read_config
from unigen.task import samplers

MAX_DEPTH = 4              # how deep under a mount runs are looked for
MAX_RUNS = 200             # listed per mount (a huge tree must not make /api/runs slow)


class NotFound(UserError):
    """A well-formed name that names no run (HTTP 404)."""


@dataclass(frozen=True)
class Mount:
    name: str
    root: Path             # resolved


def mounts(paths: list[str | Path]) -> list[Mount]:
    """One mount per existing folder; a missing path or a file is a UserError."""
    out: list[Mount] = []
    for p in paths:
        root = Path(p).expanduser().resolve()
        if not root.is_dir():
            raise UserError(f"{p} is not a folder (give run directories or a folder holding them)")
        name, k = root.name or "root", 2
        while any(m.name == name for m in out):
            name, k = f"{root.name}-{k}", k + 1
        out.append(Mount(name, root))
    return out


def is_run(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def find_runs(mount: Mount) -> list[str]:
    """Names of the trained runs under `mount` (depth <= MAX_DEPTH, symlinks not followed), sorted."""
    found, stack = [], [(mount.root, 0)]
    while stack and len(found) < MAX_RUNS:
        folder, depth = stack.pop()
        if is_run(folder):
            rel = folder.relative_to(mount.root).as_posix()
            found.append(mount.name if rel == "." else f"{mount.name}/{rel}")
            continue
        if depth < MAX_DEPTH:
            try:
                subs = [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()]
            except OSError:
                continue
            stack += [(p, depth + 1) for p in sorted(subs, reverse=True)]
    return sorted(found)


def resolve(ms: list[Mount], name: str) -> Path:
    """The run directory called `name`; UserError (HTTP 400) for a name that could leave its mount, NotFound (404)
    for one that names no run."""
    if not name or len(name) > 1000:
        raise UserError("run must be a non-empty name of at most 1000 characters (see /api/runs)")
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\0" in name or ":" in parts[0] or any(
            p in ("", ".", "..") for p in parts):
        raise UserError(f"run {name!r} must be a relative name MOUNT/PATH without '..', '.', '\\' or empty parts")
    mount = next((m for m in ms if m.name == parts[0]), None)
    if mount is None:
        raise NotFound(f"unknown run {name!r}: no folder named {parts[0]!r} is served")
    path = mount.root.joinpath(*parts[1:]).resolve()
    if not path.is_relative_to(mount.root):
        raise UserError(f"run {name!r} leads outside the served folder {mount.name!r}")
    if not is_run(path):
        raise NotFound(f"unknown run {name!r}: no trained run there (config.json and model.safetensors)")
    return path


def takes(task, option: str) -> bool:
    """Whether `task.sample` accepts the keyword `option` (prompt, callback, guidance)."""
    return option in inspect.signature(task.sample).parameters


def run_samplers(task, cfg) -> tuple[str, ...]:
    """The samplers that fit this run (a family may narrow its list per run with `samplers_for(cfg)`), the run's
    own default first."""
    names = tuple(task.samplers_for(cfg)) if hasattr(task, "samplers_for") else samplers(task)
    first = cfg.sample.sampler if cfg.sample.sampler in names else names[0] if names else ""
    return (first, *(s for s in names if s != first)) if names else ()


def describe(name: str, path: Path) -> dict[str, Any]:
    """What the page needs to offer a run: its samplers (default first), default steps, guidance, and whether it
    takes a prompt and streams its steps."""
    cfg = read_config(path)
    task = get_task(cfg.task)
    names = run_samplers(task, cfg)
    return {"id": name, "preset": cfg.preset, "task": cfg.task, "data": cfg.data.name, "samplers": list(names),
            "steps": cfg.sample.steps, "n": min(cfg.sample.n, 8) or 4, "seed": cfg.sample.seed,
            "guidance": cfg.sample.guidance, "prompt": bool(names) and takes(task, "prompt"),
            "streams": bool(names) and takes(task, "callback")}
