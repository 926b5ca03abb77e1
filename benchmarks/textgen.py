"""Text generation throughput (generated tokens per second) of the discrete samplers in `unigen.families.discrete_diffusion`.

Workload: batch 8, a 16-token prompt, 128 generated tokens (canvas 144), greedy / temperature 0, no_grad, fp32, on
a randomly initialised TextTransformer of width 256, 4 blocks, 4 heads, vocabulary 512 (+1 mask id for the
diffusion samplers). Random weights do not change the cost of a call, but they do change how many tokens a
confidence threshold accepts per call, so the diffusion rows report their NFE, and the threshold row scales the
logits by 20 (a peaked, trained-like distribution) so that the threshold can fire.

    ar            unigen `sample_ar` with the KV cache    vs  transformers LlamaForCausalLM.generate (KV cache,
                                                               greedy, same architecture and size)
    ar-recompute  `sample_ar(use_cache=False)`            vs  the same with the cache (ref column)
    llada         `sample_llada`, one token per step in blocks of 32, full recompute every step (no reference)
    fast-dllm     `sample_llada(threshold=0.9)`, blocks of 32 (no reference)
    bd3           `sample_bd3` with KV cache, blocks of 16, 16 steps per block  vs  `use_cache=False` (ref column)
"""
from __future__ import annotations

import torch

from benchmarks.harness import Case
from unigen.families.discrete_diffusion.ar import sample_ar
from unigen.families.discrete_diffusion.bd3 import sample_bd3
from unigen.families.discrete_diffusion.llada import sample_llada
from unigen.models.text import TextTransformer, TextTransformerConfig

VOCAB, PROMPT, GEN, BATCH = 512, 16, 128, 8
MASK = VOCAB  # the mask id of the diffusion models' vocabulary (V + 1 outputs)


def _model(causal: bool, vocab: int) -> TextTransformer:
    torch.manual_seed(0)
    cfg = TextTransformerConfig(vocab_size=vocab, dim=256, depth=4, n_heads=4, causal=causal, max_len=PROMPT + GEN)
    return TextTransformer(cfg).eval()


def _canvas(batch: int, prompt: int, gen: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.full((batch, prompt + gen), MASK, dtype=torch.long)
    x[:, :prompt] = torch.randint(0, VOCAB, (batch, prompt), generator=g)
    return x  # (B, L)


def _hf_llama(model: TextTransformer):
    import transformers
    cfg = model.cfg
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.hidden(), num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads, rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_base, tie_word_embeddings=True, max_position_embeddings=cfg.max_len,
        attention_bias=False, mlp_bias=False)).eval()


def ar_case(batch=BATCH, prompt=PROMPT, gen=GEN) -> Case:
    info: dict = {}

    def setup():
        model = _model(True, VOCAB + 1)  # the mask id is never sampled (sample_ar gives it -inf)
        hf = _hf_llama(model)
        x = _canvas(batch, prompt, gen)

        def ours():
            out, stats = sample_ar(model, x, mask_id=MASK, temperature=0.0)
            info["NFE"] = stats["nfe"]
            return out

        @torch.no_grad()
        def ref():
            return hf.generate(x[:, :prompt], max_new_tokens=gen, min_new_tokens=gen, do_sample=False,
                               use_cache=True, pad_token_id=0)

        return ours, ref

    return Case("textgen", "ar (KV cache) vs HF generate", setup, items=batch * gen, unit="token", info=info)


def own_case(name: str, run_ours, run_ref=None, batch=BATCH, prompt=PROMPT, gen=GEN, causal=False) -> Case:
    """A unigen sampler; `run_ref`, if given, is the same sampler in its reference (no-cache) mode."""
    info: dict = {}

    def setup():
        model = _model(causal, VOCAB + 1)
        x = _canvas(batch, prompt, gen)

        def call(run):
            out, stats = run(model, x)
            info.setdefault("NFE", stats["nfe"])
            return out

        return (lambda: call(run_ours)), (None if run_ref is None else (lambda: call(run_ref)))

    return Case("textgen", name, setup, items=batch * gen, unit="token", info=info)


def _llada(threshold=None, scale=1.0, block=32):
    def run(model, x):
        def logits_fn(x_t, t):
            return model(x_t) * scale
        steps = int((x[0] == MASK).sum())  # one token per step (unused with a threshold)
        return sample_llada(logits_fn, x, steps=steps, mask_id=MASK, block_length=block, threshold=threshold)
    return run


def _bd3(use_cache: bool, block=16):
    def run(model, x):
        return sample_bd3(model, x, steps=block, mask_id=MASK, block_size=block, use_cache=use_cache)
    return run


def _ar(use_cache: bool):
    def run(model, x):
        return sample_ar(model, x, mask_id=MASK, temperature=0.0, use_cache=use_cache)
    return run


def cases(quick: bool = False) -> list[Case]:
    if quick:
        return [own_case("bd3 (KV cache) vs no cache", _bd3(True, 4), _bd3(False, 4), batch=2, prompt=4, gen=8)]
    return [
        ar_case(),
        own_case("ar recompute vs ar KV cache", _ar(False), _ar(True), causal=True),
        own_case("llada (full recompute)", _llada()),
        own_case("fast-dllm threshold 0.9 (logits x20)", _llada(threshold=0.9, scale=20.0)),
        own_case("bd3 (KV cache) vs no cache", _bd3(True), _bd3(False)),
    ]
