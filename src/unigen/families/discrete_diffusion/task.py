"""Discrete diffusion language models as a family: MDLM (sampled with LLaDA / Fast-dLLM or MDLM's ancestral
sampler), SEDD, BD3-LM and the autoregressive baseline, all on one Llama-style `TextTransformer`.

One Task per method (`TASKS`: "mdlm", "sedd", "bd3", "ar"), sharing the model config `DiscreteLMConfig`, so any
preset can be switched to another method with `--task=...`. The math is in `unigen.families.discrete_diffusion.*`; this file is the
glue: sizing the network, the loss of each method, sampling from a prompt, and held-out likelihood.

Vocabulary: tokenizer ids 0..V-1 (BOS, EOS, PAD included) plus the mask id V, so every network has V + 1 outputs
(the AR model never sees the mask and its logit is excluded). The AR model reads [BOS; x] and so scores all T
tokens of a window, like the diffusion bounds do.

Evaluation (`unigen eval`): on the held-out split, nats per token and perplexity exp(nats per token) of
    mdlm  LLaDA's stratified estimator of the NELBO (exactly l of the n tokens masked, weight n / l; lower
          variance than MDLM's continuous-time t ~ U[1e-3, 1], which is used with time_cond)  (an upper bound)
    sedd  SEDD's diffusion-weighted denoising score entropy, t ~ U[1e-3, 1]  (an upper bound)
    bd3   BD3-LM's block NELBO, per-block t ~ U[1e-3, 1]                     (an upper bound)
    ar    the exact negative log-likelihood
with `mc` Monte-Carlo samples per sequence; `se` is the standard error over held-out sequences (sampling and MC
noise together), `mc_se` the Monte-Carlo part alone.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unigen.config import Config, DataConfig, SampleConfig, TrainConfig
from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion.ar import ar_loss, ar_token_nll
from unigen.families.discrete_diffusion.bd3 import bd3_loss, bd3_nelbo
from unigen.families.discrete_diffusion.likelihood import elbo_stratified, nelbo_mdlm
from unigen.families.discrete_diffusion.masked import mdlm_loss
from unigen.families.discrete_diffusion.samplers import SAMPLERS
from unigen.families.discrete_diffusion.sedd import GRAPHS, perturb, score_entropy, sedd_loss
from unigen.families.discrete_diffusion.watch import Watch, render
from unigen.errors import UserError
from unigen.models.text import TEXT_SIZES, TextTransformer, text_config
from unigen.task import Task, unwrap as _unwrap


@dataclass
class DiscreteLMConfig:
    size: str = "small"         # TextTransformer size (tiny | small | base | medium): depth L, width 64 L
    dim: int = 0                # width override, a multiple of 64 (heads of 64 channels); 0 = the size's
    depth: int = 0              # depth override; 0 = the size's
    time_cond: bool = False     # adaLN on the noise level (SEDD: sigma, MDLM / BD3: t); must be false for AR
    graph: str = "absorb"       # sedd: absorb | uniform
    block_size: int = 16        # bd3: tokens per block B' (must divide data.seq_len)
    beta: float = 0.3           # bd3: training mask rates t ~ U[beta, omega] (BD3-LM's clipped schedule)
    omega: float = 0.8
    dropout: float = 0.0


class DiscreteLM(nn.Module):
    """A TextTransformer and the ids its method needs (mask = V, BOS). forward(ids, t, **kw) drops t when the
    network has no time conditioning, so it is a `logits_fn(x_t, t)` for every sampler and loss."""

    def __init__(self, net: TextTransformer, method: str, config: DiscreteLMConfig, mask_id: int, bos_id: int):
        super().__init__()
        self.net, self.method, self.config = net, method, config
        self.mask_id, self.bos_id = mask_id, bos_id

    @property
    def time_cond(self) -> bool:
        return self.net.cfg.time_cond

    @property
    def n_states(self) -> int:
        """SEDD's number of states N: V + 1 with the mask (absorbing graph), V (uniform graph)."""
        return self.mask_id + (self.config.graph == "absorb")

    def forward(self, ids: Tensor, t: Tensor | None = None, **kw) -> Tensor:
        return self.net(ids, t if self.time_cond else None, **kw)  # (B, T, V+1)

    def new_cache(self, batch_size: int, max_len: int | None = None):
        return self.net.new_cache(batch_size, max_len)


