"""Every preset and every task, in two plain dicts. A family adds itself with one import line here.

    PRESETS["mnist-edm"]() -> Config        TASKS["diffusion"] -> Task
"""
from __future__ import annotations

from typing import Callable

from unigen.families.classify import task as classify
from unigen.config import Config
from unigen.families.continuous_diffusion import task as diffusion_family
from unigen.families.discrete_diffusion import task as discrete_family
from unigen.errors import UserError

TASKS = {
    "classify": classify.TASK,
    "diffusion": diffusion_family.TASK,
    **discrete_family.TASKS,
}

PRESETS: dict[str, Callable[[], Config]] = {
    **classify.PRESETS,
    **diffusion_family.PRESETS,
    **discrete_family.PRESETS,
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


def describe(name: str) -> str:
    """One-line description: the first line of the preset function's docstring."""
    return (PRESETS[name].__doc__ or "").strip().splitlines()[0] if PRESETS[name].__doc__ else ""
