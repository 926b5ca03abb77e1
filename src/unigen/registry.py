"""Every preset and every task, in two plain dicts. A family adds itself with one line in each dict.

    PRESETS["mnist-edm"]() -> Config        TASKS["diffusion"] -> Task
"""
from __future__ import annotations

from typing import Callable

from unigen.config import Config
from unigen.errors import UserError
from unigen.families.autoencoders import presets as autoencoder_presets
from unigen.families.autoencoders import task as autoencoders
from unigen.families.action_detection import presets as action_presets
from unigen.families.action_detection import task as action_task
from unigen.families.classify import presets as classify_presets
from unigen.families.classify import task as classify
from unigen.families.continuous_diffusion import presets as diffusion_presets
from unigen.families.continuous_diffusion import task as diffusion
from unigen.families.detection import presets as detection_presets
from unigen.families.detection import task as detection
from unigen.families.discrete_diffusion import presets as discrete_presets
from unigen.families.discrete_diffusion import task as discrete_family
from unigen.families.word2vec import presets as word2vec_presets
from unigen.families.word2vec import task as word2vec
from unigen.families.normalizing_flows import presets as flows_presets
from unigen.families.normalizing_flows import task as flows_task
from unigen.families.latent_diffusion import presets as latent_diffusion_presets
from unigen.families.latent_diffusion import task as latent_diffusion

TASKS = {
    "classify": classify.TASK,
    "diffusion": diffusion.TASK,
    **discrete_family.TASKS,
    "word2vec": word2vec.TASK,
    "normalizing_flows": flows_task.TASK,
    "detection": detection.TASK,
    "autoencoders": autoencoders.TASK,
    "code_prior": autoencoders.PRIOR_TASK,
    "latent_diffusion": latent_diffusion.TASK,
    "action_detection": action_task.TASK,
}

PRESETS: dict[str, Callable[[], Config]] = {
    **classify_presets.PRESETS,
    **diffusion_presets.PRESETS,
    **discrete_family.PRESETS,
    **word2vec_presets.PRESETS,
    **discrete_presets.PIXEL_PRESETS,
    **discrete_presets.JUDGE_PRESETS,
    **flows_presets.PRESETS,
    **detection_presets.PRESETS,
    **autoencoder_presets.PRESETS,
    **latent_diffusion_presets.PRESETS,
    **action_presets.PRESETS,
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


def describe(name: str) -> str:
    """One-line description: the first line of the preset function's docstring."""
    return (PRESETS[name].__doc__ or "").strip().splitlines()[0] if PRESETS[name].__doc__ else ""