def unwrap(model: nn.Module) -> DiscreteLM:
    """The DiscreteLM inside a DDP / compile wrapper."""
    return _unwrap(model, DiscreteLM, "a discrete language model")


def with_bos(x: Tensor, bos_id: int) -> Tensor:
    """[BOS; x]: what the AR model reads, so that it predicts (and is scored on) every token of x. (B, T+1)."""
    return torch.cat([x.new_full((x.shape[0], 1), bos_id), x], dim=1)


# ------------------------------------------------------------------------------------------------------ SEDD glue
def sedd_noise(graph: str):
    """SEDD's schedules: log-linear for the absorbing graph, geometric sigma in [1e-4, 20] for the uniform one."""
    return N.loglinear if graph == "absorb" else partial(N.geometric, sigma_min=1e-4, sigma_max=20.0)


def sedd_log_score(model: nn.Module, lm: DiscreteLM, x: Tensor, sigma: Tensor) -> Tensor:
    """SEDD's score network (Lou et al. 2024, sec. 5, `scale_by_sigma`): log s_theta = output - log(e^sigma - 1)
    - log(N - 1) on the absorbing graph (the true score of a masked token is p(v | unmasked) / (e^sigma - 1)); the
    current token's entry is 0. x (B, L), sigma (B,) -> (B, L, N)."""
    n = lm.n_states
    out = model(x, sigma)[..., :n]  # (B, L, N)
    if lm.config.graph == "absorb":
        out = out - torch.log(N.esigm1(sigma.float()))[:, None, None] - math.log(n - 1)
    return out.scatter(-1, x[..., None], 0.0)


def _sedd_kw(lm: DiscreteLM) -> dict:
    g = lm.config.graph
    return dict(graph=g, n_states=lm.n_states, mask_id=lm.mask_id if g == "absorb" else None, noise=sedd_noise(g))


# ---------------------------------------------------------------------------------------------------------- losses
def _loss_mdlm(model, lm: DiscreteLM, ids: Tensor) -> Tensor:
    return mdlm_loss(model, ids, lm.mask_id, antithetic=True)


def _loss_sedd(model, lm: DiscreteLM, ids: Tensor) -> Tensor:
    return sedd_loss(partial(sedd_log_score, model, lm), ids, **_sedd_kw(lm))


def _loss_bd3(model, lm: DiscreteLM, ids: Tensor) -> Tensor:
    m = lm.config
    return bd3_loss(model, ids, block_size=m.block_size, mask_id=lm.mask_id, beta=m.beta, omega=m.omega,
                    time_cond=lm.time_cond)


def _loss_ar(model, lm: DiscreteLM, ids: Tensor) -> Tensor:
    return ar_loss(model, with_bos(ids, lm.bos_id), mask_id=lm.mask_id)


LOSSES = {"mdlm": _loss_mdlm, "sedd": _loss_sedd, "bd3": _loss_bd3, "ar": _loss_ar}


# ------------------------------------------------------------------------------------------ held-out likelihood
EVAL_EPS = 1e-3         # diffusion bounds integrate t over [EVAL_EPS, 1]
EVAL_MC = 4             # Monte-Carlo samples per held-out sequence (the benchmarks pass mc=32)
QUICK_SEQS, QUICK_MC = 8, 2


def _per_row(est: Tensor) -> tuple[Tensor, Tensor]:
    """(S, M) Monte-Carlo samples -> each row's mean and the standard error of that mean. (S,), (S,)."""
    return est.mean(dim=1), est.std(dim=1) / math.sqrt(est.shape[1])


