"""Size presets on one dial: a name picks width/depth/heads, keyword overrides adjust any other field."""
from __future__ import annotations

from typing import TypeVar

from unigen.errors import UserError

C = TypeVar("C")


def from_size(config_cls: type[C], sizes: dict[str, dict], size: str, what: str, **overrides) -> C:
    """`config_cls(**sizes[size], **overrides)`; a UserError naming `what` for an unknown size or field."""
    if size not in sizes:
        raise UserError(f"unknown {what} size {size!r}; choose one of: {', '.join(sizes)}")
    try:
        return config_cls(**{**sizes[size], **overrides})
    except TypeError as e:
        raise UserError(f"bad {what} config override: {e}") from None
