"""The one sampler interface of the discrete diffusion LMs, the denoisers it takes, and the registry `SAMPLERS`.

Every sampler is called the same way:

    tokens, stats = SAMPLERS[name](denoiser, x, steps=..., generator=None, callback=None, **options)

    denoiser    the network as the sampler's method sees it: one of the four dataclasses below, made once per run
    x           the canvas (B, L) long: `denoiser.mask_id` where to generate; every other token is a prompt or a
                constraint and comes back unchanged
    steps       denoising steps (BD3: per block; AR and Fast-dLLM's threshold decoding do not use it)
    generator   the torch.Generator of every random draw
    callback    callback(x) with the canvas after every step (e.g. `watch.Watch`)
    options     the sampler's own keywords, each with a default: temperature, guidance (1 = off), use_cache, ...
                (`options(name)` lists them)
    tokens      (B, L') with no mask id left; L' = L unless BD3 or AR stop early at an EOS
    stats       {"nfe": the number of denoiser calls, ...}

The denoisers, i.e. what each method's network offers its samplers:
    MaskedDenoiser  logits(x_t, t (B,)) -> (B, L, V+1)                    mdlm, llada, llada-random, fast-dllm,
                    (+ new_cache / peek for the cached fast-dllm-prefix, fast-dllm-dual)
    ScoreDenoiser   log_score(x_t, sigma (B,)) -> (B, L, N) on SEDD's graph  sedd-euler, sedd-analytic
    BlockDenoiser   net(ids, t, mask=, positions=, cache=), net.new_cache  bd3
    CausalDenoiser  net(ids, cache=), net.new_cache                        ar

Each entry adapts a paper-faithful sampler (masked.py, llada.py, sedd.py, bd3.py, ar.py) to this form. A new sampler
is one function here, one entry in SAMPLERS, and it is then run by the generic contract test
(tests/discrete_diffusion/test_sampler_contract.py).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from torch import Tensor

from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion.ar import sample_ar
from unigen.errors import UserError
from unigen.families.discrete_diffusion.bd3 import sample_bd3
from unigen.families.discrete_diffusion.cache import sample_fast_dllm
from unigen.families.discrete_diffusion.llada import sample_llada
from unigen.families.discrete_diffusion.masked import LogitsFn, sample_mdlm
from unigen.families.discrete_diffusion.sedd import ScoreFn, sample_sedd_analytic, sample_sedd_euler


# ------------------------------------------------------------------------------------------------------ denoisers
@dataclass(frozen=True)
class MaskedDenoiser:
    """A masked-diffusion (SUBS) denoiser: logits(x_t (B, L), t (B,)) -> (B, L, V+1), V = mask_id."""
    logits: LogitsFn
    mask_id: int
    time_cond: bool = True      # False: the network ignores t, so MDLM reuses its logits while x is unchanged


@dataclass(frozen=True)
class ScoreDenoiser:
    """SEDD's score network: log_score(x_t (B, L), sigma (B,)) -> log s_theta (B, L, N) on `graph`."""
    log_score: ScoreFn
    mask_id: int                # marks the canvas positions to generate (absorbing graph: also its mask state)
    graph: str = "absorb"       # absorb | uniform
    n_states: int | None = None  # N (default mask_id + 1)
    noise: Callable = N.loglinear

    @property
    def graph_kw(self) -> dict[str, Any]:
        """The keywords of sedd.py's functions; the uniform graph has no mask state."""
        return dict(graph=self.graph, n_states=self.n_states, noise=self.noise,
                    mask_id=self.mask_id if self.graph == "absorb" else None)


@dataclass(frozen=True)
class BlockDenoiser:
    """BD3-LM's network: net(ids, t or None, *, mask, positions, cache=None) -> (B, S, V+1); net.new_cache(B, L)."""
    net: Callable
    mask_id: int
    block_size: int
    time_cond: bool = False     # False: t is passed as None and logits are reused while a block is unchanged


@dataclass(frozen=True)
class CausalDenoiser:
    """An autoregressive network: net(ids, cache=None) -> (B, T, V'); net.new_cache(B, L)."""
    net: Callable
    mask_id: int


# ------------------------------------------------------------------------------------------------------- samplers
def _mdlm(d: MaskedDenoiser, x: Tensor, *, steps: int, generator=None, callback=None) -> tuple[Tensor, dict]:
    """MDLM's ancestral sampler (`masked.sample_mdlm`)."""
    return sample_mdlm(d.logits, x, steps=steps, mask_id=d.mask_id, reuse_logits=not d.time_cond,
                       generator=generator, callback=callback)


def _llada(d: MaskedDenoiser, x: Tensor, *, steps: int, generator=None, callback=None, temperature: float = 1.0,
           guidance: float = 1.0, remasking: str = "low_confidence", threshold: float | None = None,
           block_length: int | None = None, attention_mask: Tensor | None = None, eos_ids: tuple[int, ...] = (),
           logits_eos_inf: bool = False, confidence_eos_eot_inf: bool = False) -> tuple[Tensor, dict]:
    """LLaDA (`llada.sample_llada`); guidance is the usual scale w + 1 (1 = off) of LLaDA's cfg_scale w.

    Temperature: LLaDA's generate defaults to 0 (greedy), which suits its use (answering a prompt). Ours is 1
    because this interface also samples from scratch, where temperature 0 gives the same text in every row (the
    canvas is all masks, so nothing tells the rows apart) and n samples would be one; pass temperature=0 for
    LLaDA's default. benchmarks/text_quality.md measures both."""
    return sample_llada(d.logits, x, steps=steps, mask_id=d.mask_id, block_length=block_length,
                        temperature=temperature, remasking=remasking, cfg_scale=guidance - 1, threshold=threshold,
                        attention_mask=attention_mask, eos_ids=eos_ids, logits_eos_inf=logits_eos_inf,
                        confidence_eos_eot_inf=confidence_eos_eot_inf, generator=generator, callback=callback)