def _bound_mdlm(lm: DiscreteLM, x0: Tensor, mc: int, bs: int) -> tuple[Tensor, Tensor]:
    """The stratified estimator needs a denoiser that ignores t (it is then the same bound with eps = 0)."""
    if lm.time_cond:
        out = nelbo_mdlm(lm, x0, mask_id=lm.mask_id, n_samples=mc, batch_size=bs, eps=EVAL_EPS)
    else:
        out = elbo_stratified(lm, x0, mask_id=lm.mask_id, n_samples=mc, batch_size=bs)
    return out["nll"], out["stderr"]


def _bound_sedd(lm: DiscreteLM, x0: Tensor, mc: int, bs: int) -> tuple[Tensor, Tensor]:
    kw = _sedd_kw(lm)
    S = x0.shape[0]
    ts = torch.stack([N.sample_t(mc, eps=EVAL_EPS, device=x0.device) for _ in range(S)]).flatten()  # (S*M,)
    rows = x0.repeat_interleave(mc, dim=0)  # (S*M, L)
    est = torch.empty(S * mc, dtype=torch.float64, device=x0.device)
    for a in range(0, S * mc, bs):
        x, t = rows[a:a + bs], ts[a:a + bs]  # (b, L), (b,)
        sigma, dsigma = kw["noise"](t)  # (b,), (b,)
        x_t = perturb(x, sigma, kw["graph"], kw["n_states"], kw["mask_id"])  # (b, L)
        se = score_entropy(sedd_log_score(lm, lm, x_t, sigma), sigma, x_t, x, kw["graph"], kw["mask_id"])  # (b, L)
        est[a:a + bs] = (dsigma[:, None] * se).sum(dim=1).double()
    return _per_row(est.view(S, mc))


def _bound_bd3(lm: DiscreteLM, x0: Tensor, mc: int, bs: int) -> tuple[Tensor, Tensor]:
    S = x0.shape[0]
    rows = x0.repeat_interleave(mc, dim=0)  # (S*M, L)
    est = torch.cat([bd3_nelbo(lm, rows[a:a + bs], block_size=lm.config.block_size, mask_id=lm.mask_id,
                               n_samples=1, eps=EVAL_EPS, time_cond=lm.time_cond)["nll"]
                     for a in range(0, S * mc, bs)])  # (S*M,): one draw each
    return _per_row(est.view(S, mc).double())


def _nll_ar(lm: DiscreteLM, x0: Tensor, mc: int, bs: int) -> tuple[Tensor, Tensor]:
    nll = torch.cat([ar_token_nll(lm, with_bos(x0[a:a + bs], lm.bos_id), lm.mask_id).sum(dim=1).double()
                     for a in range(0, x0.shape[0], bs)])  # (S,) exact
    return nll, torch.zeros_like(nll)


BOUNDS = {"mdlm": _bound_mdlm, "sedd": _bound_sedd, "bd3": _bound_bd3, "ar": _nll_ar}


def likelihood_summary(nll: Tensor, mc_se: Tensor, tokens_per_seq: int, n_bytes: int) -> dict[str, float]:
    """Per-sequence nats (S,) and their MC standard errors (S,) -> nats/token, ppl, bits/byte and errors."""
    S = nll.shape[0]
    per_tok = nll / tokens_per_seq  # (S,)
    npt = float(per_tok.mean())
    return {"ppl": math.exp(npt), "nats_per_token": npt,
            "se": float(per_tok.std() / math.sqrt(S)) if S > 1 else float("nan"),
            "mc_se": float(mc_se.pow(2).sum().sqrt() / (S * tokens_per_seq)),
            "bits_per_byte": float(nll.sum()) / math.log(2) / n_bytes}


# -------------------------------------------------------------------------------------------------------- sampling
LLADA = ("llada", "llada-random", "fast-dllm")


def _default_steps(sampler: str, lm: DiscreteLM, length: int) -> int:
    """One token per step: `length` steps for whole-canvas samplers, the block size per BD3 block."""
    return lm.config.block_size if sampler == "bd3" else length


