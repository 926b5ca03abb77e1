"""Continuous diffusion and flow matching as a unigen family: the Task, its model config and its presets.

One network, one denoiser: the backbone (residual MLP for toy2d, DiT or UNet for images) is wrapped once by
`precond.make_denoiser` into D(x, sigma) -> x0_hat, and every sampler of `samplers.SAMPLERS` runs on that D.
Per-method code is only the training loss (`LOSSES`) and which schedules, parameterizations and samplers make
sense (`METHODS`).

    method  loss (losses.py)          schedule (default first)      network predicts     samplers (default first)
    ddpm    ddpm_loss, Ho et al. 2020  ddpm-linear | ddpm-cosine     eps | x0 | v         ddpm ancestral, ddim, ODE, SDE
    edm     edm_loss, Karras 2022      edm                           edm (c_skip/c_out)   heun, ODE, SDE
    fm      flow_matching_loss         flow                          flow (eps - x0)      flow-euler, flow-midpoint, ODE, SDE
    vp/ve   dsm_loss, Song et al. 2021 vp / ve                       score                euler-maruyama / pc, ODE, SDE

The network's time input is the schedule's c_noise times `c_noise_scale` (`C_NOISE_SCALE`), so that the sinusoidal
noise-level embedding of the backbones (frequencies 1 .. 1e-4) sees a range of a few hundred: the DDPM index
0..999 as is, the flow time t in [0, 1] times 1000, EDM's ln(sigma)/4 times 250.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unigen.config import Config, DataConfig, SampleConfig, TrainConfig
from unigen.families.continuous_diffusion import grids, losses
from unigen.families.continuous_diffusion.guidance import guided
from unigen.families.continuous_diffusion.precond import make_denoiser
from unigen.families.continuous_diffusion.samplers import SAMPLERS
from unigen.families.continuous_diffusion.schedules import get_schedule
from unigen.errors import UserError
from unigen.task import Task, unwrap as _unwrap


@dataclass
class DiffusionModelConfig:
    method: str = "edm"             # ddpm | edm | fm | vp | ve: the training loss (see METHODS)
    schedule: str = ""              # "" = the method's: ddpm-linear | ddpm-cosine | edm | flow | vp | ve
    parameterization: str = ""      # "" = the method's: eps | x0 | v (ddpm), edm, flow, score (vp, ve)
    grid: str = ""                  # sampling grid: "" = the schedule's paper grid | karras | logsnr
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
    """What a training method fixes: the schedules, network outputs and samplers that make sense with it."""
    schedules: tuple[str, ...]
    parameterizations: tuple[str, ...]
    samplers: tuple[str, ...]


_ODE = ("heun", "euler", "dpmpp-2m", "ddim")           # ddim (eta = 0) is Euler in EDM variables
_SDE = ("heun-churn", "euler-maruyama", "pc")
METHODS = {
    "ddpm": Method(("ddpm-linear", "ddpm-cosine"), ("eps", "x0", "v"), ("ddpm", *_ODE, *_SDE)),
    "edm": Method(("edm",), ("edm",), (*_ODE, *_SDE)),
    "fm": Method(("flow",), ("flow",), ("flow-euler", "flow-midpoint", *_ODE, *_SDE)),
    "vp": Method(("vp",), ("score",), ("euler-maruyama", "pc", *_ODE, "heun-churn")),
    "ve": Method(("ve",), ("score",), ("pc", "euler-maruyama", *_ODE, "heun-churn")),
}
C_NOISE_SCALE = {"ddpm-linear": 1.0, "ddpm-cosine": 1.0, "vp": 1.0, "ve": 100.0, "edm": 250.0, "flow": 1000.0}
# Steps when `--steps` is 0: NFE 35 for Heun (EDM's CIFAR-10 setting), 50 for first-order ODE steps.
DEFAULT_STEPS = {"euler": 50, "heun": 18, "heun-churn": 18, "ddim": 50, "ddpm": 100, "euler-maruyama": 100,
                 "pc": 100, "dpmpp-2m": 25, "flow-euler": 50, "flow-midpoint": 25}
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
        from unigen.models.mlp import MLPConfig, ResidualMLP
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
        from unigen.models.dit import DiT, dit_config
        extra = {k: v for k, v in (("dim", m.width), ("depth", m.depth)) if v}
        return DiT(dit_config(m.size, image_size=h, channels=c, patch=m.patch, num_classes=num_classes, **extra))
    from unigen.models.unet import UNet, unet_config
    extra = {k: v for k, v in (("base_width", m.width), ("num_res_blocks", m.depth)) if v}
    if m.width:                                    # narrow UNets: attention heads and norm groups must divide it
        extra.update(head_dim=min(32, m.width), norm_groups=min(8, m.width))
    if m.attn:
        try:
            extra["attn_resolutions"] = tuple(int(v) for v in m.attn.split(",") if v.strip())
        except ValueError:
            raise UserError(f"model.attn={m.attn!r} must be comma-separated feature-map sides, e.g. 7 or 14,7") from None
    return UNet(unet_config(m.size, image_size=h, channels=c, num_classes=num_classes, **extra))


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
    return losses.dsm_loss(model, x0, net.schedule, **cond)


LOSSES = {"ddpm": _ddpm, "edm": _edm, "fm": _fm, "vp": _dsm, "ve": _dsm}


# ---- sampling ----------------------------------------------------------------------------------------------------

def check_sampler(net: DiffusionNet, sampler: str) -> str:
    """`sampler` ("" = the method's default) if it makes sense for the model's method, else a UserError."""
    allowed = METHODS[net.config.method].samplers
    sampler = sampler or allowed[0]
    if sampler not in allowed:
        raise UserError(f"sampler {sampler!r} does not fit method {net.config.method}; use one of: {', '.join(allowed)}")
    return sampler


def sigmas_for(net: DiffusionNet, steps: int) -> Tensor:
    """The decreasing noise-level grid (steps + 1,) ending at 0 that the model samples on (`model.grid`)."""
    grid, s = net.config.grid, net.schedule
    if grid == "":
        return grids.default_sigmas(s, steps)
    if grid == "karras":
        return grids.karras_sigmas(steps, s.sigma_min, s.sigma_max)
    if grid == "logsnr":
        return grids.logsnr_sigmas(steps, s.sigma_min, s.sigma_max)
    raise UserError(f"model.grid={grid!r} is not one of: '' (the schedule's), karras, logsnr")


def denoiser(model: nn.Module):
    """D(x, sigma, y=None) -> x0_hat of a trained model (precond.make_denoiser with the model's settings)."""
    net = unwrap(model)
    return make_denoiser(model, net.parameterization, net.schedule, net.config.sigma_data)


@torch.no_grad()
def generate(model: nn.Module, n: int, *, sampler: str, steps: int, generator: torch.Generator,
             y: Tensor | None = None, guidance: float = 1.0, noise: Tensor | None = None,
             precision: str = "fp32", batch_size: int = 1000) -> tuple[Tensor, int]:
    """Draw `n` samples: x = sigma_0 z, then SAMPLERS[sampler] on the model's grid. Returns (x (n, ...), NFE).

    z is `noise` (n, ...) when given, else drawn from `generator`; class-conditional models get labels `y` (n,)
    (default: the null label, i.e. unconditional) and classifier-free `guidance` (1 = off). NFE counts the
    denoiser calls per sample (with guidance != 1 each call runs the network on a doubled batch).
    `precision` "bf16" runs the network under bf16 autocast (as trained with train.precision=bf16); the sampler's
    state and D's skip connection stay in float32.
    """
    net = unwrap(model)
    sampler = check_sampler(net, sampler)
    if not net.num_classes and (y is not None or guidance != 1):
        raise UserError("labels and guidance need a class-conditional model (model.class_cond=true)")
    sigmas = sigmas_for(net, steps)
    device = next(net.parameters()).device
    D, calls = denoiser(model), [0]

    def D_counted(x, sigma, **cond):
        calls[0] += 1
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
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
        out.append(SAMPLERS[sampler](D_b, float(sigmas[0]) * z, sigmas, generator=generator).cpu())
        chunks += 1
    return torch.cat(out), calls[0] // max(chunks, 1)                # (n, ...)


def save_scatter(x: Tensor, path: Path, title: str = "") -> Path:
    """Scatter plot of 2-D points (n, 2) as a PNG, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from unigen.plot import atomic_path
    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    pts = x.detach().float().cpu().numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
    ax.set_xlim(-3.5, 3.5)
    ax.set_ylim(-3.5, 3.5)
    ax.set_aspect("equal")
    ax.set_title(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def save_samples(x: Tensor, y: Tensor | None, out_dir: Path, title: str = "") -> dict[str, str]:
    """samples.safetensors ({"x", "y"?}) and samples.png (an image grid, or a scatter plot for 2-D points)."""
    from safetensors.torch import save_file

    from unigen.plot import atomic_path, save_image_grid
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
    samplers = ("heun", *(s for s in SAMPLERS if s != "heun"))   # heun fits every method: the default

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

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        net = unwrap(model)
        cond = {}
        if net.num_classes:
            cond = dict(y=batch["y"], p_uncond=net.config.p_uncond, num_classes=net.num_classes)
        return LOSSES[net.config.method](model, batch["x"], net, cond).mean()

    def sample(self, model: nn.Module, cfg: Config, *, run_dir: Path, out_dir: Path, n: int, sampler: str,
               steps: int, seed: int, guidance: float | None = None, **kw) -> dict[str, Any]:
        if kw:
            raise UserError(f"diffusion sampling has no option(s) {', '.join(kw)}")
        net = unwrap(model)
        sampler = check_sampler(net, sampler or cfg.sample.sampler)
        steps = steps or cfg.sample.steps or DEFAULT_STEPS[sampler]
        scale = cfg.sample.guidance if guidance is None else guidance
        y = torch.arange(n) % net.num_classes if net.num_classes else None
        if not net.num_classes and scale != 1:
            raise UserError(f"guidance {scale} needs a class-conditional model (model.class_cond=true)")
        g = torch.Generator(next(net.parameters()).device).manual_seed(seed)
        x, nfe = generate(model, n, sampler=sampler, steps=steps, generator=g, y=y, guidance=scale,
                          precision=cfg.train.precision)
        files = save_samples(x, y, Path(out_dir), f"{cfg.preset} {sampler} x{steps} (NFE {nfe})")
        return {**files, "n": n, "sampler": sampler, "steps": steps, "nfe": nfe,
                **({"guidance": scale} if net.num_classes else {})}

    def evaluate(self, model: nn.Module, cfg: Config, *, run_dir: Path, quick: bool = False,
                 nfe_sweep: bool = False, **kw) -> dict[str, float]:
        if kw:
            raise UserError(f"diffusion eval has no option(s) {', '.join(kw)}")
        from unigen.families.continuous_diffusion import evaluate as nfe_mod
        if nfe_sweep:
            return nfe_mod.run_sweep(model, cfg, Path(run_dir) / "nfe_sweep", quick=quick)
        net = unwrap(model)
        sampler = check_sampler(net, cfg.sample.sampler)
        steps = cfg.sample.steps or DEFAULT_STEPS[sampler]
        scorer = nfe_mod.make_scorer(net, cfg, quick=quick)
        return {**nfe_mod.score(model, scorer, sampler=sampler, steps=steps, guidance=cfg.sample.guidance,
                                precision=cfg.train.precision),
                **scorer.baseline()}


TASK = DiffusionTask()


# ---- presets --------------------------------------------------------------------------------------------------------

def _toy(method: str, preset: str, sampler: str, steps: int, **model) -> Config:
    """The toy2d trio shares data, backbone and training budget; only the method (and its sampler) differ."""
    return Config(task="diffusion", preset=preset, data=DataConfig(name="toy2d", toy="checkerboard"),
                  model=DiffusionModelConfig(method=method, backbone="mlp", size="small", **model),
                  train=TrainConfig(steps=3000, batch_size=512, lr=2e-3, warmup_steps=100, ema_decay=0.999,
                                    ckpt_every=1500, log_every=100),
                  sample=SampleConfig(sampler=sampler, steps=steps, n=2000))


def toy2d_ddpm() -> Config:
    """DDPM (eps-prediction, linear betas, 1000 levels) on 2-D checkerboard; ancestral sampling."""
    return _toy("ddpm", "toy2d-ddpm", "ddpm", 1000)


def toy2d_edm() -> Config:
    """EDM (Karras et al. 2022 preconditioning and loss) on 2-D checkerboard; Heun, 18 steps (35 NFE)."""
    return _toy("edm", "toy2d-edm", "heun", 18, sigma_data=1.0)


def toy2d_fm() -> Config:
    """Flow matching / rectified flow on 2-D checkerboard; Euler in flow time, 50 steps."""
    return _toy("fm", "toy2d-fm", "flow-euler", 50)


def _mnist(method: str, preset: str, sampler: str, steps: int, **model) -> Config:
    """A 0.3M-parameter UNet (base width 16; attention only at 7 x 7) trained 600 steps of batch 64 in bf16: the
    size that gives recognisable digits in a few CPU minutes (convolutions learn strokes far sooner than a DiT)."""
    return Config(task="diffusion", preset=preset, data=DataConfig(name="mnist"),
                  model=DiffusionModelConfig(method=method, backbone="unet", size="tiny", width=16, attn="7",
                                             **model),
                  train=TrainConfig(steps=600, batch_size=64, lr=2e-3, warmup_steps=50, ema_decay=0.999,
                                    precision="bf16", ckpt_every=300, log_every=50),
                  sample=SampleConfig(sampler=sampler, steps=steps, n=100))


def mnist_ddpm() -> Config:
    """DDPM (eps-prediction, linear betas) on MNIST with a small UNet; ancestral sampling, 100 steps."""
    return _mnist("ddpm", "mnist-ddpm", "ddpm", 100)


def mnist_edm() -> Config:
    """EDM on MNIST with a small UNet, recognisable digits in ~2-3 CPU minutes; Heun, 18 steps (35 NFE)."""
    return _mnist("edm", "mnist-edm", "heun", 18)


def mnist_fm() -> Config:
    """Flow matching on MNIST with a small UNet; midpoint, 18 steps (36 NFE)."""
    return _mnist("fm", "mnist-fm", "flow-midpoint", 18)


def mnist_cfg() -> Config:
    """Class-conditional EDM on MNIST with label dropout 0.1 and classifier-free guidance 2 at sampling."""
    cfg = _mnist("edm", "mnist-cfg", "heun", 18, class_cond=True, p_uncond=0.1)
    cfg.sample.guidance = 2.0
    return cfg


PRESETS = {"toy2d-ddpm": toy2d_ddpm, "toy2d-edm": toy2d_edm, "toy2d-fm": toy2d_fm, "mnist-ddpm": mnist_ddpm,
           "mnist-edm": mnist_edm, "mnist-fm": mnist_fm, "mnist-cfg": mnist_cfg}