def _fast_dllm(d: MaskedDenoiser, x: Tensor, *, steps: int, generator=None, callback=None, mode: str = "dual",
               temperature: float = 1.0, threshold: float | None = 0.9, block_length: int | None = None,
               refresh: int = 0, attention_mask: Tensor | None = None) -> tuple[Tensor, dict]:
    """Fast-dLLM with its KV cache (`cache.sample_fast_dllm`); block_length None: 32 when it divides the
    generated span (Fast-dLLM's 256 tokens in blocks of 32), else the whole span. Temperature 1 as in `_llada`."""
    if not hasattr(d.logits, "new_cache"):
        raise UserError("the Fast-dLLM cache needs a network with a KV cache (net.new_cache, net.peek)")
    span = x.shape[1] - int((x == d.mask_id).any(dim=0).float().argmax())
    block_length = block_length or (32 if span % 32 == 0 else span)
    out, stats = sample_fast_dllm(d.logits, x, steps=steps, mask_id=d.mask_id, mode=mode, block_length=block_length,
                                  threshold=threshold, refresh=refresh, temperature=temperature,
                                  attention_mask=attention_mask, generator=generator, callback=callback)
    return out, stats


def _sedd_euler(d: ScoreDenoiser, x: Tensor, *, steps: int, generator=None, callback=None) -> tuple[Tensor, dict]:
    """SEDD's Euler sampler (`sedd.sample_sedd_euler`)."""
    return sample_sedd_euler(d.log_score, x, steps=steps, prompt_mask=x != d.mask_id, **d.graph_kw,
                             generator=generator, callback=callback)


def _sedd_analytic(d: ScoreDenoiser, x: Tensor, *, steps: int, generator=None,
                   callback=None) -> tuple[Tensor, dict]:
    """SEDD's Tweedie tau-leaping sampler (`sedd.sample_sedd_analytic`)."""
    return sample_sedd_analytic(d.log_score, x, steps=steps, prompt_mask=x != d.mask_id, **d.graph_kw,
                                generator=generator, callback=callback)


def _bd3(d: BlockDenoiser, x: Tensor, *, steps: int, generator=None, callback=None, use_cache: bool = True,
         first_hitting: bool = False, nucleus_p: float = 1.0) -> tuple[Tensor, dict]:
    """BD3-LM's block sampler (`bd3.sample_bd3`), `steps` per block; use_cache=False recomputes the prefix;
    first_hitting and nucleus_p as bd3lms' sampling options (their scripts: first hitting, p = 0.9)."""
    return sample_bd3(d.net, x, steps=steps, mask_id=d.mask_id, block_size=d.block_size, use_cache=use_cache,
                      time_cond=d.time_cond, reuse_logits=not d.time_cond, first_hitting=first_hitting,
                      nucleus_p=nucleus_p, generator=generator, callback=callback)


def _ar(d: CausalDenoiser, x: Tensor, *, steps: int, generator=None, callback=None, temperature: float = 1.0,
        use_cache: bool = True) -> tuple[Tensor, dict]:
    """Left-to-right decoding (`ar.sample_ar`): one call per token, so `steps` is not used."""
    return sample_ar(d.net, x, mask_id=d.mask_id, temperature=temperature, use_cache=use_cache, generator=generator,
                     callback=callback)


SAMPLERS: dict[str, Callable[..., tuple[Tensor, dict]]] = {
    "mdlm": _mdlm,                                         # MaskedDenoiser
    "llada": _llada,                                       # MaskedDenoiser, low-confidence remasking
    "llada-random": partial(_llada, remasking="random"),   # MaskedDenoiser, random remasking
    "fast-dllm": partial(_llada, threshold=0.9),           # MaskedDenoiser, confidence threshold 0.9
    "fast-dllm-prefix": partial(_fast_dllm, mode="prefix"),  # MaskedDenoiser + KV cache: threshold, prefix cache
    "fast-dllm-dual": _fast_dllm,                            # MaskedDenoiser + KV cache: threshold, dual cache
    "sedd-euler": _sedd_euler,                             # ScoreDenoiser
    "sedd-analytic": _sedd_analytic,                       # ScoreDenoiser
    "bd3": _bd3,                                           # BlockDenoiser
    "bd3-fh": partial(_bd3, first_hitting=True, nucleus_p=0.9),  # BlockDenoiser: bd3lms' generation defaults
    "ar": _ar,                                             # CausalDenoiser
}
COMMON = ("steps", "generator", "callback")  # the keywords every sampler takes


def options(name: str) -> dict[str, Any]:
    """The options of sampler `name` (its keywords besides COMMON) and their defaults."""
    params = inspect.signature(SAMPLERS[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name not in COMMON}