def _generate(lm: DiscreteLM, canvas: Tensor, sampler: str, *, steps: int, temperature: float, cfg_scale: float,
              use_cache: bool, generator: torch.Generator, callback) -> tuple[Tensor, dict]:
    """Run sampler `sampler` on canvas (B, L) (mask id where to generate); returns (tokens, stats)."""
    fn = SAMPLERS[sampler]
    common = dict(mask_id=lm.mask_id, generator=generator, callback=callback)
    if sampler in LLADA:
        return fn(lm, canvas, steps=steps, temperature=temperature, cfg_scale=cfg_scale, **common)
    if sampler == "mdlm":
        return fn(lm, canvas, steps=steps, reuse_logits=not lm.time_cond, **common)
    if sampler.startswith("sedd"):
        kw = _sedd_kw(lm)
        prompt = canvas != lm.mask_id if kw["graph"] == "uniform" else None
        return fn(partial(sedd_log_score, lm, lm), canvas, steps=steps, prompt_mask=prompt, **kw,
                  generator=generator, callback=callback)
    if sampler == "bd3":
        return fn(lm, canvas, steps=steps, block_size=lm.config.block_size, use_cache=use_cache,
                  time_cond=lm.time_cond, reuse_logits=not lm.time_cond, **common)
    return fn(lm, canvas, temperature=temperature, use_cache=use_cache, **common)  # ar


def _canvas(lm: DiscreteLM, prompt: list[int], length: int, n: int, device) -> Tensor:
    """Prompt then `length` mask ids, per row: AR reads [BOS; prompt] first; BD3 fills whole blocks. (n, L)."""
    head = ([lm.bos_id] if lm.method == "ar" else []) + prompt
    total = len(head) + length
    if lm.method == "bd3":
        total += -total % lm.config.block_size
    row = torch.tensor(head + [lm.mask_id] * (total - len(head)), dtype=torch.long, device=device)
    return row.expand(n, total).clone()  # (n, L)


