"""Sample quality of a trained diffusion model, and its sweep against the number of function evaluations (NFE).

A `Scorer` holds the reference statistics of the run's dataset for a fixed sample count n and turns a sample set
into metrics:
    toy2d        swd (sliced W_2 against n fresh data points) and mmd (unbiased MMD^2 on <= 2000 points)
    mnist        fd (Frechet distance on the features of unigen.metrics.features' CNN, against the 10,000 test images)
                 and, for class-conditional models, cond_accuracy (the CNN's accuracy on samples of labels y)
    other images fd_pixels (Frechet distance on raw pixels against the test split)
`baseline()` scores n held-out *real* points the same way (swd_data, fd_data, ...): the floor of each metric at
this n, since Frechet distances and SWD are biased upwards by a finite sample.

`run_sweep` scores every sampler of the model's method at every NFE budget on the same samples' noise seed and
writes RUN/nfe_sweep/{nfe_sweep.md, nfe_sweep.json, nfe_sweep.png}.

`likelihood` gives bits/dim of the 8-bit test images instead: DDPM's variational bound (vlb.py) or the
probability-flow ODE density of the dequantised images (likelihood.py), each an upper bound on the discrete NLL.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from unigen.config import Config
from unigen.data import from_uint8, load, sample_toy2d, to_uint8
from unigen.errors import UserError
from unigen.families.continuous_diffusion.grids import karras_sigmas
from unigen.families.continuous_diffusion.likelihood import bits_per_dim, dequantize, ode_nll
from unigen.families.continuous_diffusion.network import METHODS, check_sampler, denoiser, generate, unwrap
from unigen.families.continuous_diffusion.samplers import SAMPLERS, nfe
from unigen.families.continuous_diffusion.schedules import DiscreteVP, vp_sigma_from_alpha_bar
from unigen.families.continuous_diffusion.vlb import ddpm_vlb
from unigen.io import atomic_write_json, atomic_write_text
from unigen.metrics import sample_quality as metrics
from unigen.metrics.features import ensure_feature_net, mnist_features, mnist_predict, weights_path
from unigen.plot import figure
from unigen.train.precision import resolve_precision
from unigen.train.progress import work_progress

# NFE budgets of the sweep; every sampler gets the largest step count whose NFE fits each budget. Budgets above
# LONG_FROM (the 1000-step reference) go to the first-order samplers of LONG_SAMPLERS only, to keep sweeps affordable
# on a CPU: second-order solvers have converged long before 1000 NFE.
BUDGETS = (5, 10, 20, 35, 50, 100, 1000)
QUICK_BUDGETS = (10, 35)
LONG_FROM = 101
LONG_SAMPLERS = ("ddpm", "euler", "flow-euler", "reverse-diffusion")
SKIP = ("ddim",)            # ddim with eta = 0 is Euler step for step in EDM variables: same numbers as "euler"


@dataclass
class Scorer:
    n: int                                          # samples per score
    seed: int                                       # noise seed of the samples
    primary: str                                    # the metric the sweep tabulates
    measure: Callable[[Tensor, Tensor | None], dict]   # (samples, labels) -> metrics
    floor: Callable[[], dict]                       # the same metrics for n held-out real points
    labels: Tensor | None = None                    # class labels to sample with (class-conditional models)
    _floor: dict = field(default_factory=dict)

    def __call__(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        return {k: float(v) for k, v in self.measure(x, y).items()}

    def baseline(self) -> dict[str, float]:
        if not self._floor:
            self._floor = {f"{k}_data": float(v) for k, v in self.floor().items()}
        return self._floor


_REFERENCE: dict[tuple, tuple[Tensor, Tensor]] = {}      # Gaussian fits of reference features, per dataset


def _toy_scorer(cfg: Config, n: int, seed: int) -> Scorer:
    ref = sample_toy2d(cfg.data.toy, n, torch.Generator().manual_seed(1_000_003 + seed))   # (n, 2) fresh data
    m = min(n, 2000)

    def measure(x: Tensor, y=None) -> dict:
        return {"swd": metrics.sliced_wasserstein(x.float(), ref, 256, torch.Generator().manual_seed(seed)),
                "mmd": metrics.mmd_rbf(x[:m].float(), ref[:m])}

    def floor() -> dict:
        return measure(sample_toy2d(cfg.data.toy, n, torch.Generator().manual_seed(2_000_003 + seed)))

    return Scorer(n, seed, "swd", measure, floor)


def _image_scorer(cfg: Config, n: int, seed: int, num_classes: int) -> Scorer:
    mnist = cfg.data.name == "mnist"
    if mnist:
        net = ensure_feature_net()
        feats = lambda x: mnist_features(net, x)                      # noqa: E731  (N, hidden)
        key = ("mnist", cfg.data.image_size, str(weights_path()))
    else:
        feats = lambda x: x.flatten(1)                                # noqa: E731  (N, C*H*W)
        key = (cfg.data.name, cfg.data.image_size, getattr(cfg.data, "seed", 0))
    name = "fd" if mnist else "fd_pixels"
    if key not in _REFERENCE:
        _REFERENCE[key] = metrics.gaussian_fit(feats(load(cfg.data, "test").tensors["x"]))
    mu, S = _REFERENCE[key]

    def measure(x: Tensor, y: Tensor | None) -> dict:
        out = {name: metrics.frechet_distance(*metrics.gaussian_fit(feats(x)), mu, S)}
        if mnist and y is not None:
            out["cond_accuracy"] = (mnist_predict(net, x) == y).float().mean()
        return out

    def floor() -> dict:
        train = load(cfg.data, "train")
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
        b = train.batch(idx)
        return measure(b["x"], b["y"] if num_classes else None)

    labels = torch.arange(n) % num_classes if num_classes else None
    return Scorer(n, seed, name, measure, floor, labels)


def make_scorer(model, cfg: Config, *, quick: bool = False, n: int = 0, seed: int | None = None) -> Scorer:
    """The scorer of the run's dataset: n samples (default 1000 / 5000 toy2d, 256 / 2000 images, quick / full)."""
    net = unwrap(model)
    seed = cfg.sample.seed if seed is None else seed
    if cfg.data.name == "toy2d":
        return _toy_scorer(cfg, n or (1000 if quick else 5000), seed)
    if len(net.data_shape) == 3:
        return _image_scorer(cfg, n or (256 if quick else 2000), seed, net.num_classes)
    raise UserError(f"no sample-quality metric for dataset {cfg.data.name!r}")


