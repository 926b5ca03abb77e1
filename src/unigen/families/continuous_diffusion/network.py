"""The continuous-diffusion network and how to sample from it: the model config, the method table, the backbone
wrapped as a denoiser, and `generate` (noise -> samples with any registered sampler).

    method  loss (losses.py)          schedule (default first)      network predicts     default sampler
    ddpm    ddpm_loss, Ho et al. 2020  ddpm-linear | -cosine | -scaled-linear  eps | x0 | v  ddpm ancestral
    edm     edm_loss, Karras 2022      edm                           edm (c_skip/c_out)   heun
    fm      flow_matching_loss         flow                          flow (eps - x0)      flow-euler
    vp/ve   dsm_loss, Song et al. 2021 vp / ve                       score | sigma-score  reverse-diffusion / pc
    subvp   dsm_loss, Song et al. 2021 subvp (Eq. 12)                score | sigma-score  reverse-diffusion
Every method also takes every ODE and SDE sampler of `samplers.SAMPLERS`; ddpm adds ancestral sampling, fm the
flow-time solvers.

The network's time input is the schedule's c_noise times `c_noise_scale` (`C_NOISE_SCALE`), so that the sinusoidal
noise-level embedding of the backbones (frequencies 1 .. 1e-4) sees a range of a few hundred: the DDPM index
0..999 as is, the flow time t in [0, 1] times 1000, EDM's ln(sigma)/4 times 250.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unigen.errors import UserError
from unigen.families.continuous_diffusion import grids
from unigen.families.continuous_diffusion.guidance import guided
from unigen.families.continuous_diffusion.precond import make_denoiser
from unigen.families.continuous_diffusion.samplers import SAMPLERS, canonical
from unigen.families.continuous_diffusion.schedules import DiscreteVP, Flow, get_schedule
from unigen.models.dit import DiT, dit_config
from unigen.models.mlp import MLPConfig, ResidualMLP
from unigen.models.unet import UNet, unet_config
from unigen.task import unwrap as _unwrap
from unigen.train.precision import autocast, resolve_precision
from unigen.train.progress import work_progress


@dataclass
class DiffusionModelConfig:
    method: str = "edm"             # ddpm | edm | fm | vp | ve | subvp: the training loss (see METHODS)
    schedule: str = ""              # "" = the method's: ddpm-linear | ddpm-cosine | ddpm-scaled-linear | edm | flow | vp |
                                    # subvp | ve
    parameterization: str = ""      # "" = the method's: eps | x0 | v (ddpm), edm, flow, score | sigma-score (vp, ve)
    grid: str = ""                  # sampling grid: "" = the schedule's paper grid | karras | logsnr | diffusers
    backbone: str = "mlp"           # mlp (vectors, toy2d) | dit | unet (images)
    size: str = "small"             # backbone size preset (mlp: tiny | small; dit: DIT_SIZES; unet: UNET_SIZES)
    width: int = 0                  # overrides the size's width (mlp width, dit dim, unet base_width); 0 = keep
    depth: int = 0                  # overrides the size's depth (mlp / dit blocks, unet res blocks); 0 = keep
    patch: int = 4                  # dit: patch side
    attn: str = ""                  # unet: feature-map sides with self-attention, e.g. "7" or "14,7"; "" = UNet's default
    class_cond: bool = False        # condition on class labels, with a learned null label for guidance
    p_uncond: float = 0.1           # class_cond: label-dropout probability (Ho & Salimans 2022, Alg. 1)
    sigma_data: float = 0.5         # edm: data standard deviation (EDM Table 1)
    P_mean: float = -1.2            # edm: training ln(sigma) ~ N(P_mean, P_std^2) (EDM Table 1)
    P_std: float = 1.2
    min_snr_gamma: float = 0.0      # ddpm: min-SNR-gamma loss weight (Hang et al. 2023); 0 = off
    t_dist: str = "uniform"         # fm: training time distribution, uniform | logit-normal (Esser et al. 2024)
    c_noise_scale: float = 0.0      # multiplies the network's time input; 0 = the schedule's (C_NOISE_SCALE)


@dataclass(frozen=True)
class Method:
    """What a training method fixes: the schedules and network outputs that make sense with it, its default
    sampler, and which samplers fit (every "ode" and "sde" sampler, plus those of `sampler_kind`)."""
    schedules: tuple[str, ...]
    parameterizations: tuple[str, ...]
    default_sampler: str
    sampler_kind: str = ""          # "ddpm" | "flow": samplers that need this method's own variables

    @property
    def samplers(self) -> tuple[str, ...]:
        """The samplers that fit, the default first (the rest in `SAMPLERS` order)."""
        fits = [s for s, spec in SAMPLERS.items() if spec.kind in ("ode", "sde", self.sampler_kind)]
        return (self.default_sampler, *(s for s in fits if s != self.default_sampler))


METHODS = {
    "ddpm": Method(("ddpm-linear", "ddpm-cosine", "ddpm-scaled-linear"), ("eps", "x0", "v"), "ddpm", "ddpm"),
    "edm": Method(("edm",), ("edm",), "heun"),
    "fm": Method(("flow",), ("flow",), "flow-euler", "flow"),
    "vp": Method(("vp",), ("score", "sigma-score"), "reverse-diffusion"),
    "ve": Method(("ve",), ("score", "sigma-score"), "pc"),
    "subvp": Method(("subvp",), ("score", "sigma-score"), "reverse-diffusion"),
}
C_NOISE_SCALE = {"ddpm-linear": 1.0, "ddpm-cosine": 1.0, "ddpm-scaled-linear": 1.0, "vp": 1.0, "subvp": 1.0, "ve": 100.0,
                 "edm": 250.0, "flow": 1000.0}
MLP_SIZES = {"tiny": dict(width=64, depth=2), "small": dict(width=256, depth=4)}


def resolved(m: DiffusionModelConfig) -> tuple[str, str]:
    """(schedule, parameterization) with the method's defaults filled in; UserError for a bad combination."""
    if m.method not in METHODS:
        raise UserError(f"model.method={m.method!r} is not one of: {', '.join(METHODS)}")
    meth = METHODS[m.method]
    schedule, param = m.schedule or meth.schedules[0], m.parameterization or meth.parameterizations[0]
    if schedule not in meth.schedules:
        raise UserError(f"model.schedule={schedule!r} does not fit method {m.method}; use one of: {', '.join(meth.schedules)}")
    if param not in meth.parameterizations:
        raise UserError(f"model.parameterization={param!r} does not fit method {m.method}; "
                        f"use one of: {', '.join(meth.parameterizations)}")
    return schedule, param