class DiscreteLMTask(Task):
    model_config = DiscreteLMConfig

    def __init__(self, method: str, samplers: tuple[str, ...]):
        self.method, self.samplers = method, samplers

    def build(self, cfg: Config, data_info: dict) -> nn.Module:
        m: DiscreteLMConfig = cfg.model
        if "vocab_size" not in data_info:
            raise UserError(f"a {self.method} language model needs text data (data.name=text), got {cfg.data.name!r}")
        if m.size not in TEXT_SIZES:
            raise UserError(f"model.size={m.size!r} is not one of: {', '.join(TEXT_SIZES)}")
        if m.dim < 0 or m.dim % 64 or m.depth < 0:
            raise UserError(f"model.dim must be a multiple of 64 and model.depth >= 0, got {m.dim}, {m.depth}")
        if m.graph not in GRAPHS:
            raise UserError(f"model.graph={m.graph!r} is not one of: {', '.join(GRAPHS)}")
        if self.method == "bd3" and (m.block_size <= 0 or data_info["seq_len"] % m.block_size):
            raise UserError(f"model.block_size={m.block_size} must be positive and divide data.seq_len="
                            f"{data_info['seq_len']}")
        if self.method == "bd3" and not 0 < m.beta <= m.omega <= 1:
            raise UserError(f"model.beta and model.omega need 0 < beta <= omega <= 1, got {m.beta}, {m.omega}")
        if self.method == "ar" and m.time_cond:
            raise UserError("model.time_cond must be false for the autoregressive model (it has no noise level)")
        if not 0 <= m.dropout < 1:
            raise UserError(f"model.dropout must be in [0, 1), got {m.dropout}")
        V = data_info["vocab_size"]
        sizes = {"depth": m.depth} if m.depth else {}
        if m.dim:
            sizes.update(dim=m.dim, n_heads=m.dim // 64)
        net = TextTransformer(text_config(m.size, V + 1, causal=self.method == "ar", time_cond=m.time_cond,
                                          dropout=m.dropout, **sizes))
        return DiscreteLM(net, self.method, m, mask_id=V, bos_id=data_info["bos_id"])

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return LOSSES[self.method](model, unwrap(model), batch["ids"])

    @torch.no_grad()
    def sample(self, model: nn.Module, cfg: Config, *, run_dir: Path, out_dir: Path, n: int, sampler: str,
               steps: int, seed: int, prompt: str | None = None, watch: bool = False, guidance: float | None = None,
               length: int = 0, temperature: float = 1.0, use_cache: bool = True, **kw) -> dict[str, Any]:
        """`n` texts continuing `prompt` (none: from scratch); `length` generated tokens (0: fill data.seq_len).
        Writes out_dir/samples.txt and samples.json (tokens, NFE, model calls, tokens/s)."""
        from unigen.data import load_tokenizer
        if kw:
            raise UserError(f"{self.method} sampling has no option(s) {', '.join(kw)}")
        lm = unwrap(model)
        sampler = sampler or cfg.sample.sampler or self.samplers[0]
        if sampler not in self.samplers:
            raise UserError(f"unknown sampler {sampler!r} for {self.method}; known: {', '.join(self.samplers)}")
        scale = cfg.sample.guidance if guidance is None else guidance
        tok = load_tokenizer(run_dir)
        ids = tok.encode(prompt) if prompt else []
        length = length or cfg.data.seq_len - len(ids)
        if length <= 0:
            raise UserError(f"the prompt is {len(ids)} tokens, which fills data.seq_len={cfg.data.seq_len}: "
                            "shorten it or pass a length to generate")
        if scale != 1 and (sampler not in LLADA or not ids):
            raise UserError(f"guidance {scale} needs a prompt and one of the samplers {', '.join(LLADA)}")
        if not use_cache and sampler not in ("bd3", "ar"):
            raise UserError(f"use_cache=False applies to the bd3 and ar samplers, not {sampler!r}")
        if temperature < 0:
            raise UserError(f"temperature must be >= 0, got {temperature}")
        steps = steps or _default_steps(sampler, lm, length)
        device = next(lm.parameters()).device
        canvas = _canvas(lm, ids, length, n, device)  # (n, L)
        start = len(ids) + (lm.method == "ar")  # first generated column
        viewer = Watch(tok.decode, lm.mask_id, title=f"{cfg.preset or self.method} {sampler}") if watch else None
        gen = torch.Generator(device).manual_seed(seed)
        t0 = time.perf_counter()
        out, stats = _generate(lm, canvas, sampler, steps=steps, temperature=temperature, cfg_scale=scale - 1,
                               use_cache=use_cache, generator=gen, callback=viewer)
        seconds = time.perf_counter() - t0
        if viewer is not None:
            viewer.close()
            seconds -= viewer.seconds
        out = out[:, int(lm.method == "ar"):start + length]  # (n, prompt + length): no BOS, no block padding
        texts = [render(row, tok.decode, lm.mask_id, "_") for row in out.tolist()]
        summary = {"n": n, "sampler": sampler, "steps": steps, "length": length, "prompt_tokens": len(ids),
                   "nfe": int(stats["nfe"]), "model_calls": int(stats.get("model_calls", stats["nfe"])),
                   "seconds": round(seconds, 4), "tokens_per_s": round(n * length / max(seconds, 1e-9), 2)}
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        txt, js = out_dir / "samples.txt", out_dir / "samples.json"
        txt.write_text("".join(f"=== sample {i + 1} ===\n{t}\n\n" for i, t in enumerate(texts)), encoding="utf-8")
        js.write_text(json.dumps({**summary, "preset": cfg.preset, "prompt": prompt, "temperature": temperature,
                                  "texts": texts, "tokens": out.tolist()}, indent=1), encoding="utf-8")
        return {"samples": str(txt), "json": str(js), **summary}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, cfg: Config, *, run_dir: Path, quick: bool = False, seqs: int = 0,
                 mc: int = 0, batch_size: int = 64, seed: int = 0, **kw) -> dict[str, float]:
        """Held-out nats/token, perplexity and bits/byte on the first `seqs` test windows (0: all; quick: 8) with
        `mc` Monte-Carlo samples each (0: 4; quick: 2). Seeds torch's global RNG with `seed`."""
        from unigen.data import load as load_data
        if kw:
            raise UserError(f"{self.method} eval has no option(s) {', '.join(kw)}")
        if seqs < 0 or batch_size <= 0 or mc < 0 or mc == 1:
            raise UserError(f"eval needs seqs >= 0, batch_size > 0 and mc = 0 or >= 2, got {seqs}, {batch_size}, {mc}")
        lm = unwrap(model)
        data = load_data(cfg.data, "test")
        S = min(seqs or (QUICK_SEQS if quick else len(data)), len(data))
        M = mc or (QUICK_MC if quick else EVAL_MC)
        x0 = data.batch(torch.arange(S))["ids"].to(next(lm.parameters()).device)  # (S, T)
        torch.manual_seed(seed)
        nll, mc_se = BOUNDS[self.method](lm, x0, M, batch_size)  # (S,), (S,)
        n_bytes = sum(len(data.tokenizer.decode(row).encode("utf-8")) for row in x0.tolist())
        out = likelihood_summary(nll, mc_se, x0.shape[1], n_bytes)
        return {**out, "seqs": S, "mc_samples": 0 if self.method == "ar" else M, "tokens": S * x0.shape[1],
                "exact": float(self.method == "ar")}


