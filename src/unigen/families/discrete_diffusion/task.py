"""Discrete diffusion language models as a family: MDLM (sampled with LLaDA / Fast-dLLM or MDLM's ancestral
sampler), SEDD, BD3-LM and the autoregressive baseline, all on one Llama-style `TextTransformer` (network.py).

One Task per method (`TASKS`: "mdlm", "sedd", "bd3", "ar"), sharing the model config `DiscreteLMConfig`, so any
preset can be switched to another method with `--task=...`. All that a method adds is its entry in `METHODS`: its
loss, its held-out bound (evaluate.py), the view its samplers take of the network (network.py), its samplers
(samplers.SAMPLERS, all called the same way), its canvas and its default number of steps. The Task reads only
that entry, so it has no branch on a method or sampler name. The presets are in presets.py (`PRESETS` is also
importable from here, for the registry).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from unigen.config import Config
from unigen.data import load as load_data
from unigen.data import load_tokenizer
from unigen.data.pixels import from_pixel_tokens
from unigen.errors import UserError
from unigen.families.discrete_diffusion.ar import ar_loss
from unigen.families.discrete_diffusion.bd3 import bd3_loss
from unigen.families.discrete_diffusion.clipsearch import MAX_BATCHES, check_interval, clip_grid
from unigen.families.discrete_diffusion.evaluate import (EVAL_MC, QUICK_MC, QUICK_SEQS, Bound, bound_bd3, bound_mdlm,
                                                         bound_sedd, heldout, nll_ar,
                                                         search_clipping)
from unigen.families.discrete_diffusion.genppl import generative_perplexity
from unigen.families.discrete_diffusion.llada import left_pad
from unigen.families.discrete_diffusion.masked import mdlm_loss
from unigen.families.discrete_diffusion.network import (DiscreteLM, DiscreteLMConfig, block_denoiser, build_network,
                                                        carried_ar_loss, causal_denoiser, check_network,
                                                        masked_denoiser, score_denoiser, unwrap, with_bos)
from unigen.families.discrete_diffusion.presets import PRESETS  # noqa: F401  (the registry reads it here)
from unigen.families.discrete_diffusion.samplers import SAMPLERS, options
from unigen.families.discrete_diffusion.sedd import sedd_loss
from unigen.families.discrete_diffusion.watch import Watch, render
from unigen.io import atomic_write_json, atomic_write_text, read_json
from unigen.plot import save_image_grid
from unigen.task import Task
from unigen.train import Objective
from unigen.train.progress import work_progress


# ---------------------------------------------------------------------------------------------------------- losses
def _loss_mdlm(model: nn.Module, lm: DiscreteLM, ids: Tensor) -> Tensor:
    return mdlm_loss(model, ids, lm.mask_id, antithetic=True)


def _loss_sedd(model: nn.Module, lm: DiscreteLM, ids: Tensor) -> Tensor:
    d = score_denoiser(lm, model)
    return sedd_loss(d.log_score, ids, **d.graph_kw)


def _loss_bd3(model: nn.Module, lm: DiscreteLM, ids: Tensor) -> Tensor:
    m = lm.config
    return bd3_loss(model, ids, block_size=m.block_size, mask_id=lm.mask_id, beta=m.beta, omega=m.omega,
                    time_cond=lm.time_cond, resample=m.resample, ignore_bos=m.ignore_bos)


def _loss_ar(model: nn.Module, lm: DiscreteLM, ids: Tensor) -> Tensor:
    return ar_loss(model, with_bos(ids, lm.bos_id), mask_id=lm.mask_id)


# ---------------------------------------------------------------------------------- config rules, canvases, steps
def _no_check(m: DiscreteLMConfig, data_info: dict) -> None:
    pass


def _check_bd3(m: DiscreteLMConfig, data_info: dict) -> None:
    if m.block_size <= 0 or data_info["seq_len"] % m.block_size:
        raise UserError(f"model.block_size={m.block_size} must be positive and divide data.seq_len="
                        f"{data_info['seq_len']}")
    if not 0 < m.beta <= m.omega <= 1:
        raise UserError(f"model.beta and model.omega need 0 < beta <= omega <= 1, got {m.beta}, {m.omega}")


def _check_ar(m: DiscreteLMConfig, data_info: dict) -> None:
    if m.time_cond:
        raise UserError("model.time_cond must be false for the autoregressive model (it has no noise level)")


def _canvas(lm: DiscreteLM, prompt: list[int], length: int) -> tuple[list[int], int]:
    """A canvas row and the column where the text (the prompt) starts: here the prompt, then `length` masks."""
    return prompt + [lm.mask_id] * length, 0


def _canvas_ar(lm: DiscreteLM, prompt: list[int], length: int) -> tuple[list[int], int]:
    """AR reads [BOS; prompt] first."""
    return [lm.bos_id] + prompt + [lm.mask_id] * length, 1


def _canvas_bd3(lm: DiscreteLM, prompt: list[int], length: int) -> tuple[list[int], int]:
    """BD3 fills whole blocks: masks up to the next multiple of the block size (the padding is cut after)."""
    total = len(prompt) + length
    total += -total % lm.config.block_size
    return prompt + [lm.mask_id] * (total - len(prompt)), 0


def _one_token_per_step(lm: DiscreteLM, length: int) -> int:
    return length


def _block_size_steps(lm: DiscreteLM, length: int) -> int:
    """One token per step within each block."""
    return lm.config.block_size


# --------------------------------------------------------------------------------------------------- the methods
@dataclass(frozen=True)
class Method:
    """Everything one method adds to the shared network. A new method is one entry of `METHODS`."""
    samplers: tuple[str, ...]                               # keys of samplers.SAMPLERS; the first is the default
    loss: Callable[[nn.Module, DiscreteLM, Tensor], Tensor]  # (model, lm, ids (B, T)) -> nats per token
    bound: Bound                                            # held-out (lm, x0, mc, batch) -> nats (S,), MC se (S,)
    denoiser: Callable[[DiscreteLM], Any]                    # the network as its samplers take it
    canvas: Callable[[DiscreteLM, list[int], int], tuple[list[int], int]] = _canvas
    default_steps: Callable[[DiscreteLM, int], int] = _one_token_per_step   # (lm, generated length) -> steps
    check: Callable[[DiscreteLMConfig, dict], None] = _no_check  # the method's own config rules (UserError)
    causal: bool = False                                    # a causal network
    exact: bool = False                                     # `bound` is the exact NLL (no Monte Carlo)


METHODS = {
    "mdlm": Method(("llada", "llada-random", "mdlm", "fast-dllm", "fast-dllm-prefix", "fast-dllm-dual"), _loss_mdlm,
                   bound_mdlm, masked_denoiser),
    "sedd": Method(("sedd-analytic", "sedd-euler"), _loss_sedd, bound_sedd, score_denoiser),
    "bd3": Method(("bd3", "bd3-fh"), _loss_bd3, bound_bd3, block_denoiser, canvas=_canvas_bd3,
                  default_steps=_block_size_steps, check=_check_bd3),
    "ar": Method(("ar",), _loss_ar, nll_ar, causal_denoiser, canvas=_canvas_ar, check=_check_ar, causal=True,
                 exact=True),
}


def _check_carry(cfg: Config, lm: DiscreteLM) -> None:
    """Carried state needs a recurrent network (so the AR method), one micro-batch per step, one process."""
    if not hasattr(lm.net, "n_state"):
        raise UserError(f"model.carry_state needs a recurrent model.backbone, got {cfg.model.backbone}")
    if cfg.train.grad_accum != 1:
        raise UserError(f"model.carry_state needs train.grad_accum=1 (each step continues the last), got "
                        f"{cfg.train.grad_accum}")
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise UserError("model.carry_state runs in one process (the streams are not split across ranks)")


def _all_windows(cfg: Config) -> Tensor:
    """Every training window (N, T), in corpus order."""
    data = load_data(cfg.data, "train")
    return data.batch(torch.arange(len(data)))["ids"]


# -------------------------------------------------------------------------------------------------------- sampling
NEUTRAL = {"guidance": 1.0, "use_cache": True, "temperature": 1.0, "logits_eos_inf": False,
           "confidence_eos_eot_inf": False}  # Task.sample's sampler options, at "off"


def resolve_options(sampler: str, asked: dict[str, Any]) -> dict[str, Any]:
    """The options `sampler` takes, at the values asked. Asking a sampler that lacks an option for anything but
    its NEUTRAL value is a UserError naming the samplers that have it."""
    takes = options(sampler)
    for k, v in asked.items():
        if k not in takes and v != NEUTRAL[k]:
            having = ", ".join(s for s in SAMPLERS if k in options(s))
            raise UserError(f"{k}={v} applies to the samplers {having}, not {sampler!r}")
    return {k: v for k, v in asked.items() if k in takes}


def _write_samples(out_dir: Path, texts: list[str], record: dict[str, Any]) -> tuple[Path, Path]:
    """out_dir/samples.txt (the texts) and samples.json (`record`), each written atomically."""
    txt, js = Path(out_dir) / "samples.txt", Path(out_dir) / "samples.json"
    atomic_write_text(txt, "".join(f"=== sample {i + 1} ===\n{t}\n\n" for i, t in enumerate(texts)))
    atomic_write_text(js, json.dumps(record, indent=1))
    return txt, js


def _hook(viewer: Watch | None, callback, mask_id: int, lo: int, hi: int, prompt_tokens: int, bar=None):
    """The sampler's per-step callback: the terminal `viewer` sees the whole canvas, `callback` a dict with the
    canvas cut to the prompt and the generated columns (no BOS, no block padding), as `sample` returns it (a view
    of the sampler's canvas, valid during the call: samplers update it in place); `bar` counts the steps."""
    if callback is None and bar is None:
        return viewer
    step = [0]

    def each(x: Tensor) -> None:
        if viewer is not None:
            viewer(x)
        if callback is not None:
            callback({"i": step[0], "canvas": x[:, lo:hi], "mask_id": mask_id, "prompt_tokens": prompt_tokens})
        step[0] += 1
        if bar is not None:
            bar.update(min(step[0], bar.total))
    return each


class DiscreteLMTask(Task):
    model_config = DiscreteLMConfig

    def __init__(self, method: str):
        self.method, self.spec = method, METHODS[method]
        self.samplers = self.spec.samplers

    def build(self, cfg: Config, data_info: dict) -> nn.Module:
        check_network(cfg, data_info, self.method)
        self.spec.check(cfg.model, data_info)
        lm = build_network(cfg.model, data_info, self.method, causal=self.spec.causal)
        if cfg.model.carry_state:
            _check_carry(cfg, lm)
            lm.enable_carry(cfg.train.batch_size)
        return lm

    def objectives(self, cfg: Config):
        """`fit`'s objective: the method's loss; with model.carry_state, `network.carried_ar_loss` over the training
        windows in corpus order, as B contiguous streams (the loop's own shuffled batch is then unused; the data
        position is still the step count, and the carried state is a buffer saved in every checkpoint)."""
        if not cfg.model.carry_state:
            return self.loss
        windows = _all_windows(cfg)
        return [Objective("main", lambda model, batch, step: carried_ar_loss(model, unwrap(model), windows, step),
                          with_step=True)]

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return self.spec.loss(model, unwrap(model), batch["ids"])

    @torch.no_grad()
    def sample(self, model: nn.Module, cfg: Config, *, run_dir: Path, out_dir: Path, n: int, sampler: str,
               steps: int, seed: int, prompt: str | list[str] | None = None, watch: bool = False,
               guidance: float | None = None, length: int = 0, temperature: float = 1.0, use_cache: bool = True,
               logits_eos_inf: bool = False, confidence_eos_eot_inf: bool = False, callback=None,
               **kw) -> dict[str, Any]:
        """`n` texts continuing `prompt` (none: from scratch; a list: one row per prompt, left-padded with an
        attention mask when their lengths differ); `length` generated tokens (0: fill data.seq_len). The EOS
        switches are LLaDA's (`llada.sample_llada`). Writes out_dir/samples.txt and samples.json (tokens, NFE,
        model calls, tokens/s). `callback` gets {"i", "canvas" (n, prompt + length), "mask_id", "prompt_tokens"}
        after every sampler step (`_hook`)."""
        if kw:
            raise UserError(f"{self.method} sampling has no option(s) {', '.join(kw)}")
        lm = unwrap(model)
        sampler = sampler or cfg.sample.sampler or self.samplers[0]
        if sampler not in self.samplers:
            raise UserError(f"unknown sampler {sampler!r} for {self.method}; known: {', '.join(self.samplers)}")
        scale = cfg.sample.guidance if guidance is None else guidance
        tok = load_tokenizer(run_dir)
        prompts = [tok.encode(p) if p else [] for p in ([prompt] * n if not isinstance(prompt, list) else prompt)]
        ids = max(prompts, key=len)
        length = length or cfg.data.seq_len - len(ids)
        if length <= 0:
            raise UserError(f"the prompt is {len(ids)} tokens, which fills data.seq_len={cfg.data.seq_len}: "
                            "shorten it or pass a length to generate")
        if scale != 1 and not all(prompts):
            raise UserError(f"guidance {scale} needs a prompt (the unconditional pass masks it)")
        if temperature < 0:
            raise UserError(f"temperature must be >= 0, got {temperature}")
        opts = resolve_options(sampler, {"guidance": scale, "use_cache": use_cache, "temperature": temperature,
                                         "logits_eos_inf": logits_eos_inf,
                                         "confidence_eos_eot_inf": confidence_eos_eot_inf})
        if logits_eos_inf or confidence_eos_eot_inf:
            opts["eos_ids"] = (tok.eos_id,)
        viewer = Watch(tok.decode, lm.mask_id, title=f"{cfg.preset or self.method} {sampler}") if watch else None
        out, stats, seconds, steps = self.generate(lm, prompts, length, sampler=sampler, steps=steps, seed=seed,
                                                   pad_id=tok.pad_id, viewer=viewer, callback=callback, **opts)
        if viewer is not None:
            viewer.close()
            seconds -= viewer.seconds
        texts = [render([i for i in r if i != tok.pad_id], tok.decode, lm.mask_id, "_") for r in out.tolist()]
        summary = {"n": len(prompts), "sampler": sampler, "steps": steps, "length": length,
                   "prompt_tokens": len(ids), "nfe": int(stats["nfe"]),
                   "model_calls": int(stats.get("model_calls", stats["nfe"])), "seconds": round(seconds, 4),
                   "tokens_per_s": round(len(prompts) * length / max(seconds, 1e-9), 2)}
        txt, js = _write_samples(out_dir, texts, {**summary, "preset": cfg.preset, "prompt": prompt,
                                                  "temperature": temperature, "texts": texts, "tokens": out.tolist()})
        if cfg.data.name == "mnist-pixels" and out.shape[1] == cfg.data.seq_len:   # whole images: a PNG grid
            side = math.isqrt(out.shape[1])
            png = save_image_grid(from_pixel_tokens(out.cpu(), side), Path(out_dir) / "samples.png")
            return {"samples": str(png), "text": str(txt), "json": str(js), **summary}
        return {"samples": str(txt), "json": str(js), **summary}

    def generate(self, lm: DiscreteLM, prompts: list[list[int]], length: int, *, sampler: str, steps: int, seed: int,
                 pad_id: int | None = None, viewer=None, callback=None, **opts) -> tuple[Tensor, dict, float, int]:
        """One row per prompt: the prompt and `length` generated tokens (no BOS, no block padding), with `sampler`
        at `steps` (0: the method's default) and its `opts`. Prompts of different lengths are left-padded with
        `pad_id` and given an attention mask (`llada.left_pad`; samplers with an `attention_mask` option only).
        `viewer` (a terminal Watch) sees the whole canvas after every step, `callback` the dict of `_hook`.
        Returns the rows, the sampler's stats, the seconds it took and the steps used."""
        steps = steps or self.spec.default_steps(lm, length)
        rows = [self.spec.canvas(lm, p, length) for p in prompts]
        width = max(len(p) for p in prompts) + length
        lo = rows[0][1]
        if len({len(r) for r, _ in rows}) == 1:
            canvas = torch.tensor([r for r, _ in rows], dtype=torch.long)  # (n, L)
        elif "attention_mask" not in options(sampler) or pad_id is None:
            having = ", ".join(s for s in self.samplers if "attention_mask" in options(s)) or "none of this method"
            raise UserError(f"prompts of different lengths need left padding with an attention mask: samplers "
                            f"{having}, not {sampler!r}")
        else:
            canvas, opts["attention_mask"] = left_pad(prompts, length, pad_id=pad_id, mask_id=lm.mask_id)
        device = next(lm.parameters()).device
        canvas = canvas.to(device)
        if opts.get("attention_mask") is not None:
            opts["attention_mask"] = opts["attention_mask"].to(device)
        gen = torch.Generator(device).manual_seed(seed)
        t0 = time.perf_counter()
        bar = work_progress(steps, f"sample {sampler}", "step") if viewer is None else None  # Watch owns the screen
        hook = _hook(viewer, callback, lm.mask_id, lo, lo + width, max(len(p) for p in prompts), bar)
        out, stats = SAMPLERS[sampler](self.spec.denoiser(lm), canvas, steps=steps, generator=gen,
                                       callback=hook, **opts)
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        return out[:, lo:lo + width], stats, seconds, steps  # (n, prompt + length)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, cfg: Config, *, run_dir: Path, quick: bool = False, seqs: int = 0,
                 mc: int = 0, batch_size: int = 64, seed: int = 0, gen_ppl: bool = False, **kw) -> dict[str, Any]:
        """Held-out nats/token, perplexity and bits/byte on the first `seqs` test windows (0: all; quick: 8) with
        `mc` Monte-Carlo samples each (0: 4; quick: 2). Seeds torch's global RNG with `seed`.
        gen_ppl: instead, the generative perplexity of samples under a judge run (`generative_quality`)."""
        if gen_ppl or "judge" in kw:
            return self.generative_quality(unwrap(model), cfg, run_dir=run_dir, quick=quick, seed=seed,
                                           batch_size=batch_size, **kw)
        if kw.pop("clip_search", False):
            return self.clip_search(unwrap(model), cfg, run_dir=run_dir, quick=quick, seed=seed, **kw)
        if kw:
            raise UserError(f"{self.method} eval has no option(s) {', '.join(kw)}")
        if seqs < 0 or batch_size <= 0 or mc < 0 or mc == 1:
            raise UserError(f"eval needs seqs >= 0, batch_size > 0 and mc = 0 or >= 2, got {seqs}, {batch_size}, {mc}")
        data = load_data(cfg.data, "test")
        out, _ = heldout(unwrap(model), self.spec.bound, data, seqs=seqs or (QUICK_SEQS if quick else len(data)),
                         mc=mc or (QUICK_MC if quick else EVAL_MC), batch_size=batch_size, seed=seed,
                         exact=self.spec.exact)
        return out

    def clip_search(self, lm: DiscreteLM, cfg: Config, *, run_dir: Path, quick: bool = False, seed: int = 0,
                    n: int = 0, batch_size: int = 0, intervals=(), seeds=(), **other) -> dict[str, Any]:
        """BD3-LM's search for the clipped schedule of lowest loss variance (`evaluate.search_clipping`) over bd3lms'
        grid or the given `intervals` ("BETA:OMEGA" strings) on `n` test batches (0: 100 as bd3lms, at most the
        test split; quick: 2) of `batch_size` windows (0: 16, bd3lms' eval batch per GPU; quick: 8), noise seeded
        with `seeds` (one, as a list: --seeds S) or `seed`; written to RUN/clip_search.json."""
        if self.method != "bd3":
            raise UserError(f"--clip-search searches BD3-LM's clipped schedule; {run_dir} is a {self.method} run")
        if other or len(seeds) > 1:
            raise UserError(f"--clip-search takes --n, --intervals and one --seeds S, not "
                            f"{', '.join(other) or '--seeds ' + ','.join(map(str, seeds))}")
        seed = _int(seeds[0], "--seeds") if seeds else seed
        if n < 0 or batch_size < 0:
            raise UserError(f"--clip-search needs --n >= 0 test batches and batch_size >= 0, got {n}, {batch_size}")
        grid = [_interval(v) for v in intervals] if intervals else clip_grid()
        out = search_clipping(lm, load_data(cfg.data, "test"), grid, batches=n or (2 if quick else MAX_BATCHES),
                              batch_size=batch_size or (8 if quick else 16), seed=seed)
        out["seed"] = seed
        atomic_write_json(Path(run_dir) / "clip_search.json", out)
        return out

    def generative_quality(self, lm: DiscreteLM, cfg: Config, *, run_dir: Path, judge: nn.Module | None = None,
                           judge_dir: Path | None = None, quick: bool = False, n: int = 0, samplers=(), budgets=(),
                           seed: int = 0, batch_size: int = 64, **opts) -> dict[str, Any]:
        """`n` samples from scratch (0: 16; quick: 2) of data.seq_len tokens with one sampler (default: the run's)
        at `budgets[0]` steps (default: the method's), scored by the judge run (`genppl.generative_perplexity`):
        gen PPL, unigram entropy (nats), NFE. `opts`: the sampler's own options (`samplers.options`)."""
        if judge is None:
            raise UserError("--gen-ppl needs --judge JUDGE_RUN (an autoregressive run, e.g. of text-ar-judge)")
        judge_lm = _judge(judge, run_dir, judge_dir)
        if len(samplers) > 1 or len(budgets) > 1 or n < 0:
            raise UserError("--gen-ppl takes one sampler, one budget (--budgets STEPS) and --n >= 0")
        sampler = samplers[0] if samplers else cfg.sample.sampler or self.samplers[0]
        if sampler not in self.samplers:
            raise UserError(f"unknown sampler {sampler!r} for {self.method}; known: {', '.join(self.samplers)}")
        steps = _int(budgets[0], "--budgets") if budgets else cfg.sample.steps
        n = n or (2 if quick else 16)
        out, stats, seconds, steps = self.generate(lm, [[]] * n, cfg.data.seq_len, sampler=sampler, steps=steps,
                                                   seed=seed, **opts)
        m = generative_perplexity(judge_lm, out, bos_id=judge_lm.bos_id, mask_id=judge_lm.mask_id,
                                  batch_size=batch_size)
        return {"gen_ppl": m["gen_ppl"], "gen_nats_per_token": m["gen_nats_per_token"], "entropy": m["entropy"],
                "nfe": int(stats["nfe"]), "sampler": sampler, "steps": steps, "n": n, "tokens": m["tokens"],
                "seconds": round(seconds, 3), "judge": str(judge_dir)}