def score(model, scorer: Scorer, *, sampler: str, steps: int, guidance: float = 1.0,
          precision: str = "fp32") -> dict[str, float]:
    """Draw scorer.n samples with `sampler` for `steps` steps and score them; adds nfe and seconds."""
    device = next(unwrap(model).parameters()).device
    g = torch.Generator(device).manual_seed(scorer.seed)
    t0 = time.perf_counter()
    x, n_fe = generate(model, scorer.n, sampler=sampler, steps=steps, generator=g, y=scorer.labels,
                       guidance=guidance if scorer.labels is not None else 1.0, precision=precision)
    seconds = time.perf_counter() - t0
    if not torch.isfinite(x).all():
        return {scorer.primary: math.inf, "nfe": float(n_fe), "seconds": seconds}
    return {**scorer(x, scorer.labels), "nfe": float(n_fe), "seconds": seconds}


def steps_for(sampler: str, budget: int) -> int:
    """The largest step count whose NFE fits in `budget`; UserError when even one step costs more."""
    if nfe(sampler, 1) > budget:
        raise UserError(f"NFE budget {budget} is below {sampler}'s smallest NFE ({nfe(sampler, 1)}, one step)")
    steps = 1
    while nfe(sampler, steps + 1) <= budget:
        steps += 1
    return steps


def sweep_plan(samplers: tuple[str, ...], budgets: tuple[int, ...]) -> list[tuple[str, int, tuple[int, ...]]]:
    """(sampler, steps, budgets served) for every sampler and budget; budgets that give the same step count share
    one entry. Budgets of LONG_FROM NFE and more go to LONG_SAMPLERS only; samplers that choose their own steps
    (SAMPLERS[name].nfe is None) have no budgets and are left out."""
    plan: dict[tuple[str, int], list[int]] = {}
    for s in samplers:
        if s in SAMPLERS and s not in SKIP and SAMPLERS[s].nfe is not None:
            for b in budgets:
                if b < LONG_FROM or s in LONG_SAMPLERS:
                    plan.setdefault((s, steps_for(s, b)), []).append(b)
    return [(s, k, tuple(bs)) for (s, k), bs in plan.items()]


