"""LLaDA's reverse process (Nie et al. 2025, generate.py) over a masked denoiser `logits_fn(x_t, t) -> (B, L, V+1)`:
predict every masked token, keep a linear number per step (low-confidence or random remasking), semi-autoregressive
blocks, unsupervised classifier-free guidance, and Fast-dLLM's confidence-threshold parallel decoding (Wu et al. 2025).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from unigen.errors import UserError
from unigen.families.discrete_diffusion.categorical import add_gumbel_noise
from unigen.families.discrete_diffusion.masked import LogitsFn, check_canvas


def num_transfer_tokens(masked: Tensor, steps: int) -> Tensor:
    """LLaDA's get_num_transfer_tokens: under the linear schedule each of `steps` steps unmasks the same number of
    tokens; the remainder goes to the first steps. masked (B, n) bool -> counts (B, steps) summing to masked.sum(1)."""
    n = masked.sum(dim=1, keepdim=True)  # (B, 1)
    base, rem = n // steps, n % steps
    return base + (torch.arange(steps, device=masked.device)[None, :] < rem).long()  # (B, steps)


def left_pad(prompts: list[list[int]], length: int, *, pad_id: int, mask_id: int) -> tuple[Tensor, Tensor]:
    """A batch of prompts of different lengths as LLaDA's generate takes it (tokenizer padding_side="left"): each
    row is PAD..PAD, prompt, then `length` masks; attention_mask (B, L) is False on the padding. Returns both."""
    if not prompts or length <= 0:
        raise UserError(f"left_pad needs at least one prompt and length > 0, got {len(prompts)}, {length}")
    if pad_id == mask_id:
        raise UserError("the padding id must not be the mask id (LLaDA's generate asserts the same)")
    P = max(len(p) for p in prompts)
    rows = [[pad_id] * (P - len(p)) + list(p) + [mask_id] * length for p in prompts]
    keep = [[False] * (P - len(p)) + [True] * (len(p) + length) for p in prompts]
    return torch.tensor(rows, dtype=torch.long), torch.tensor(keep)  # (B, P + length) each


def _call(logits_fn: LogitsFn, x: Tensor, t: Tensor | None, attention_mask: Tensor | None) -> Tensor:
    """logits_fn(x, t), with the key padding mask (B, 1, 1, L) of `attention_mask` when one is given."""
    if attention_mask is None:
        return logits_fn(x, t)
    return logits_fn(x, t, mask=attention_mask.bool()[:, None, None, :])


def guided_logits(logits_fn: LogitsFn, x: Tensor, t: Tensor | None, prompt: Tensor, mask_id: int,
                  cfg_scale: float, attention_mask: Tensor | None = None) -> Tensor:
    """LLaDA's unsupervised classifier-free guidance (from Nie et al. 2024, SMDM): the unconditional
    pass replaces the prompt by mask tokens, and logits = uncond + (w + 1)(cond - uncond), w = cfg_scale (0 = off;
    LLaDA's convention: w + 1 is the usual guidance scale). Both passes go through one batched call, each with
    the rows' attention_mask (B, L) (False = padding, never attended to) when given."""
    if cfg_scale == 0:
        return _call(logits_fn, x, t, attention_mask)
    uncond_x = x.masked_fill(prompt, mask_id)  # (B, L)
    both = _call(logits_fn, torch.cat([x, uncond_x]), None if t is None else torch.cat([t, t]),
                 None if attention_mask is None else torch.cat([attention_mask, attention_mask]))  # (2B, L, V+1)
    cond, uncond = both.chunk(2)
    return uncond + (cfg_scale + 1) * (cond - uncond)


def check_options(x: Tensor, mask_id: int, remasking: str, threshold: float | None,
                  attention_mask: Tensor | None) -> None:
    """The canvas and the options LLaDA's and Fast-dLLM's samplers share (UserError on bad input)."""
    check_canvas(x, mask_id)
    if attention_mask is not None and attention_mask.shape != x.shape:
        raise UserError(f"attention_mask {tuple(attention_mask.shape)} does not match the canvas {tuple(x.shape)}")
    if threshold is not None and not 0 < threshold <= 1:
        raise UserError(f"threshold must be in (0, 1], got {threshold}")
    if remasking not in ("low_confidence", "random"):
        raise UserError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")


@torch.no_grad()
def sample_llada(logits_fn: LogitsFn, x: Tensor, *, steps: int, mask_id: int, block_length: int | None = None,
                 temperature: float = 0.0, remasking: str = "low_confidence", cfg_scale: float = 0.0,
                 threshold: float | None = None, attention_mask: Tensor | None = None,
                 eos_ids: tuple[int, ...] = (), logits_eos_inf: bool = False, confidence_eos_eot_inf: bool = False,
                 generator: torch.Generator | None = None, callback: Callable[[Tensor], None] | None = None):
    """LLaDA reverse process (Nie et al. 2025, generate.py): predict x_0 for every masked token (Gumbel-max at
    `temperature` in float64), then keep the `num_transfer_tokens` most confident ("low_confidence") or random
    ("random") ones and leave the rest masked; semi-autoregressive when block_length < the generated span.

    The generated span runs from the first masked column to the end; it is split into blocks of block_length
    (default: one block) and `steps` is shared evenly among the blocks. threshold (Fast-dLLM's confidence-aware
    parallel decoding, Wu et al. 2025): instead of a fixed count, keep every masked token of the block whose
    confidence reaches it, and at least the most confident one, until the block is full (`steps` is then unused).
    logits_fn gets t = the fraction of each row's generated tokens that are still masked. callback(x) is called
    with the canvas after every step. Returns (x, {"nfe"}).

    Batched prompts of different lengths (`left_pad`): attention_mask (B, L), False on the left padding, which is
    then never attended to (logits_fn gets mask= (B, 1, 1, L)); the padding counts as prompt. eos_ids (LLaDA
    appendix B.4: EOS, EoT): logits_eos_inf gives them no probability at all; confidence_eos_eot_inf leaves them
    possible but scores the confidence without them, so a position predicted as one is unmasked last
    (confidence 0). The reference sets the EOS half of the latter on a tensor it no longer reads, so there only
    EoT is affected; we apply it to every id in eos_ids, as the flag's name and the appendix say.
    """
    check_options(x, mask_id, remasking, threshold, attention_mask)
    x = x.clone()
    prompt = x != mask_id  # (B, L)
    cols = (~prompt).any(dim=0).nonzero()
    if len(cols) == 0:
        return x, {"nfe": 0}
    start = int(cols[0])
    span = x.shape[1] - start
    block_length = span if block_length is None else block_length
    if block_length <= 0 or span % block_length:
        raise UserError(f"block_length {block_length} must divide the generated length {span}")
    n_blocks = span // block_length
    if threshold is None and (steps <= 0 or steps % n_blocks):
        raise UserError(f"steps {steps} must be a positive multiple of the number of blocks {n_blocks}")
    n_gen = (~prompt).sum(dim=1).clamp(min=1)  # (B,)
    nfe = 0
    for b in range(n_blocks):
        lo, hi = start + b * block_length, start + (b + 1) * block_length
        k = None if threshold is not None else num_transfer_tokens(x[:, lo:hi] == mask_id, steps // n_blocks)
        i = 0
        while (x[:, lo:hi] == mask_id).any() and (k is None or i < k.shape[1]):
            if k is not None and not k[:, i].any():  # nothing to unmask at this step in any row
                i += 1
                continue
            masked = x == mask_id  # (B, L)
            t = masked.sum(dim=1) / n_gen  # (B,)
            logits = guided_logits(logits_fn, x, t, prompt, mask_id, cfg_scale, attention_mask)  # (B, L, V+1)
            nfe += 1
            x0, conf = predict_x0(logits, mask_id, temperature, remasking, generator,
                                eos_ids if logits_eos_inf else (), eos_ids if confidence_eos_eot_inf else ())
            conf = conf.masked_fill(~masked, float("-inf"))
            conf[:, hi:] = float("-inf")
            x = torch.where(transfer_index(conf, None if k is None else k[:, i], threshold), x0, x)
            i += 1
            if callback is not None:
                callback(x)
    return x, {"nfe": nfe}


def predict_x0(logits: Tensor, mask_id: int, temperature: float, remasking: str, generator: torch.Generator | None,
             banned: tuple[int, ...] = (), unconfident: tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
    """LLaDA's prediction and confidence: x0 = argmax of Gumbel-perturbed logits (never a `banned` id);
    confidence = softmax(logits)[x0] in float64 with the `unconfident` ids' logits at -inf (so 0 where x0 is one
    of them), or uniform noise for random remasking."""
    logits = logits.clone()
    logits[..., [mask_id, *banned]] = float("-inf")
    x0 = add_gumbel_noise(logits, temperature, generator).argmax(dim=-1)  # (B, L)
    if remasking == "low_confidence":
        if unconfident:
            logits[..., list(unconfident)] = float("-inf")
        p = torch.softmax(logits.double(), dim=-1)  # (B, L, V+1)
        return x0, p.gather(-1, x0[..., None]).squeeze(-1)
    return x0, torch.rand(x0.shape, generator=generator, dtype=torch.float64, device=x0.device)


def transfer_index(conf: Tensor, k: Tensor | None, threshold: float | None) -> Tensor:
    """Which tokens to unmask: each row's k most confident (conf = -inf is ineligible), or with a threshold every
    token with conf >= threshold (Fast-dLLM's get_transfer_index drops those below it) plus the row's most
    confident one."""
    eligible = conf > float("-inf")  # (B, L)
    rank = conf.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # (B, L), 0 = most confident
    if threshold is None:
        return (rank < k[:, None]) & eligible
    return ((conf >= threshold) | (rank == 0)) & eligible
