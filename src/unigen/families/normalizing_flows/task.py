"""Normalizing flows (NICE, RealNVP, Glow) as a unigen family: exact log-likelihood training on dequantised images
or on toy2d points, temperature sampling, bits/dim on the test split.

    loss       images: bits/dim (dequantize.py's bound) of y = (k + u) / 2^n_bits; toy2d: -log p(x) in nats
    sample     `ancestral`: latents from the priors at `temperature`, then the exact inverse
    evaluate   images: bits_per_dim (+ se, nll_nats, n_eval) on the test split, and (not quick) the pictures
               RUN/figures/samples_T{0.5,0.7,1.0}.png and reconstruction.png; toy2d: kl to the exact density,
               nll, and RUN/figures/density.png

A NaN/Inf log-likelihood stops training with a NonFiniteError naming the step and the first layer whose output or
log-determinant is not finite (a singular 1x1 convolution gives log|det W| = -inf); with train.nonfinite=skip the
loop skips that step instead, as for every family.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from unigen.config import Config
from unigen.data import load as load_data
from unigen.errors import NonFiniteError, UserError
from unigen.families.normalizing_flows import evaluate
from unigen.families.normalizing_flows.dequantize import bits_per_dim
from unigen.families.normalizing_flows.model import FlowModel
from unigen.families.normalizing_flows.network import FlowConfig, build_flow
from unigen.io import atomic_path
from unigen.plot import save_image_grid, save_scatter
from unigen.task import Task, unwrap
from unigen.train.objective import Objective

QUICK_EVAL = 500        # test images (toy2d: points) in quick mode


def nll_loss(model: nn.Module, batch: dict[str, Tensor], step: int | None = None, *, nonfinite: str = "stop",
             n_bits: int = 8) -> tuple[Tensor, dict]:
    """Mean bits/dim of dequantised images, or mean -log p(x) in nats of vectors; a NonFiniteError naming the step
    and the layer when log p is not finite and `nonfinite` is "stop"."""
    net = unwrap(model, FlowModel, "a normalizing flow")
    x = batch["x"]
    if x.dim() == 4:
        y = evaluate.dequantized(x, n_bits)
        log_p = net.log_prob(y)
        loss = bits_per_dim(log_p, net.dims, 2 ** n_bits).mean()
    else:
        y = x
        log_p = net.log_prob(y)
        loss = -log_p.mean()
    if not torch.isfinite(loss) and nonfinite == "stop":
        where = net.first_nonfinite(y) or "none (the loss itself)"
        at = f" at step {step + 1}" if step is not None else ""
        raise NonFiniteError(f"non-finite log-likelihood{at} in layer {where} (loss={loss.item()}); training stopped, "
                             "the last good checkpoint is kept")
    return loss, {"nll_nats": float(-log_p.detach().mean())}


def save_samples(x: Tensor, out_dir: Path, title: str) -> dict[str, str]:
    """samples.safetensors {"x"} and samples.png (an image grid, or a scatter plot of 2-D points)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "samples.safetensors") as tmp:
        save_file({"x": x.float().contiguous()}, str(tmp))
    png = out_dir / "samples.png"
    if x.dim() == 4:
        save_image_grid(x.clamp(-1, 1), png, nrow=10)
    else:
        save_scatter(x, png, title)
    return {"samples": str(out_dir / "samples.safetensors"), "image": str(png)}


class FlowTask(Task):
    model_config = FlowConfig
    samplers = ("ancestral",)

    def build(self, cfg: Config, data_info: dict) -> nn.Module:
        return build_flow(cfg.model, tuple(data_info["shape"]))

    def objectives(self, cfg: Config) -> list[Objective]:
        loss = partial(nll_loss, nonfinite=cfg.train.nonfinite, n_bits=cfg.model.n_bits)
        return [Objective("nll", loss, with_step=True)]

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        return nll_loss(model, batch)

    def sample(self, model: nn.Module, cfg: Config, *, run_dir: Path, out_dir: Path, n: int, sampler: str,
               steps: int, seed: int, temperature: float | None = None, **kw) -> dict[str, Any]:
        if kw:
            raise UserError(f"normalizing-flow sampling has no option(s) {', '.join(kw)}")
        T = cfg.model.temperature if temperature is None else temperature
        if not T > 0:
            raise UserError(f"--temperature must be > 0, got {T}")
        net = unwrap(model, FlowModel, "a normalizing flow")
        y = net.sample(n, T, torch.Generator().manual_seed(seed))
        x = evaluate.to_pixels(y, cfg.model.n_bits) if y.dim() == 4 else y
        files = save_samples(x, Path(out_dir), f"{cfg.preset} T={T}")
        return {**files, "n": n, "sampler": "ancestral", "temperature": T}

    def evaluate(self, model: nn.Module, cfg: Config, *, run_dir: Path, quick: bool = False, **kw) -> dict:
        """bits/dim on the whole test split (quick: the first 500 images, `n_eval` says how many), or KL to the
        exact toy2d density; the pictures of the module docstring unless quick."""
        if kw:
            raise UserError(f"normalizing-flow eval has no option(s) {', '.join(kw)}")
        net = unwrap(model, FlowModel, "a normalizing flow")
        data = load_data(cfg.data, "test")
        x = data.batch(torch.arange(min(len(data), QUICK_EVAL) if quick else len(data)))["x"]
        figures = Path(run_dir) / "figures"
        if x.dim() == 4:
            out = evaluate.image_bits_per_dim(net, x, cfg.model.n_bits)
            if not quick:
                figures.mkdir(parents=True, exist_ok=True)
                evaluate.temperature_pictures(net, cfg.model.n_bits, figures)
                out["reconstruction_max_error"] = evaluate.reconstruction_picture(
                    net, x[:10], cfg.model.n_bits, figures / "reconstruction.png")
            return out
        toy, exact = data.info.get("toy", ""), bool(data.info.get("closed_form_density"))
        out = evaluate.toy_kl(net, x, toy, exact)
        if not quick:
            figures.mkdir(parents=True, exist_ok=True)
            evaluate.density_picture(net, toy, exact, figures / "density.png")
        return out


TASK = FlowTask()