def _ints(values, what: str, minimum: int) -> tuple[int, ...]:
    """A tuple of ints >= minimum from ints or strings (the CLI's comma-separated lists); UserError otherwise."""
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be integers, got {list(values)}") from None
    if not out or any(v < minimum for v in out):
        raise UserError(f"{what} must be integers >= {minimum}, got {list(values)}")
    return out


def sweep_options(model, *, samplers=None, budgets=None, n: int = 0, seeds=None) -> dict:
    """Check and convert `run_sweep`'s options: samplers that fit the run's method (old names accepted) and take an
    NFE budget, budgets >= 1 that every sampler can spend at least one step in, n >= 0, integer seeds."""
    net = unwrap(model)
    out: dict = {"n": _ints([n], "--n", 0)[0]}
    if samplers:
        out["samplers"] = tuple(check_sampler(net, str(s).strip()) for s in samplers)
        budgetless = [s for s in out["samplers"] if SAMPLERS[s].nfe is None]
        if budgetless:
            raise UserError(f"sampler(s) {', '.join(budgetless)} choose their own steps (error control) and cannot "
                            f"be given NFE budgets; leave them out of --samplers")
    if budgets:
        out["budgets"] = _ints(budgets, "NFE budgets", 1)
        for s in out.get("samplers", METHODS[net.config.method].samplers):
            for b in out["budgets"] if s in SAMPLERS and SAMPLERS[s].nfe is not None else ():
                steps_for(s, b)                                       # UserError if no step fits
    if seeds:
        out["seeds"] = _ints(seeds, "seeds", 0)
    return out


def run_sweep(model, cfg: Config, out_dir: Path, *, quick: bool = False, budgets: tuple[int, ...] | None = None,
              samplers: tuple[str, ...] | None = None, n: int = 0, precision: str | None = None,
              seeds: tuple[int, ...] | None = None) -> dict[str, float]:
    """Score every sampler at every NFE budget on one model; write a markdown table, JSON and a plot in out_dir.
    The network runs in `precision` (default: the run's train.precision; "auto" resolved on the model's device).
    With several noise `seeds` each cell is the mean over them (rows keep the per-seed values and the standard
    deviation)."""
    opts = sweep_options(model, samplers=samplers, budgets=budgets, n=n, seeds=seeds)
    net = unwrap(model)
    samplers = opts.get("samplers") or METHODS[net.config.method].samplers
    budgets = opts.get("budgets") or (QUICK_BUDGETS if quick else BUDGETS)
    scorers = [make_scorer(model, cfg, quick=quick, n=opts["n"], seed=sd) for sd in opts.get("seeds", (None,))]
    scorer = scorers[0]
    precision = resolve_precision(precision or cfg.train.precision, next(net.parameters()).device)
    rows = []
    for sampler, steps, served in sweep_plan(samplers, budgets):
        runs = [score(model, sc, sampler=sampler, steps=steps, guidance=cfg.sample.guidance, precision=precision)
                for sc in scorers]
        rows.append({"sampler": sampler, "steps": steps, "budgets": list(served), **_mean_over_seeds(runs, scorers)})
    out_dir = Path(out_dir)
    write_report(rows, scorer, cfg, out_dir, precision)
    flat = {f"{scorer.primary}@{r['sampler']}-{int(r['nfe'])}": r[scorer.primary] for r in rows}
    return {**flat, **scorer.baseline(), **_best(rows, scorer.primary, 35), **_best(rows, scorer.primary, 1000)}


