"""Fast-dLLM's approximate KV cache for bidirectional masked diffusion LMs (Wu et al. 2025, sec. 3.2, Fig. 2;
llada/generate.py `generate_with_prefix_cache`, `generate_with_dual_cache`), with LLaDA's semi-autoregressive
blocks and Fast-dLLM's confidence-threshold parallel decoding (sec. 3.3).

A bidirectional network has no exact KV cache: every key depends on every token, masks included. Fast-dLLM's
observation is that within one block of decoding the keys and values outside the block change little, so:

    refresh   at the start of each block (and every `refresh` steps, 0 = once per block): one full forward over
              the whole canvas, whose logits make that step's prediction and whose keys / values are kept
    prefix    the later steps of the block run only x[lo:] (the block and everything after it), attending to the
              cached keys / values of x[:lo]
    dual      the later steps run only the block x[lo:hi], attending to the cached prefix AND suffix x[hi:]
              (Fast-dLLM's `replace_position`: the block's own keys / values are recomputed every step)

With refresh=1 every step is a full forward, so the sampler is `llada.sample_llada` token for token (a test
checks it). Network protocol (`TextTransformer`): net(ids, t, mask=, positions=, cache=), net.new_cache(B, L),
net.peek(cache); keys are stored after RoPE, so their order in the cache does not matter for bidirectional
attention: the dual cache holds [prefix; suffix] and the block is appended after them.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from unigen.errors import UserError
from unigen.families.discrete_diffusion.llada import check_options, num_transfer_tokens, predict_x0, transfer_index

MODES = ("prefix", "dual")


def refresh_call(net, x: Tensor, t: Tensor | None, lo: int, hi: int, mode: str, keys: Tensor | None):
    """A full forward over the canvas whose keys / values become the cache: [x[:lo]] (prefix) or [x[:lo]; x[hi:]]
    (dual, run in the order prefix, suffix, block so that the block's entries can be dropped). Returns the
    logits (B, L, V+1) in canvas order, the cache, and the key order of later cached calls."""
    L = x.shape[1]
    ar = torch.arange(L, device=x.device)
    order = ar if mode == "prefix" else torch.cat([ar[:lo], ar[hi:], ar[lo:hi]])  # (L,)
    cache = net.new_cache(x.shape[0], L)
    mask = None if keys is None else keys[:, order][:, None, None, :]  # (B, 1, 1, L) key padding
    logits = net(x[:, order], t, mask=mask, positions=order, cache=cache)  # (B, L, V+1) in `order`
    kept = lo if mode == "prefix" else L - (hi - lo)
    for layer in cache:
        layer.length = kept
    return logits[:, order.argsort()], cache, order


def cached_call(net, x: Tensor, t: Tensor | None, lo: int, hi: int, mode: str, cache, order: Tensor,
                 keys: Tensor | None) -> tuple[Tensor, int]:
    """One cached step: run x[lo:] (prefix) or x[lo:hi] (dual) against the cache without committing to it.
    Returns the logits of the columns it ran (B, T, V+1) and their first column."""
    end = x.shape[1] if mode == "prefix" else hi
    pos = torch.arange(lo, end, device=x.device)  # (T,)
    mask = None if keys is None else keys[:, order][:, None, None, :]  # cache order ends with the columns run
    with net.peek(cache):
        return net(x[:, lo:end], t, mask=mask, positions=pos, cache=cache), lo


@torch.no_grad()
def sample_fast_dllm(net, x: Tensor, *, steps: int, mask_id: int, mode: str = "dual", block_length: int = 32,
                     threshold: float | None = 0.9, refresh: int = 0, temperature: float = 0.0,
                     remasking: str = "low_confidence", attention_mask: Tensor | None = None,
                     generator: torch.Generator | None = None,
                     callback: Callable[[Tensor], None] | None = None) -> tuple[Tensor, dict]:
    """Fast-dLLM's cached generation (Wu et al. 2025, Alg. 1 with the prefix or dual cache): LLaDA's blocks and
    low-confidence remasking (`steps` shared evenly among the blocks) or, with `threshold`, every masked token of
    the block whose confidence is >= threshold plus the most confident one per step. `refresh`: recompute the
    cache every `refresh` steps of a block (0: only at its first step, as Fast-dLLM). x (B, L): `mask_id` where to
    generate; attention_mask (B, L): False on left padding. Returns (x, {"nfe", "positions"}): model calls and
    the canvas columns they ran (the cost a cache saves)."""
    check_options(x, mask_id, remasking, threshold, attention_mask)
    if mode not in MODES:
        raise UserError(f"cache mode must be one of {', '.join(MODES)}, got {mode!r}")
    if refresh < 0:
        raise UserError(f"refresh must be >= 0 (0 = once per block), got {refresh}")
    x, prompt = x.clone(), x != mask_id  # (B, L)
    cols = (~prompt).any(dim=0).nonzero()
    if len(cols) == 0:
        return x, {"nfe": 0, "positions": 0}
    start, L = int(cols[0]), x.shape[1]
    if block_length <= 0 or (L - start) % block_length:
        raise UserError(f"block_length {block_length} must divide the generated length {L - start}")
    n_blocks = (L - start) // block_length
    if threshold is None and (steps <= 0 or steps % n_blocks):
        raise UserError(f"steps {steps} must be a positive multiple of the number of blocks {n_blocks}")
    n_gen, time_cond = (~prompt).sum(dim=1).clamp(min=1), getattr(net, "time_cond", False)
    nfe = positions = 0
    for b in range(n_blocks):
        lo, hi = start + b * block_length, start + (b + 1) * block_length
        k = None if threshold is not None else num_transfer_tokens(x[:, lo:hi] == mask_id, steps // n_blocks)
        i = calls = 0
        while (x[:, lo:hi] == mask_id).any() and (k is None or i < k.shape[1]):
            if k is not None and not k[:, i].any():  # nothing to unmask at this step in any row (as LLaDA)
                i += 1
                continue
            masked = x == mask_id  # (B, L)
            t = masked.sum(dim=1) / n_gen if time_cond else None  # (B,)
            if calls == 0 or (refresh and calls % refresh == 0):
                logits, cache, order = refresh_call(net, x, t, lo, hi, mode, attention_mask)  # (B, L, V+1)
                c0 = 0
            else:
                logits, c0 = cached_call(net, x, t, lo, hi, mode, cache, order, attention_mask)  # (B, T, V+1)
            nfe, positions, calls = nfe + 1, positions + logits.shape[1], calls + 1
            x0, conf = predict_x0(logits, mask_id, temperature, remasking, generator)  # (B, T) each
            cols_run = slice(c0, c0 + logits.shape[1])
            conf = conf.masked_fill(~masked[:, cols_run], float("-inf"))
            conf[:, hi - c0:] = float("-inf")  # only the current block is decoded
            take = transfer_index(conf, None if k is None else k[:, i], threshold)  # (B, T)
            x[:, cols_run] = torch.where(take, x0, x[:, cols_run])
            i += 1
            if callback is not None:
                callback(x)
    return x, {"nfe": nfe, "positions": positions}