TASKS = {
    "mdlm": DiscreteLMTask("mdlm", ("llada", "llada-random", "mdlm", "fast-dllm")),
    "sedd": DiscreteLMTask("sedd", ("sedd-analytic", "sedd-euler")),
    "bd3": DiscreteLMTask("bd3", ("bd3",)),
    "ar": DiscreteLMTask("ar", ("ar",)),
}
TASK = TASKS["mdlm"]


# ------------------------------------------------------------------------------------------------------- presets
# All five text presets: the same data (UTF-8 bytes of the stdlib corpus in 128-byte windows), the same network
# ("small": 4 blocks of width 256, 3.3M parameters; 5.1M with SEDD's adaLN time conditioning) and the same budget
# (600 steps of 16 windows, ~2.8 epochs). Bytes, not BPE: at this budget a masked model on BPE (1024 ids) ends on
# the unigram plateau (its held-out NELBO equals the token-frequency cross-entropy: it ignores the context), while
# on bytes it ends 0.9 nats/token below it. Per byte the BPE bound is lower (2.7 vs 3.3 bits), but its samples
# are strings of frequent tokens. Character-level text (text8) is also the papers' small-scale benchmark.
# Measured in benchmarks/text_quality.md.
def _text(task: str, preset: str, **model) -> Config:
    return Config(task=task, preset=preset,
                  data=DataConfig(name="text", tokenizer="byte", seq_len=128),
                  model=DiscreteLMConfig(size="small", **model),
                  train=TrainConfig(steps=600, batch_size=16, lr=2e-3, warmup_steps=50, min_lr=1e-4,
                                    ema_decay=0.99, precision="bf16", ckpt_every=200, log_every=25),
                  sample=SampleConfig(n=4))


def text_mdlm() -> Config:
    """Masked diffusion LM (MDLM loss, LLaDA sampling) on Python's docs: English-like text in a few CPU minutes."""
    return _text("mdlm", "text-mdlm")


def text_sedd() -> Config:
    """SEDD (score entropy, absorbing graph, sigma-conditioned) on Python's docs; same size and budget as text-mdlm."""
    return _text("sedd", "text-sedd", time_cond=True)


def text_bd3_4() -> Config:
    """Block diffusion BD3-LM with blocks of 4 tokens (KV-cached sampling) on Python's docs."""
    return _text("bd3", "text-bd3-4", block_size=4, beta=0.45, omega=0.95)


def text_bd3_16() -> Config:
    """Block diffusion BD3-LM with blocks of 16 tokens on Python's docs."""
    return _text("bd3", "text-bd3-16", block_size=16, beta=0.3, omega=0.8)


def text_ar() -> Config:
    """Autoregressive transformer baseline on Python's docs (exact perplexity); same size and budget as text-mdlm."""
    return _text("ar", "text-ar")


PRESETS = {"text-ar": text_ar, "text-mdlm": text_mdlm, "text-sedd": text_sedd, "text-bd3-4": text_bd3_4,
           "text-bd3-16": text_bd3_16}
