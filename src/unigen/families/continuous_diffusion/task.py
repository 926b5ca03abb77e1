"""Continuous diffusion and flow matching as a unigen family: the Task (build, loss, sample, evaluate).

One network, one denoiser: the backbone (residual MLP for toy2d, DiT or UNet for images) is wrapped once by
`precond.make_denoiser` into D(x, sigma) -> x0_hat, and every sampler of `samplers.SAMPLERS` runs on that D
(network.py). Per-method code is only the training loss (`LOSSES` below); which schedules, parameterizations and
samplers fit each method is the table `network.METHODS`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from unigen.config import Config
from unigen.errors import UserError
from unigen.families.continuous_diffusion import evaluate, losses
from unigen.families.continuous_diffusion.network import (METHODS, DiffusionModelConfig, DiffusionNet,
                                                          build_backbone, check_sampler, generate, resolved, unwrap)
from unigen.families.continuous_diffusion.precond import make_denoiser
from unigen.families.continuous_diffusion.samplers import ALIASES, SAMPLERS
from unigen.io import atomic_path
from unigen.plot import save_image_grid, save_scatter
from unigen.task import Task


# ---- losses: one small function per method, all (model, x0, net, cond) -> per-example loss (B,) --------------------

def _ddpm(model, x0, net: DiffusionNet, cond: dict) -> Tensor:
    m = net.config
    return losses.ddpm_loss(model, x0, net.schedule, target=net.parameterization,
                            min_snr_gamma=m.min_snr_gamma or None, **cond)


def _edm(model, x0, net: DiffusionNet, cond: dict) -> Tensor:
    m = net.config
    D = make_denoiser(model, "edm", net.schedule, m.sigma_data)
    return losses.edm_loss(D, x0, P_mean=m.P_mean, P_std=m.P_std, sigma_data=m.sigma_data, **cond)


def _fm(model, x0, net: DiffusionNet, cond: dict) -> Tensor:
    return losses.flow_matching_loss(model, x0, t_dist=net.config.t_dist, **cond)


def _dsm(model, x0, net: DiffusionNet, cond: dict) -> Tensor:
    return losses.dsm_loss(model, x0, net.schedule, parameterization=net.parameterization, **cond)


LOSSES = {"ddpm": _ddpm, "edm": _edm, "fm": _fm, "vp": _dsm, "ve": _dsm, "subvp": _dsm}


def save_samples(x: Tensor, y: Tensor | None, out_dir: Path, title: str = "") -> dict[str, str]:
    """samples.safetensors ({"x", "y"?}) and samples.png (an image grid, or a scatter plot for 2-D points)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {"x": x.float().contiguous(), **({"y": y.contiguous()} if y is not None else {})}
    with atomic_path(out_dir / "samples.safetensors") as tmp:
        save_file(tensors, str(tmp))
    png = out_dir / "samples.png"
    if x.ndim == 4:
        save_image_grid(x.clamp(-1, 1), png, nrow=10 if y is not None else None)
    elif x.ndim == 2 and x.shape[1] == 2:
        save_scatter(x, png, title)
    else:
        png = None
    return {"samples": str(out_dir / "samples.safetensors"), **({"image": str(png)} if png else {})}