def _int(v, flag: str) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        raise UserError(f"{flag} wants an integer, got {v!r}") from None


def _interval(v: str) -> tuple[float, float]:
    """'BETA:OMEGA' -> (beta, omega), checked (`clipsearch.check_interval`)."""
    try:
        beta, omega = (float(x) for x in v.split(":"))
    except ValueError:
        raise UserError(f"--intervals wants BETA:OMEGA pairs such as 0.45:0.95, got {v!r}") from None
    check_interval(beta, omega)
    return beta, omega


def _judge(judge: nn.Module, run_dir: Path, judge_dir: Path | None) -> DiscreteLM:
    """The judge's DiscreteLM, checked: autoregressive, and the same tokenizer as the run it judges."""
    lm = unwrap(judge)
    if judge_dir is None:
        raise UserError("the judge's run directory is needed (its tokenizer is checked against the run's)")
    if lm.method != "ar":
        raise UserError(f"the judge {judge_dir} is a {lm.method} run; generative perplexity needs an "
                        "autoregressive judge (e.g. a run of text-ar-judge)")
    mine, theirs = (read_json(Path(d) / "tokenizer.json", f"the tokenizer of {d}") for d in (run_dir, judge_dir))
    if mine != theirs:
        raise UserError(f"the judge {judge_dir} has another tokenizer than {run_dir}: "
                        "generative perplexity needs the same tokenizer (train the judge on the same data.tokenizer)")
    return lm


TASKS = {method: DiscreteLMTask(method) for method in METHODS}
TASK = TASKS["mdlm"]
