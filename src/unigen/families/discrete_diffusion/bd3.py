"""Block Diffusion (Arriola et al. 2025, BD3-LM): autoregressive over blocks of B' tokens, masked diffusion within.

Notation (BD3-LM sec. 3):
    n tokens in blocks of `block_size`; block b = tokens [b B', (b+1) B')
    x_t^b           block b noised at its own mask rate t_b (linear schedule alpha_t = 1 - t, NELBO weight 1/t)
    training input  [x_t ; x_0] (length 2n) at positions [0..n-1, 0..n-1] under the mask
        M_BD   block-diagonal:      x_t block b  -> x_t block b
        M_OBC  offset block-causal: x_t block b  -> x_0 blocks < b
        M_BC   block-causal:        x_0 block b  -> x_0 blocks <= b
    and the loss is read on the x_t half only.
    beta, omega     clipped schedule: t_b ~ U[beta, omega] for training; NELBO evaluation uses [1e-3, 1]

Model protocol (satisfied by `unigen.models.text.TextTransformer` with causal=False):
    model(ids (B, S), t (B, S) or None, *, mask (S, K) bool, True = attend, positions (S,) long, cache=None)
        -> logits (B, S, V+1). With time_cond=False, t is passed as None; clean tokens get t = 0.
    model.new_cache(batch, max_len) -> per-layer caches, each with an int `length` (`unigen.nn.attention.KVCache`):
        a call with a cache attends to the cached keys plus its own and appends its keys/values; inside
        `with model.peek(cache):` ("peek") the cache is left as it was; lowering `length` forgets the last ones.

Correspondences (tested): one block spanning the sequence is MDLM (x_t sees only x_t); block size 1 with
t = 1 (beta = omega = 1) masks every block fully, so token i is predicted from the clean prefix x_0^{<i}
with weight 1: the loss is the autoregressive next-token cross-entropy.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion.ar import eos_lengths
from unigen.families.discrete_diffusion.likelihood import summarize
from unigen.families.discrete_diffusion.masked import (check_tokens, q_xt, sample_first_hitting, sample_mdlm,
                                                      subs_log_probs)
from unigen.errors import UserError

_LINEAR = partial(N.loglinear, eps=0.0)  # alpha_t = 1 - t: BD3-LM's linear schedule (mask rate t, weight 1/t)


def block_causal(n: int, block_size: int, device=None) -> Tensor:
    """Block-causal mask (BD3-LM M_BC on clean tokens): query i sees key j iff block(j) <= block(i). (n, n) bool,
    True = may attend; block size 1 is the causal mask. The last block may be shorter."""
    if block_size <= 0:
        raise UserError(f"block_size must be positive, got {block_size}")
    b = torch.arange(n, device=device) // block_size
    return b[None, :] <= b[:, None]


def bd3_attention_mask(n: int, block_size: int, device=None) -> Tensor:
    """The vectorised training mask M_BD | M_OBC | M_BC over [x_t ; x_0] (BD3-LM sec. 3.2). (2n, 2n) bool."""
    _check_blocks(n, block_size)
    idx = torch.arange(2 * n, device=device)
    clean = idx >= n  # (2n,): True on the x_0 half
    blk = (idx % n) // block_size  # (2n,)
    q_clean, k_clean = clean[:, None], clean[None, :]
    q_blk, k_blk = blk[:, None], blk[None, :]
    m_bd = (q_blk == k_blk) & (q_clean == k_clean)
    m_obc = (q_blk > k_blk) & ~q_clean & k_clean
    m_bc = (q_blk >= k_blk) & q_clean & k_clean
    return m_bd | m_obc | m_bc


def bd3_positions(n: int, device=None) -> Tensor:
    """Positions of [x_t ; x_0]: both halves at 0..n-1, so a noisy token and its clean copy share a position. (2n,)."""
    return torch.arange(n, device=device).repeat(2)


def bd3_token_nll(model, x0: Tensor, t_block: Tensor, *, block_size: int, mask_id: int, time_cond: bool = False,
                  x_t: Tensor | None = None) -> Tensor:
    """Per-token BD3-LM NELBO terms (BD3-LM's NELBO L_BD): (1/t_b) * -log p_theta(x_0^i | x_t^b, x_0^{<b}) on masked
    tokens of block b, 0 elsewhere. t_block (B, n_blocks); x_t drawn from torch's global RNG unless given. (B, n)."""
    check_tokens(x0, mask_id)
    B, n = x0.shape
    _check_blocks(n, block_size)
    t = t_block.repeat_interleave(block_size, dim=1)  # (B, n): one mask rate per block
    if x_t is None:
        x_t = q_xt(x0, t, mask_id)  # (B, n): move chance t under alpha_t = 1 - t
    ids = torch.cat([x_t, x0], dim=1)  # (B, 2n)
    level = torch.cat([t, torch.zeros_like(t)], dim=1) if time_cond else None  # (B, 2n)
    logits = model(ids, level, mask=bd3_attention_mask(n, block_size, x0.device),
                   positions=bd3_positions(n, x0.device))[:, :n]  # (B, n, V+1): the x_t half
    nll = -subs_log_probs(logits, x_t, mask_id).gather(-1, x0[..., None]).squeeze(-1)  # (B, n)
    return torch.where(x_t == mask_id, nll / t, torch.zeros_like(nll))


EPS = 1e-3        # bd3lms' sampling_eps: a clipping bound equal to it (or omega = 1) is not enforced by resampling
MAX_ROUNDS = 1000  # resampling rounds before giving up (bd3lms loops without a limit)


def q_xt_resampled(x0: Tensor, t_block: Tensor, *, block_size: int, mask_id: int, beta: float, omega: float,
                   generator: torch.Generator | None = None) -> Tensor:
    """q(x_t | x_0) per block (mask rate t_b) with bd3lms' `training.resample=True` (`_resample_q_xt`): a block
    whose masked fraction falls outside [beta, omega] is redrawn (same t_b) until it lies inside, so the clipped
    schedule clips the realised fraction, not only t. A bound at its epsilon (beta = 1e-3, omega = 1) is not
    enforced, as in bd3lms. Draws from `generator` (torch's global RNG if None) in bd3lms' order. (B, n)."""
    B, n = x0.shape
    p = t_block.repeat_interleave(block_size, dim=1)  # (B, n)
    move = torch.rand(x0.shape, generator=generator, device=x0.device) <= p
    low, high = beta != EPS, omega != 1
    if low or high:
        if not any((not low or k / block_size >= beta) and (not high or k / block_size <= omega)
                   for k in range(block_size + 1)):
            raise UserError(f"no masked fraction k/{block_size} lies in [beta, omega] = [{beta}, {omega}]: "
                            "resampling cannot end")
        for _ in range(MAX_ROUNDS):
            frac = move.view(B, -1, block_size).float().mean(dim=-1)  # (B, n_blocks)
            bad = ((frac < beta) & low) | ((frac > omega) & high)  # (B, n_blocks)
            if not bad.any():
                break
            redo = bad.repeat_interleave(block_size, dim=1)  # (B, n)
            move = torch.where(redo, torch.rand(x0.shape, generator=generator, device=x0.device) <= p, move)
        else:
            raise UserError(f"resampling found no block inside [beta, omega] in {MAX_ROUNDS} rounds")
    return torch.where(move, torch.full_like(x0, mask_id), x0)


def bd3_loss(model, x0: Tensor, **kw) -> Tensor:
    """BD3-LM training loss (Arriola et al. 2025): the block NELBO with clipped mask rates t_b ~ U[beta, omega],
    nats per token: the mean of `bd3_loss_terms(model, x0, **kw)`."""
    return bd3_loss_terms(model, x0, **kw).sum() / x0.numel()


def bd3_loss_terms(model, x0: Tensor, *, block_size: int, mask_id: int, beta: float = 1e-3, omega: float = 1.0,
                   antithetic: bool = True, time_cond: bool = False, t: Tensor | None = None,
                   x_t: Tensor | None = None, resample: bool = False, ignore_bos: bool = False) -> Tensor:
    """Per-token terms of the BD3-LM loss with clipped mask rates t_b ~ U[beta, omega] (antithetic over batch and
    blocks, torch's global RNG unless `t` (B, n_blocks) is given). (B, n), 0 on tokens left clean.
    resample: blocks whose masked fraction is outside [beta, omega] are redrawn (`q_xt_resampled`).
    ignore_bos: the first token of every sequence is never masked, so never scored (bd3lms' algo.ignore_bos: their
    sequences start with BOS; for our windows it is the first token of each)."""
    if t is None:
        t = N.sample_clipped_t((x0.shape[0], x0.shape[1] // block_size), beta, omega, antithetic=antithetic,
                               device=x0.device)  # (B, n_blocks)
    if x_t is None and (resample or ignore_bos):
        check_tokens(x0, mask_id)
        x_t = q_xt_resampled(x0, t, block_size=block_size, mask_id=mask_id, beta=beta if resample else EPS,
                             omega=omega if resample else 1.0)  # EPS, 1: no bound enforced, plain q(x_t | x_0)
    if ignore_bos:
        x_t = torch.cat([x0[:, :1], x_t[:, 1:]], dim=1)  # (B, n)
    return bd3_token_nll(model, x0, t, block_size=block_size, mask_id=mask_id, time_cond=time_cond, x_t=x_t)


@torch.no_grad()
def bd3_nelbo(model, x0: Tensor, *, block_size: int, mask_id: int, n_samples: int = 1, eps: float = 1e-3,
              time_cond: bool = False, generator: torch.Generator | None = None) -> dict:
    """Monte-Carlo BD3-LM NELBO with t_b ~ U[eps, 1] (the unclipped bound used for perplexity), averaged over
    n_samples draws; returns `likelihood.summarize` of the per-sequence bounds (nats, nats/token, ppl)."""
    total = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
    for _ in range(n_samples):
        t = N.sample_clipped_t((x0.shape[0], x0.shape[1] // block_size), eps, 1.0, generator=generator,
                               device=x0.device)  # (B, n_blocks)
        x_t = q_xt(x0, t.repeat_interleave(block_size, dim=1), mask_id, generator=generator)
        total += bd3_token_nll(model, x0, t, block_size=block_size, mask_id=mask_id, time_cond=time_cond,
                               x_t=x_t).sum(dim=1).double()
    return summarize(total / n_samples, torch.full_like(total, x0.shape[1]))


@torch.no_grad()
def sample_bd3(model, x: Tensor, *, steps: int, mask_id: int, block_size: int, use_cache: bool = True,
               time_cond: bool = False, eos_id: int | None = None, reuse_logits: bool = True,
               first_hitting: bool = False, nucleus_p: float = 1.0,
               generator: torch.Generator | None = None, callback=None) -> tuple[Tensor, dict]:
    """BD3-LM semi-autoregressive sampler (Arriola et al. 2025, Alg. 2): blocks left to right, each denoised by
    `steps` MDLM ancestral steps under alpha_t = 1 - t (t: 1 -> 0), conditioned on the finished prefix.

    x (B, L): prompt tokens and `mask_id` where to generate; L a multiple of block_size. Blocks before the first
    mask are prompt; non-mask tokens inside later blocks are kept. use_cache: keys and values of finished blocks
    are cached. A denoising call peeks (attends to cache + noisy block without committing); the clean tokens not
    cached yet (the prompt blocks, then each finished block) ride along in the next block's first denoising call,
    which commits them and rewinds past the noisy block, so the cache costs no extra model call.
    use_cache=False recomputes the whole prefix every call (the reference). eos_id: stop after the first block
    in which every row has produced an EOS; stats["lengths"] gives each row's length up to and including its
    first generated EOS. callback(x) is called with the whole canvas (B, L) after every denoising step.
    first_hitting: each block by `masked.sample_first_hitting` (bd3lms' default; one call per token, `steps`
    unused); nucleus_p: top-p filtering of p_theta in either sampler (bd3lms' scripts: 0.9).
    """
    B, L = x.shape
    _check_blocks(L, block_size)
    x, dev = x.clone(), x.device
    cols = (x == mask_id).any(dim=0).nonzero()
    if len(cols) == 0:
        return x, {"nfe": 0, "model_calls": 0, "lengths": torch.full((B,), L, device=dev)}
    gen_start = int(cols[0])
    hi = gen_start // block_size * block_size  # end of the prompt blocks
    cache = model.new_cache(B, L) if use_cache else None
    nfe = calls = 0
    pending = x[:, :hi]  # clean tokens whose keys/values are not cached yet (with use_cache)
    for lo in range(hi, L, block_size):
        hi = lo + block_size
        if use_cache:
            logits_fn = _CachedBlock(model, cache, pending, time_cond=time_cond, block_size=block_size)
        else:
            logits_fn = partial(_block_logits, model, x[:, :lo], time_cond=time_cond, block_size=block_size)
        on_step = None if callback is None else partial(_whole_canvas, callback, x, lo)
        if first_hitting:
            block, stats = sample_first_hitting(logits_fn, x[:, lo:hi], mask_id=mask_id, nucleus_p=nucleus_p,
                                                generator=generator, callback=on_step)  # (B, block_size)
        else:
            block, stats = sample_mdlm(logits_fn, x[:, lo:hi], steps=steps, mask_id=mask_id, noise=_LINEAR,
                                       reuse_logits=reuse_logits, nucleus_p=nucleus_p, generator=generator,
                                       callback=on_step)  # (B, block_size)
        x[:, lo:hi] = block
        nfe, calls = nfe + stats["nfe"], calls + stats["nfe"]
        if hi == L or (eos_id is not None and bool((x[:, gen_start:hi] == eos_id).any(dim=1).all())):
            break
        if use_cache:
            pending = torch.cat([logits_fn.pending, block], dim=1)  # (B, p): empty unless the block had no mask
    x = x[:, :hi]
    return x, {"nfe": nfe, "model_calls": calls, "lengths": eos_lengths(x, gen_start, eos_id)}


class _CachedBlock:
    """The logits_fn of one noisy block [lo, lo + n) through the KV cache. Its first call also runs the `pending`
    clean tokens [lo - p, lo) (BD3-LM's M_BC among themselves, never seeing the noisy block), commits everything
    and rewinds the cache past the noisy block; later calls peek. `pending` becomes empty once committed."""

    def __init__(self, model, cache, pending: Tensor, *, time_cond: bool, block_size: int):
        self.model, self.cache, self.pending = model, cache, pending  # pending (B, p)
        self.time_cond, self.block_size = time_cond, block_size

    def __call__(self, block: Tensor, t: Tensor) -> Tensor:
        (B, n), p, dev = block.shape, self.pending.shape[1], block.device
        c = self.cache[0].length  # cached tokens: the block starts at lo = c + p
        level = t[:, None].expand(B, n).float() if self.time_cond else None  # (B, n)
        if p == 0:
            with self.model.peek(self.cache):
                return self.model(block, level, mask=_full(n, c + n, dev),
                                  positions=torch.arange(c, c + n, device=dev), cache=self.cache)  # (B, n, V+1)
        mask = _full(p + n, c + p + n, dev)  # (p + n, c + p + n): the noisy block sees everything
        mask[:p, c:c + p] = block_causal(p, self.block_size, dev)
        mask[:p, c + p:] = False  # clean tokens never see the noisy block
        if level is not None:
            level = torch.cat([torch.zeros(B, p, device=dev), level], dim=1)  # (B, p + n): clean at t = 0
        logits = self.model(torch.cat([self.pending, block], dim=1), level, mask=mask,
                            positions=torch.arange(c, c + p + n, device=dev), cache=self.cache)  # (B, p + n, V+1)
        for layer in self.cache:  # keep the clean tokens, drop the noisy block
            layer.length -= n
        self.pending = block[:, :0]
        return logits[:, p:]


def _block_logits(model, prefix: Tensor, block: Tensor, t: Tensor, *, time_cond: bool, block_size: int) -> Tensor:
    """Logits of a noisy block given the clean prefix, the whole prefix recomputed under the block-causal mask
    (the reference for the cached path). t (B,) -> (B, block_size, V+1)."""
    B, lo, n, dev = block.shape[0], prefix.shape[1], block.shape[1], block.device
    level = torch.cat([torch.zeros(B, lo, device=dev), t[:, None].expand(B, n).float()],
                      dim=1) if time_cond else None  # (B, lo + n): clean prefix at t = 0
    return model(torch.cat([prefix, block], dim=1), level, mask=block_causal(lo + n, block_size, dev),
                 positions=torch.arange(lo + n, device=dev))[:, lo:]  # (B, n, V+1)


def _whole_canvas(callback, x: Tensor, lo: int, block: Tensor) -> None:
    """Show a block's denoising step in the whole canvas x (B, L) (x itself is not changed)."""
    callback(torch.cat([x[:, :lo], block, x[:, lo + block.shape[1]:]], dim=1))  # (B, L)



def _full(n: int, s: int, device) -> Tensor:
    return torch.ones(n, s, dtype=torch.bool, device=device)  # (n, s): attend to every cached and current key


def _check_blocks(n: int, block_size: int) -> None:
    if block_size <= 0 or n % block_size:
        raise UserError(f"block_size {block_size} must be positive and divide the sequence length {n}")