class DiffusionTask(Task):
    model_config = DiffusionModelConfig
    samplers = ("heun", *(s for s in SAMPLERS if s != "heun"), *ALIASES)   # heun fits every method: the default

    def build(self, cfg: Config, data_info: dict) -> nn.Module:
        m: DiffusionModelConfig = cfg.model
        resolved(m)
        if not 0 <= m.p_uncond < 1:
            raise UserError(f"model.p_uncond must be in [0, 1), got {m.p_uncond}")
        if m.sigma_data <= 0 or m.P_std <= 0 or m.c_noise_scale < 0 or m.min_snr_gamma < 0:
            raise UserError("model.sigma_data and model.P_std must be > 0, c_noise_scale and min_snr_gamma >= 0")
        if m.t_dist not in ("uniform", "logit-normal"):
            raise UserError(f"model.t_dist={m.t_dist!r} is not one of: uniform, logit-normal")
        num_classes = 0
        if m.class_cond:
            num_classes = data_info.get("num_classes", 0)
            if not num_classes:
                raise UserError(f"model.class_cond=true needs labelled data; {cfg.data.name!r} has no classes")
        shape = tuple(data_info["shape"])
        return DiffusionNet(build_backbone(m, shape, num_classes), m, shape, num_classes)

    def samplers_for(self, cfg: Config) -> tuple[str, ...]:
        """The samplers that fit the run's training method, its default first (network.METHODS)."""
        return METHODS[cfg.model.method].samplers

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        net = unwrap(model)
        cond = {}
        if net.num_classes:
            cond = dict(y=batch["y"], p_uncond=net.config.p_uncond, num_classes=net.num_classes)
        return LOSSES[net.config.method](model, batch["x"], net, cond).mean()

    def sample(self, model: nn.Module, cfg: Config, *, run_dir: Path, out_dir: Path, n: int, sampler: str,
               steps: int, seed: int, guidance: float | None = None, callback=None, **kw) -> dict[str, Any]:
        """`n` samples into out_dir (samples.safetensors, samples.png); `callback` gets the sampler's report of
        every step ({"i", "x", "sigma", "denoised"}, sampling.report), e.g. to stream the generation."""
        if kw:
            raise UserError(f"diffusion sampling has no option(s) {', '.join(kw)}")
        net = unwrap(model)
        sampler = check_sampler(net, sampler or cfg.sample.sampler)
        steps = steps or cfg.sample.steps or SAMPLERS[sampler].default_steps
        scale = cfg.sample.guidance if guidance is None else guidance
        y = torch.arange(n) % net.num_classes if net.num_classes else None
        if not net.num_classes and scale != 1:
            raise UserError(f"guidance {scale} needs a class-conditional model (model.class_cond=true)")
        g = torch.Generator(next(net.parameters()).device).manual_seed(seed)
        x, nfe = generate(model, n, sampler=sampler, steps=steps, generator=g, y=y, guidance=scale,
                          precision=cfg.train.precision, callback=callback)
        files = save_samples(x, y, Path(out_dir), f"{cfg.preset} {sampler} x{steps} (NFE {nfe})")
        return {**files, "n": n, "sampler": sampler, "steps": steps, "nfe": nfe,
                **({"guidance": scale} if net.num_classes else {})}

    def evaluate(self, model: nn.Module, cfg: Config, *, run_dir: Path, quick: bool = False,
                 nfe_sweep: bool = False, likelihood: str = "", **kw) -> dict[str, float]:
        """Sample quality with the run's sampler, or with nfe_sweep=True the NFE sweep, which takes `samplers`,
        `budgets`, `n` and `seeds` (tuples, or the CLI's strings; see evaluate.sweep_options), or with
        likelihood="vlb" | "ode" bits/dim of the first `n` test images (evaluate.likelihood, which takes its options)."""
        if likelihood:
            if nfe_sweep:
                raise UserError("choose either the NFE sweep or a likelihood, not both")
            extra = [k for k in kw if k not in evaluate.LIKELIHOOD_OPTIONS]
            if extra:
                raise UserError(f"the likelihood eval has no option(s) {', '.join(extra)}")
            return evaluate.likelihood(model, cfg, kind=likelihood, quick=quick, **kw)
        sweep_kw = {k: kw.pop(k) for k in ("samplers", "budgets", "n", "seeds") if k in kw}
        if kw or (sweep_kw and not nfe_sweep):
            raise UserError(f"diffusion eval has no option(s) {', '.join([*kw, *sweep_kw])}"
                            + (" without --nfe-sweep" if sweep_kw and not kw else ""))
        if nfe_sweep:
            return evaluate.run_sweep(model, cfg, Path(run_dir) / "nfe_sweep", quick=quick, **sweep_kw)
        net = unwrap(model)
        sampler = check_sampler(net, cfg.sample.sampler)
        steps = cfg.sample.steps or SAMPLERS[sampler].default_steps
        scorer = evaluate.make_scorer(net, cfg, quick=quick)
        return {**evaluate.score(model, scorer, sampler=sampler, steps=steps, guidance=cfg.sample.guidance,
                                precision=cfg.train.precision),
                **scorer.baseline()}


TASK = DiffusionTask()
