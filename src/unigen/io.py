"""Files on disk, written so that a kill at any moment leaves either the old file or the new one, never half of one.

    atomic_path(path)            a context manager: yields a temp path beside `path`; on success it is fsync'ed
                                 and renamed over `path` (and the folder fsync'ed), on error it is removed
    atomic_write_bytes / _text / _json(path, data)
    read_json(path, what)        one error story for every JSON file a user can hand us: missing, unreadable,
                                 not UTF-8, not JSON -> UserError naming the file
    jsonable(x)                  tensors and tuples -> plain JSON values

Every writer of the project goes through `atomic_path`; temp files are named `.NAME.xxxx.tmp` so that a folder
left by a kill can be recognised and cleaned (`is_leftover`).
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from unigen.errors import UserError


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for the caller to write; then fsync it, rename it over `path` and
    fsync the folder. On any error (or a kill before the rename) `path` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_leftover(p: Path) -> bool:
    """A temp file of an atomic write killed before its rename (`.NAME.xxxx.tmp`): not user data."""
    return p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: str | Path, what: str = "", missing: str = "") -> Any:
    """The JSON value in `path`; a missing, unreadable, non-UTF-8 or invalid file is a UserError naming it (and
    `what` it should be, e.g. "checkpoint"). `missing` replaces the message for a file that does not exist."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(missing or f"{label} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{label} is not valid JSON: {e}") from None
    except OSError as e:
        raise UserError(f"{label} cannot be read: {e.strerror}") from None


def jsonable(x: Any) -> Any:
    """Tensors -> lists, tuples -> lists, recursively: what `json.dumps` accepts."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if torch.is_tensor(x):
        return x.tolist()
    return x