def _mean_over_seeds(runs: list[dict], scorers: list[Scorer]) -> dict:
    """One seed: its scores. Several: the mean of each score, plus the primary metric's std and per-seed values."""
    if len(runs) == 1:
        return runs[0]
    metric = scorers[0].primary
    mean = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
    vals = [r[metric] for r in runs]
    std = (sum((v - mean[metric]) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    return {**mean, f"{metric}_std": std, "seeds": [sc.seed for sc in scorers], f"{metric}_per_seed": vals}


def _best(rows: list[dict], metric: str, max_nfe: int) -> dict[str, float]:
    ok = [r for r in rows if r["nfe"] <= max_nfe and math.isfinite(r[metric])]
    return {f"best_{metric}_nfe<={max_nfe}": min(r[metric] for r in ok)} if ok else {}


def write_report(rows: list[dict], scorer: Scorer, cfg: Config, out_dir: Path, precision: str = "fp32") -> None:
    """nfe_sweep.json (all rows), nfe_sweep.md (sampler x NFE table of the primary metric), nfe_sweep.png."""
    metric = scorer.primary
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"preset": cfg.preset, "metric": metric, "n": scorer.n, "seed": scorer.seed, "precision": precision,
            **scorer.baseline()}
    atomic_write_json(out_dir / "nfe_sweep.json", {**meta, "rows": rows})
    budgets = sorted({b for r in rows for b in r["budgets"]})
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    cell = {(r["sampler"], b): r for r in rows for b in r["budgets"]}
    lines = [f"# {metric} against NFE: {cfg.preset}, {scorer.n} samples, seed {scorer.seed}, network in {precision}", "",
             f"Real held-out data at the same n: {metric} = {scorer.baseline()[metric + '_data']:.4g} (the floor).",
             "Each sampler gets the most steps whose NFE fits the budget; the NFE actually used is in brackets when "
             "it is lower. `ddim` (eta = 0) is omitted: in EDM variables it is the same update as `euler`. Budgets "
             f"above {LONG_FROM - 1} NFE are run for {', '.join(LONG_SAMPLERS)} only.", "",
             "| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for s in names:
        vals = [_cell(cell.get((s, b)), b, metric) for b in budgets]
        lines.append(f"| {s} | " + " | ".join(vals) + " |")
    for cap in sorted({35, max(int(r["nfe"]) for r in rows)}):
        ok = [r for r in rows if r["nfe"] <= cap and math.isfinite(r[metric])]
        if ok:
            b = min(ok, key=lambda r: r[metric])
            lines.append(f"\nBest at NFE <= {cap}: {b['sampler']} ({b['steps']} steps, NFE {int(b['nfe'])}): "
                         f"{metric} = {b[metric]:.4g}")
    atomic_write_text(out_dir / "nfe_sweep.md", "\n".join(lines) + "\n")
    _plot(rows, names, metric, out_dir / "nfe_sweep.png", scorer.baseline()[metric + "_data"])


def _cell(r: dict | None, budget: int, metric: str) -> str:
    if r is None:
        return ""
    return f"{r[metric]:.4g}" + (f" ({int(r['nfe'])})" if int(r["nfe"]) != budget else "")


def _plot(rows: list[dict], names: list[str], metric: str, path: Path, floor: float) -> None:
    with figure(path) as ax:
        for s in names:
            pts = sorted((r["nfe"], r[metric]) for r in rows if r["sampler"] == s and math.isfinite(r[metric]))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=s)
        ax.axhline(floor, color="grey", linestyle="--", label="real data")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)


# ---- likelihood on the test split: bits/dim of 8-bit images -------------------------------------------------------

LIKELIHOODS = ("vlb", "ode")
LIKELIHOOD_OPTIONS = ("n", "batch_size", "seed", "n_t", "ode_steps")
NLL_IMAGES = {"vlb": (64, 0), "ode": (8, 256)}       # test images scored (quick, full); 0 = the whole test split


def test_images(cfg: Config, n: int) -> Tensor:
    """The first n (0: all) test images, which must be 8-bit levels 2k/255 - 1 (bits/dim is of 8-bit data)."""
    if cfg.data.name == "toy2d":
        raise UserError("bits/dim needs 8-bit image data; toy2d is continuous")
    x = load(cfg.data, "test").tensors["x"]
    x = x[:n] if n else x
    if not torch.equal(from_uint8(to_uint8(x)), x):
        raise UserError(f"bits/dim needs 8-bit images (levels 2k/255 - 1); {cfg.data.name} with these options "
                        f"is not (resized, or fewer levels)")
    return x


