"""Latent diffusion as a unigen family: build (autoencoder run + text UNet), loss, sample (--prompt), evaluate.

Training step (Rombach et al. 2022, Eq. 2 with Eq. 3's conditioning): z0 = scale_factor * z, z ~ q(z|x) from the
frozen autoencoder; captions (shapes' word-level rich captions) replaced by "" with probability p_uncond; then the
continuous-diffusion loss of the method (ddpm: ||eps - eps_theta(z_t, t, tau(y))||^2 on the scaled-linear schedule)
with the UNet cross-attending to the text encoder's token states. Text encoder and UNet train jointly, as LDM's
text-to-image model does.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from unigen.config import Config
from unigen.data.shapes import decode_words, encode_words
from unigen.errors import UserError
from unigen.families.continuous_diffusion import losses
from unigen.families.continuous_diffusion.network import check_sampler
from unigen.families.continuous_diffusion.precond import make_denoiser
from unigen.families.continuous_diffusion.samplers import ALIASES, SAMPLERS
from unigen.families.latent_diffusion import evaluate
from unigen.families.latent_diffusion.conditioning import drop_captions
from unigen.families.latent_diffusion.network import (LatentDiffusionConfig, LatentDiffusionNet, generate,
                                                      load_autoencoder, unwrap)
from unigen.io import atomic_path, atomic_write_text
from unigen.plot import save_image_grid
from unigen.task import Task


def _loss(net: LatentDiffusionNet, z0: Tensor, fn) -> Tensor:
    """The per-example loss (B,) of the configured method for the conditioned network fn(z_t, c_noise)."""
    m = net.config
    if m.method == "ddpm":
        return losses.ddpm_loss(fn, z0, net.schedule, target=net.parameterization)
    if m.method == "edm":
        D = make_denoiser(fn, "edm", net.schedule, m.sigma_data)
        return losses.edm_loss(D, z0, P_mean=m.P_mean, P_std=m.P_std, sigma_data=m.sigma_data)
    return losses.flow_matching_loss(fn, z0, t_dist=m.t_dist)


def prompt_ids(prompt: str | None, n: int, captions: Tensor) -> Tensor:
    """(n, WORD_LEN) word ids: every image from `prompt`, or with no prompt the first n test captions."""
    if prompt is None:
        if n > len(captions):
            raise UserError(f"without --prompt, sample draws the test captions: --n must be <= {len(captions)}")
        return captions[:n].clone()
    return torch.tensor([encode_words(prompt)] * n)


class LatentDiffusionTask(Task):
    model_config = LatentDiffusionConfig
    samplers = ("ddim", *(s for s in SAMPLERS if s != "ddim"), *ALIASES)

    def build(self, cfg: Config, data_info: dict) -> nn.Module:
        if "word_len" not in data_info:
            raise UserError(f"latent diffusion trains on captioned pictures (data.name=shapes), not {cfg.data.name!r}")
        shape = tuple(data_info["shape"])
        ae = load_autoencoder(cfg.model.autoencoder, shape)
        return LatentDiffusionNet(cfg.model, ae, shape, int(data_info["word_len"]))

    def ema_of(self, model: nn.Module) -> nn.Module:
        return unwrap(model).model

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        net = unwrap(model)
        z0 = net.latents(batch["x"])                                    # (B, c, h, w)
        ids = drop_captions(batch["word_ids"], net.config.p_uncond, net.null_ids)
        context, mask = net.model.text(ids)                             # (B, S, E), (B, S)
        return _loss(net, z0, lambda z_t, c_noise: net(z_t, c_noise, context, mask)).mean()

    def sample(self, model: nn.Module, cfg: Config, *, run_dir: Path, out_dir: Path, n: int, sampler: str,
               steps: int, seed: int, guidance: float | None = None, prompt: str | None = None, **kw) -> dict[str, Any]:
        if kw:
            raise UserError(f"latent diffusion sampling has no option(s) {', '.join(kw)}")
        net = unwrap(model)
        sampler = check_sampler(net, sampler or cfg.sample.sampler)
        steps = steps or cfg.sample.steps or SAMPLERS[sampler].default_steps
        scale = cfg.sample.guidance if guidance is None else guidance
        if not scale >= 0:
            raise UserError(f"--guidance must be >= 0, got {scale}")
        ids = prompt_ids(prompt, n, evaluate.test_captions(cfg))
        g = torch.Generator(net.scale_factor.device).manual_seed(seed)
        x = generate(model, ids, sampler=sampler, steps=steps, guidance=scale, generator=g)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "samples.safetensors") as tmp:
            save_file({"x": x.float().contiguous(), "word_ids": ids.contiguous()}, str(tmp))
        save_image_grid(x, out_dir / "samples.png", nrow=min(10, n))
        texts = [decode_words(r.tolist()) for r in ids]
        atomic_write_text(out_dir / "prompts.json", json.dumps(texts, indent=1))
        return {"samples": str(out_dir / "samples.safetensors"), "image": str(out_dir / "samples.png"), "n": n,
                "sampler": sampler, "steps": steps, "guidance": scale, "prompt": prompt if prompt else "test captions"}

    def evaluate(self, model: nn.Module, cfg: Config, *, run_dir: Path, quick: bool = False,
                 guidance: float | None = None, n: int = 0, **kw) -> dict[str, float]:
        """Prompt adherence and Frechet distance of n samples drawn for test captions (evaluate.py)."""
        if kw:
            raise UserError(f"latent diffusion eval has no option(s) {', '.join(kw)}")
        net = unwrap(model)
        sampler = check_sampler(net, cfg.sample.sampler)
        steps = cfg.sample.steps or SAMPLERS[sampler].default_steps
        scale = cfg.sample.guidance if guidance is None else float(guidance)
        return evaluate.score(model, cfg, sampler=sampler, steps=steps, guidance=scale, n=n or (64 if quick else 1000))


TASK = LatentDiffusionTask()