@functools.cache
def _schedule(name: str):
    return get_schedule(name)


class DiffusionNet(nn.Module):
    """A backbone plus what its output means (`config`, read by the loss and the sampler). No noise, no loss."""

    def __init__(self, backbone: nn.Module, config: DiffusionModelConfig, data_shape: tuple[int, ...],
                 num_classes: int = 0):
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        schedule_name, self.parameterization = resolved(config)
        self.schedule = _schedule(schedule_name)
        self.c_noise_scale = config.c_noise_scale or C_NOISE_SCALE[schedule_name]

    def forward(self, x: Tensor, c_noise: Tensor, y: Tensor | None = None) -> Tensor:
        return self.backbone(x, c_noise * self.c_noise_scale, y)   # same shape as x


def unwrap(model: nn.Module) -> DiffusionNet:
    """The DiffusionNet inside a DDP / compile wrapper."""
    return _unwrap(model, DiffusionNet, "a diffusion model")


def build_backbone(m: DiffusionModelConfig, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The backbone named by `m.backbone`, sized by `m.size` / `m.width` / `m.depth`, for data of `shape`."""
    if m.backbone == "mlp":
        if len(shape) != 1 or m.size not in MLP_SIZES:
            raise UserError(f"the mlp backbone needs vector data and model.size in {', '.join(MLP_SIZES)}; "
                            f"got shape {shape}, size {m.size!r}")
        size = {**MLP_SIZES[m.size], **{k: v for k, v in (("width", m.width), ("depth", m.depth)) if v}}
        return ResidualMLP(MLPConfig(dim=shape[0], num_classes=num_classes, **size))
    if m.backbone not in ("dit", "unet"):
        raise UserError(f"model.backbone={m.backbone!r} is not one of: mlp, dit, unet")
    if len(shape) != 3 or shape[1] != shape[2]:
        raise UserError(f"the {m.backbone} backbone needs square images (C, H, W), got data of shape {shape}")
    c, h, _ = shape
    if m.backbone == "dit":
        extra = {k: v for k, v in (("dim", m.width), ("depth", m.depth)) if v}
        return DiT(dit_config(m.size, image_size=h, channels=c, patch=m.patch, num_classes=num_classes, **extra))
    extra = {k: v for k, v in (("base_width", m.width), ("num_res_blocks", m.depth)) if v}
    if m.width:                                    # narrow UNets: attention heads and norm groups must divide it
        extra.update(head_dim=min(32, m.width), norm_groups=min(8, m.width))
    if m.attn:
        try:
            extra["attn_resolutions"] = tuple(int(v) for v in m.attn.split(",") if v.strip())
        except ValueError:
            raise UserError(f"model.attn={m.attn!r} must be comma-separated feature-map sides, e.g. 7 or 14,7") from None
    return UNet(unet_config(m.size, image_size=h, channels=c, num_classes=num_classes, **extra))


# ---- sampling ----------------------------------------------------------------------------------------------------

def check_sampler(net: DiffusionNet, sampler: str) -> str:
    """`sampler` ("" = the method's default) if it makes sense for the model's method, else a UserError."""
    allowed = METHODS[net.config.method].samplers
    sampler = canonical(sampler or allowed[0])
    if sampler not in allowed:
        raise UserError(f"sampler {sampler!r} does not fit method {net.config.method}; use one of: {', '.join(allowed)}")
    return sampler


def sigmas_for(net: DiffusionNet, steps: int) -> Tensor:
    """The decreasing noise-level grid (steps + 1,) that the model samples on (`model.grid`): the schedule's paper
    grid, karras, logsnr, or "diffusers": Stable Diffusion's DDIM grid for DDPM schedules (leading spacing,
    steps_offset 1, ending at the first level: set_alpha_to_one=False) and FlowMatchEulerDiscreteScheduler's grid for
    flow (from t = 1, pure noise, to 1/1000, then 0)."""
    grid, s = net.config.grid, net.schedule
    if grid == "":
        return grids.default_sigmas(s, steps)
    if grid == "karras":
        return grids.karras_sigmas(steps, s.sigma_min, s.sigma_max)
    if grid == "logsnr":
        return grids.logsnr_sigmas(steps, s.sigma_min, s.sigma_max)
    if grid == "diffusers" and isinstance(s, DiscreteVP):
        return grids.ddpm_sigmas(s, steps, "leading", steps_offset=1, set_alpha_to_one=False)
    if grid == "diffusers" and isinstance(s, Flow):
        return grids.flow_sigmas(steps, t_max=1.0, t_min=1 / 1000)
    raise UserError(f"model.grid={grid!r} is not one of: '' (the schedule's), karras, logsnr, diffusers (DDPM and "
                    f"flow schedules only)")


def denoiser(model: nn.Module):
    """D(x, sigma, y=None) -> x0_hat of a trained model (precond.make_denoiser with the model's settings)."""
    net = unwrap(model)
    return make_denoiser(model, net.parameterization, net.schedule, net.config.sigma_data)


@torch.no_grad()
def generate(model: nn.Module, n: int, *, sampler: str, steps: int, generator: torch.Generator,
             y: Tensor | None = None, guidance: float = 1.0, noise: Tensor | None = None,
             precision: str = "fp32", batch_size: int = 1000, callback=None) -> tuple[Tensor, int]:
    """Draw `n` samples: x = sigma_0 z, then SAMPLERS[sampler] on the model's grid. Returns (x (n, ...), NFE).

    z is `noise` (n, ...) when given, else drawn from `generator`; class-conditional models get labels `y` (n,)
    (default: the null label, i.e. unconditional) and classifier-free `guidance` (1 = off). NFE counts the
    denoiser calls per sample (with guidance != 1 each call runs the network on a doubled batch).
    `precision` "bf16" runs the network under bf16 autocast ("auto": where bf16 is native, train/precision.py); the
    sampler's state and D's skip connection stay in float32. `callback` is the sampler's step report ({"i", "x",
    "sigma", "denoised"}, samplers.py), called for each chunk of `batch_size` samples.
    """
    net = unwrap(model)
    sampler = check_sampler(net, sampler)
    if not net.num_classes and (y is not None or guidance != 1):
        raise UserError("labels and guidance need a class-conditional model (model.class_cond=true)")
    sigmas = sigmas_for(net, steps)
    device = next(net.parameters()).device
    precision = resolve_precision(precision, device)                 # once, not per denoiser call
    D, calls = denoiser(model), [0]
    spec = SAMPLERS[sampler]
    per_chunk = spec.nfe(len(sigmas) - 1) if spec.nfe else len(sigmas) - 1       # adaptive samplers: a guess
    bar = work_progress(math.ceil(n / batch_size) * per_chunk, f"sample {sampler}", "call")

    def D_counted(x, sigma, **cond):
        calls[0] += 1
        bar.update(min(calls[0], bar.total))
        with autocast(precision, device):
            return D(x, sigma, **cond).to(x.dtype)

    out, chunks = [], 0
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        z = noise[i:i + b].to(device) if noise is not None else \
            torch.randn((b, *net.data_shape), generator=generator, device=device)
        D_b = D_counted
        if net.num_classes:
            y_b = y[i:i + b].to(device) if y is not None else torch.full((b,), net.num_classes, device=device)
            D_b = guided(D_counted, y_b, net.num_classes, guidance)
        x = z if math.isinf(sigmas[0]) else float(sigmas[0]) * z     # a flow grid from t = 1 starts at x_t = z
        out.append(SAMPLERS[sampler](D_b, x, sigmas, generator=generator, callback=callback).cpu())
        chunks += 1
    bar.close()
    return torch.cat(out), calls[0] // max(chunks, 1)                # (n, ...)
