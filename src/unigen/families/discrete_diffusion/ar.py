"""Autoregressive language-model baseline: next-token loss, exact NLL / perplexity, and KV-cached decoding.

    logits_fn(x) -> logits (B, T, V')     a causal model: position i sees tokens <= i and predicts token i + 1
    -log p(x) = sum_{i >= 1} -log p(x_i | x_{<i})   (the first token is given, e.g. BOS)

Model protocol for sampling (`unigen.models.text.TextTransformer` with causal=True): model(ids (B, T), cache=None)
-> logits (B, T, V'); model.new_cache(batch, max_len) -> a cache that each call appends its keys/values to.
V' may include a mask token (a vocabulary shared with diffusion models); pass `mask_id` to give it no mass.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from unigen.families.discrete_diffusion.categorical import sample_logits
from unigen.families.discrete_diffusion.likelihood import summarize
from unigen.errors import UserError


def ar_token_nll(logits_fn: Callable[[Tensor], Tensor], x: Tensor, mask_id: int | None = None) -> Tensor:
    """-log p(x_i | x_{<i}) for i = 1..T-1 under a causal model (teacher forcing). (B, T-1)."""
    if x.dim() != 2 or x.shape[1] < 2:
        raise UserError(f"AR likelihood needs (B, T) tokens with T >= 2, got {tuple(x.shape)}")
    logits = logits_fn(x[:, :-1]).float()  # (B, T-1, V')
    if mask_id is not None:
        logits = logits.clone()
        logits[..., mask_id] = float("-inf")
    return -torch.log_softmax(logits, dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)  # (B, T-1)


def ar_loss(logits_fn: Callable[[Tensor], Tensor], x: Tensor, mask_id: int | None = None) -> Tensor:
    """Next-token cross-entropy (Radford et al. 2018), nats per predicted token."""
    return ar_token_nll(logits_fn, x, mask_id).mean()


@torch.no_grad()
def ar_nll(logits_fn: Callable[[Tensor], Tensor], x: Tensor, mask_id: int | None = None) -> dict:
    """Exact negative log-likelihood of each sequence given its first token; `likelihood.summarize` of it."""
    nll = ar_token_nll(logits_fn, x, mask_id).double()  # (B, T-1)
    return summarize(nll.sum(dim=1), torch.full((x.shape[0],), x.shape[1] - 1, device=x.device))


@torch.no_grad()
def sample_ar(model, x: Tensor, *, mask_id: int, temperature: float = 1.0, top_k: int | None = None,
              use_cache: bool = True, eos_id: int | None = None,
              generator: torch.Generator | None = None,
              callback: Callable[[Tensor], None] | None = None) -> tuple[Tensor, dict]:
    """Left-to-right decoding of a canvas x (B, L): tokens equal to `mask_id` are generated from the first such
    column on (temperature 0 = greedy, optional top-k); other tokens are kept and fed back. use_cache: prefill the
    prompt once, then one token per call through the KV cache; use_cache=False recomputes the prefix each step.
    eos_id: stop once every row has generated an EOS (stats["lengths"]: up to and including it).
    callback(x) is called with the canvas after every generated token."""
    B, L = x.shape
    cols = (x == mask_id).any(dim=0).nonzero()
    if len(cols) == 0:
        return x.clone(), {"nfe": 0, "lengths": eos_lengths(x, L, eos_id)}
    start = int(cols[0])
    if start == 0:
        raise UserError("AR sampling needs at least one prompt token (e.g. BOS) before the first mask")
    x = x.clone()
    cache = model.new_cache(B, L) if use_cache else None
    logits, nfe, end = model(x[:, :start], cache=cache)[:, -1], 1, L  # (B, V')
    for i in range(start, L):
        if mask_id < logits.shape[-1]:  # a vocabulary with the mask token: never sample it
            logits = logits.clone()
            logits[:, mask_id] = float("-inf")
        nxt = sample_logits(logits, temperature, top_k, generator)  # (B,)
        x[:, i] = torch.where(x[:, i] == mask_id, nxt, x[:, i])
        if callback is not None:
            callback(x)
        if i + 1 == L or (eos_id is not None and bool((x[:, start:i + 1] == eos_id).any(dim=1).all())):
            end = i + 1
            break
        logits = (model(x[:, i:i + 1], cache=cache) if use_cache else model(x[:, :i + 1]))[:, -1]  # (B, V')
        nfe += 1
    x = x[:, :end]
    return x, {"nfe": nfe, "lengths": eos_lengths(x, start, eos_id)}


def eos_lengths(x: Tensor, start: int, eos_id: int | None) -> Tensor:
    """Per row: the index of the first EOS at or after column `start`, plus one; the full length if none. (B,)."""
    B, L = x.shape
    full = torch.full((B,), L, device=x.device)
    if eos_id is None:
        return full
    is_eos = (x == eos_id) & (torch.arange(L, device=x.device) >= start)  # (B, L)
    return torch.where(is_eos.any(dim=1), is_eos.float().argmax(dim=1) + 1, full)
