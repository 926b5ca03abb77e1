"""Generative perplexity, the sample-quality metric of MDLM (Sahoo et al. 2024, sec. 4.1), SEDD (Lou et al. 2024,
sec. 5.2.1) and BD3-LM (Arriola et al. 2025, sec. 6.2): the perplexity of generated text under a judge
autoregressive model trained longer on the same corpus, reported with the samples' unigram entropy, because
repetitive text ("the the the ...") gets a low perplexity that the entropy exposes.

    gen PPL  = exp( sum_b sum_i -log p_judge(x_b^i | BOS, x_b^{<i}) / sum_b n_b )     pooled over every token,
               as MDLM's `compute_generative_perplexity` accumulates one mean over all tokens
    entropy  = mean_b H(unigram histogram of sample b), in nats (BD3-LM's `compute_entropy`: per sample, then mean)

The judge reads [BOS; x] so that every generated token is scored, as `unigen eval` scores held-out text; then the
generative perplexity of held-out text is exactly the judge's evaluation perplexity (a test checks this). The
papers re-tokenise samples for GPT-2; here judge and samples share one tokenizer (the caller checks it).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from unigen.errors import UserError
from unigen.families.discrete_diffusion.ar import ar_token_nll


def unigram_entropy(ids: Tensor) -> Tensor:
    """Entropy in nats of each row's token histogram (BD3-LM's per-sample entropy). ids (B, L) -> (B,) float64."""
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise UserError(f"entropy needs (B, L) tokens with L >= 1, got {tuple(ids.shape)}")
    out = torch.empty(ids.shape[0], dtype=torch.float64)
    for b, row in enumerate(ids):
        p = torch.unique(row, return_counts=True)[1].double() / row.numel()  # (distinct,)
        out[b] = -(p * p.log()).sum()
    return out


@torch.no_grad()
def generative_perplexity(judge: Callable[[Tensor], Tensor], ids: Tensor, *, bos_id: int, mask_id: int | None = None,
                          batch_size: int = 64, prompt_len: int = 0) -> dict:
    """Generative perplexity of samples `ids` (B, L) under an autoregressive `judge(x (B, T)) -> logits (B, T, V')`.

    Every token of a row is scored given BOS and the tokens before it (`ar.ar_token_nll` on [BOS; x]); `mask_id`:
    a judge logit (the shared vocabulary's mask) that gets no probability. The samples must be complete (no mask
    id left). prompt_len: the first columns are a prompt the samples continue; only the continuation is scored
    (given the prompt) and its entropy taken. Returns {"gen_ppl": exp(nats_per_token), "gen_nats_per_token",
    "entropy": mean unigram entropy (nats), "tokens": scored tokens, "nll": per-row nats (B,) float64}.
    """
    if ids.dim() != 2 or ids.dtype != torch.long or ids.shape[1] == 0:
        raise UserError(f"samples must be a (B, L) long tensor with L >= 1, got {tuple(ids.shape)} {ids.dtype}")
    if not 0 <= prompt_len < ids.shape[1]:
        raise UserError(f"prompt_len must be in [0, {ids.shape[1]}) for samples of {ids.shape[1]} tokens, "
                        f"got {prompt_len}")
    if mask_id is not None and (ids == mask_id).any():
        raise UserError(f"the samples still hold the mask id {mask_id}: generative perplexity needs finished text")
    if batch_size <= 0:
        raise UserError(f"batch_size must be positive, got {batch_size}")
    rows = []
    for a in range(0, ids.shape[0], batch_size):
        x = ids[a:a + batch_size]  # (b, L)
        x = torch.cat([x.new_full((x.shape[0], 1), bos_id), x], dim=1)  # (b, L+1) [BOS; x]
        rows.append(ar_token_nll(judge, x, mask_id)[:, prompt_len:].double().sum(dim=1))  # (b,)
    nll = torch.cat(rows)  # (B,)
    gen = ids[:, prompt_len:]  # (B, L - prompt_len)
    per_token = float(nll.sum()) / gen.numel()
    return {"gen_ppl": math.exp(per_token), "gen_nats_per_token": per_token,
            "entropy": float(unigram_entropy(gen.cpu()).mean()), "tokens": gen.numel(), "nll": nll}