def likelihood(model, cfg: Config, *, kind: str, quick: bool = False, n: int = 0, batch_size: int = 64,
               seed: int = 0, n_t: int = 2, ode_steps: int = 16) -> dict[str, float]:
    """Mean bits/dim of 8-bit test images and its standard error over images (`bits_per_dim_se`, which includes
    the Monte-Carlo noise): kind "vlb", DDPM's variational bound (vlb.ddpm_vlb, `n_t` timesteps per image; DDPM
    models only; an upper bound on the discrete NLL), or "ode", the probability-flow ODE density of the uniformly
    dequantised image at sigma_min (likelihood.ode_nll: RK4 on `ode_steps` Karras steps, one Rademacher probe),
    + 7 bits for the 2/256 cells (an upper bound on the discrete NLL in expectation over the dequantisation, up to
    the solver's and the prior's error). Images: the first `n` (default NLL_IMAGES). Class-conditional models are
    scored unconditionally (the null label)."""
    if kind not in LIKELIHOODS:
        raise UserError(f"unknown likelihood {kind!r}; choose one of: {', '.join(LIKELIHOODS)}")
    net = unwrap(model)
    if kind == "vlb" and not isinstance(net.schedule, DiscreteVP):
        raise UserError(f"the DDPM variational bound needs a DDPM model (discrete VP schedule), not method "
                        f"{net.config.method}; use the ode likelihood")
    x_all = test_images(cfg, n or NLL_IMAGES[kind][quick])
    device = next(net.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    D = denoiser(model)
    cond = lambda b: {"y": torch.full((b,), net.num_classes, device=device)} if net.num_classes else {}  # noqa: E731
    parts: list[dict] = []
    bar = work_progress(len(x_all), f"likelihood {kind}", "image")
    for i in range(0, len(x_all), batch_size):
        x0 = x_all[i:i + batch_size].to(device)
        parts.append(_vlb_batch(D, net, x0, cond(len(x0)), n_t, g) if kind == "vlb" else
                     _ode_batch(D, net, x0, cond(len(x0)), ode_steps, g))
        bar.update(i + len(x0))
    bar.close()
    per = {k: torch.cat([p[k] for p in parts]).double() for k in parts[0]}
    bpd = per.pop("bits_per_dim")
    out = {"bits_per_dim": bpd.mean().item(), "bits_per_dim_se": (bpd.std() / math.sqrt(len(bpd))).item(),
           "images": float(len(bpd))}
    return {**out, **{k: v.mean().item() for k, v in per.items()}}


def ddpm_x0_fn(D, alpha_bar: Tensor, cond: dict):
    """vlb.py's x0_fn from a denoiser in EDM variables: native x_t at DDPM level n is s (x0 + sigma_n eps) with
    s = sqrt(abar_n), sigma_n = sqrt((1 - abar_n) / abar_n), so x0_hat = D(x_t / s, sigma_n)."""
    sigmas = vp_sigma_from_alpha_bar(alpha_bar)

    def x0_fn(x_t: Tensor, n: Tensor) -> Tensor:
        s = alpha_bar[n].sqrt().float().reshape(-1, *([1] * (x_t.ndim - 1)))
        return D(x_t / s, sigmas[n].float(), **cond)
    return x0_fn


def _vlb_batch(D, net, x0: Tensor, cond: dict, n_t: int, g: torch.Generator) -> dict[str, Tensor]:
    ab = net.schedule.alpha_bar.to(x0.device)
    with torch.no_grad():
        r = ddpm_vlb(ddpm_x0_fn(D, ab, cond), x0, ab, n_t=n_t, generator=g)
    d_ln2 = x0[0].numel() * math.log(2)
    return {"bits_per_dim": r["bits_per_dim"], "prior_bpd": r["prior"] / d_ln2, "diffusion_bpd": r["diffusion"] / d_ln2,
            "decoder_bpd": r["decoder"] / d_ln2, "n_t": torch.full_like(r["nll"], n_t)}


def _ode_batch(D, net, x0: Tensor, cond: dict, steps: int, g: torch.Generator) -> dict[str, Tensor]:
    s = net.schedule
    grid = karras_sigmas(steps + 1, s.sigma_min, s.sigma_max)[:-1].flip(0).to(x0.device)   # increasing, steps + 1
    x = dequantize(x0, generator=g)
    r = ode_nll(lambda x_, sigma: D(x_, sigma, **cond), x, grid, trace="hutchinson", generator=g)
    return {"bits_per_dim": bits_per_dim(r["nll"], x0[0].numel()), "nfe": torch.full_like(r["nll"], r["nfe"]),
            "ode_steps": torch.full_like(r["nll"], steps)}
