"""Range checks shared by the datasets' options dataclasses (and by `unigen.config` for its own sections).

Each raises a one-line UserError naming the dotted key, e.g. `data.seq_len must be > 0, got 0`. They assume the
value already has its declared type: `unigen.config.validate` checks types before it calls a dataset's `check()`.
"""
from __future__ import annotations

from typing import Any

from unigen.errors import UserError

MAX_SEED = 2**31 - 1   # torch generators take 64-bit seeds; fit() multiplies them


def one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise UserError(f"{key}={value!r} is not one of: {', '.join(allowed)}")


def positive(key: str, value: float) -> None:
    if value <= 0:
        raise UserError(f"{key} must be > 0, got {value}")


def non_negative(key: str, value: float) -> None:
    if value < 0:
        raise UserError(f"{key} must be >= 0, got {value}")


def unit_interval(key: str, value: float) -> None:
    if not 0 <= value < 1:
        raise UserError(f"{key} must be in [0, 1), got {value}")


def seed(key: str, value: int) -> None:
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"{key} must be in [0, {MAX_SEED}], got {value}")
