"""Masked (absorbing-state) diffusion language models: MDLM (Sahoo et al. 2024) and LLaDA (Nie et al. 2025).

Notation:
    V               real vocabulary (tokenizer ids 0..V-1, incl. PAD/EOS/BOS); the mask token is `mask_id` (= V)
    x_0 (B, L)      clean tokens;  x_t (B, L): each token replaced by the mask with probability 1 - alpha_t
    logits_fn       the denoiser, logits_fn(x_t, level) -> logits (B, L, V + 1); `level` is t (B,) or sigma (B,)
    SUBS            MDLM's substitution parameterisation of p_theta(x_0 | x_t): zero mass on the mask token, and an
                    unmasked input token is copied (its output distribution is a one-hot of the input)
    w(t)            -alpha'_t / (1 - alpha_t) = dsigma / (e^sigma - 1); w(t) = 1/t under the log-linear schedule

MDLM's continuous-time NELBO per sequence is  E_t [ w(t) sum_{i: x_t^i = mask} -log p_theta(x_0^i | x_t) ],
t ~ U[eps, 1]; `mdlm_loss` divides it by ALL tokens B * L (not by the number of masked ones), like MDLM's code.
`sample_mdlm` is MDLM's ancestral sampler (here because BD3-LM reuses it block by block).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion.categorical import sample_categorical
from unigen.errors import UserError

LogitsFn = Callable[[Tensor, Tensor | None], Tensor]


def q_xt(x0: Tensor, move_chance: Tensor, mask_id: int, keep: Tensor | None = None,
         generator: torch.Generator | None = None) -> Tensor:
    """Absorbing forward process q(x_t | x_0) (MDLM sec. 3): mask each token independently w.p. `move_chance`.

    move_chance: broadcastable to x0, e.g. (B, 1) or per token (B, L). keep (B, L) bool: never masked (SFT prompt).
    Uses `generator`, or torch's global RNG when None.
    """
    masked = torch.rand(x0.shape, generator=generator, device=x0.device) < move_chance  # (B, L)
    if keep is not None:
        masked = masked & ~keep
    return torch.where(masked, torch.full_like(x0, mask_id), x0)  # (B, L)


def subs_log_probs(logits: Tensor, x_t: Tensor, mask_id: int) -> Tensor:
    """SUBS parameterisation (MDLM sec. 3.2): log p_theta(x_0 | x_t) with -inf on the mask token ("zero masking
    probabilities") and, at unmasked positions, log one-hot(x_t) ("carry-over unmasking").
    (B, L, V+1), at least float32."""
    if logits.shape[:-1] != x_t.shape:
        raise UserError(f"logits {tuple(logits.shape)} do not match tokens {tuple(x_t.shape)}")
    if not 0 <= mask_id < logits.shape[-1]:
        raise UserError(f"mask_id {mask_id} is outside the model's {logits.shape[-1]} outputs")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)).clone()  # bf16/fp16 -> fp32; fp64 stays
    logits[..., mask_id] = float("-inf")
    logp = torch.log_softmax(logits, dim=-1)  # (B, L, V+1)
    carry = torch.full_like(logp, float("-inf")).scatter(-1, x_t[..., None], 0.0)  # (B, L, V+1) log one-hot
    return torch.where((x_t != mask_id)[..., None], carry, logp)


def noise_level(t: Tensor, noise: Callable = N.loglinear, cond: str = "t") -> Tensor:
    """What the denoiser is conditioned on: the time t itself or the total noise sigma(t) (MDLM conditions on sigma)."""
    if cond == "t":
        return t
    if cond == "sigma":
        return noise(t)[0]
    raise UserError(f"cond must be 't' or 'sigma', got {cond!r}")


def mdlm_token_nll(logits_fn: LogitsFn, x0: Tensor, t: Tensor, mask_id: int, *, noise: Callable = N.loglinear,
                   cond: str = "t", x_t: Tensor | None = None, keep: Tensor | None = None) -> Tensor:
    """Per-token terms of MDLM's continuous-time NELBO at times t (B,): w(t) * -log p_theta(x_0^i | x_t) on masked
    tokens, 0 elsewhere. (B, L). `x_t` may be given (else drawn from q(x_t | x_0)); `keep` marks never-masked tokens."""
    sigma, dsigma = noise(t)  # (B,), (B,)
    if x_t is None:
        x_t = q_xt(x0, N.move_chance(sigma)[:, None], mask_id, keep)  # (B, L)
    logp = subs_log_probs(logits_fn(x_t, noise_level(t, noise, cond)), x_t, mask_id)  # (B, L, V+1)
    nll = -logp.gather(-1, x0[..., None]).squeeze(-1)  # (B, L)
    masked = x_t == mask_id
    nll = torch.where(masked, nll, torch.zeros_like(nll))  # unmasked terms are exactly 0 under SUBS
    return N.nelbo_weight(sigma, dsigma)[:, None] * nll  # (B, L)


def mdlm_loss(logits_fn: LogitsFn, x0: Tensor, mask_id: int, *, noise: Callable = N.loglinear, eps: float = 1e-3,
              antithetic: bool = True, cond: str = "t", t: Tensor | None = None, x_t: Tensor | None = None) -> Tensor:
    """MDLM training loss (Sahoo et al. 2024, continuous-time NELBO): the NELBO in nats per token, normalised over
    all B * L tokens. t ~ U[eps, 1] (antithetic) from torch's global RNG unless given."""
    check_tokens(x0, mask_id)
    if t is None:
        t = N.sample_t(x0.shape[0], eps=eps, antithetic=antithetic, device=x0.device)  # (B,)
    return mdlm_token_nll(logits_fn, x0, t, mask_id, noise=noise, cond=cond, x_t=x_t).sum() / x0.numel()


def sft_loss(logits_fn: LogitsFn, x0: Tensor, prompt_mask: Tensor, mask_id: int, *, noise: Callable = N.loglinear,
             eps: float = 1e-3, antithetic: bool = True, cond: str = "t", t: Tensor | None = None) -> Tensor:
    """Supervised fine-tuning loss (LLaDA sec. 2.3): prompt tokens (prompt_mask True) are never masked and never
    scored; each sequence's answer NELBO is divided by its answer length (LLaDA's per-answer-length normalisation,
    padded EOS included), then averaged over the batch. Weight w(t) as in `mdlm_loss` (1/t for log-linear)."""
    check_tokens(x0, mask_id)
    if prompt_mask.shape != x0.shape:
        raise UserError(f"prompt_mask {tuple(prompt_mask.shape)} does not match tokens {tuple(x0.shape)}")
    prompt_mask = prompt_mask.bool()
    answer_len = (~prompt_mask).sum(dim=1)  # (B,)
    if (answer_len == 0).any():
        raise UserError("every SFT sequence needs at least one answer token (prompt_mask is all True in a row)")
    if t is None:
        t = N.sample_t(x0.shape[0], eps=eps, antithetic=antithetic, device=x0.device)  # (B,)
    nll = mdlm_token_nll(logits_fn, x0, t, mask_id, noise=noise, cond=cond, keep=prompt_mask)  # (B, L)
    return (nll.sum(dim=1) / answer_len).mean()


def posterior_probs(p_x0: Tensor, x_t: Tensor, alpha_t: Tensor, alpha_s: Tensor, mask_id: int) -> Tensor:
    """Reverse posterior q(x_s | x_t, x_0 = p_theta) of the absorbing process, s < t (MDLM sec. 3.2, the SUBS
    reverse step p_theta(z_s | z_t)): a masked token stays masked w.p. (1 - alpha_s) / (1 - alpha_t), else
    becomes v w.p. (alpha_s - alpha_t) / (1 - alpha_t) p_theta(v); an unmasked token stays.
    p_x0 (B, L, V+1) SUBS probabilities; alpha_t, alpha_s broadcastable to (B, 1, 1). Returns (B, L, V+1)."""
    unmask = (alpha_s - alpha_t) / (1 - alpha_t)  # (B, 1, 1)
    probs = p_x0 * unmask  # (B, L, V+1); p_x0 has no mass on the mask
    probs[..., mask_id] = ((1 - alpha_s) / (1 - alpha_t)).squeeze(-1)
    keep = x_t != mask_id
    return torch.where(keep[..., None], torch.nn.functional.one_hot(x_t, p_x0.shape[-1]).to(probs), probs)


def nucleus(p_x0: Tensor, p: float) -> Tensor:
    """Nucleus (top-p) filtering of p_theta(x_0 | x_t) (Holtzman et al. 2020; bd3lms `_nucleus_sample`, p = 0.9 in
    their generation scripts): keep the most probable tokens whose cumulative probability is <= p (always the
    first), renormalise. p_x0 (..., V+1) probabilities; p = 1 returns them unchanged."""
    if not 0 < p <= 1:
        raise UserError(f"nucleus_p must be in (0, 1], got {p}")
    if p == 1:
        return p_x0
    probs, order = p_x0.sort(dim=-1, descending=True)  # (..., V+1)
    keep = probs.cumsum(dim=-1) <= p
    keep[..., 0] = True
    out = torch.zeros_like(p_x0).scatter(-1, order, probs * keep)
    return out / out.sum(dim=-1, keepdim=True)


@torch.no_grad()
def sample_first_hitting(logits_fn: LogitsFn, x: Tensor, *, mask_id: int, nucleus_p: float = 1.0,
                         generator: torch.Generator | None = None,
                         callback: Callable[[Tensor], None] | None = None) -> tuple[Tensor, dict]:
    """First-hitting sampler (Zheng et al. 2024, sec. 4; bd3lms' `sampling.first_hitting`, their default): under
    the linear schedule the next time a masked token is revealed is t <- t u^(1/m) (m masked tokens, u ~ U(0, 1)),
    and the token revealed is one of the m, uniformly; it is drawn from p_theta(x_0 | x_t) (optionally nucleus-
    filtered). Exact for the continuous-time reverse process, one network call per token. x (B, L) canvas;
    logits_fn gets each row's t. Returns (x, {"nfe"})."""
    check_canvas(x, mask_id)
    x, B = x.clone(), x.shape[0]
    t = torch.ones(B, dtype=torch.float64, device=x.device)  # (B,)
    nfe = 0
    while (x == mask_id).any():
        masked = x == mask_id  # (B, L)
        m = masked.sum(dim=1)  # (B,)
        u = torch.rand(B, generator=generator, dtype=torch.float64, device=x.device)
        t = torch.where(m > 0, t * u ** (1 / m.clamp(min=1)), t)
        p_x0 = subs_log_probs(logits_fn(x, t.float()), x, mask_id).double().exp()  # (B, L, V+1)
        nfe += 1
        draw = sample_categorical(nucleus(p_x0, nucleus_p), generator)  # (B, L)
        keys = torch.rand(x.shape, generator=generator, device=x.device).masked_fill(~masked, -1.0)
        pick = torch.zeros_like(masked).scatter(1, keys.argmax(dim=1, keepdim=True), True) & masked  # (B, L)
        x = torch.where(pick, draw, x)
        if callback is not None:
            callback(x)
    return x, {"nfe": nfe}


@torch.no_grad()
def sample_mdlm(logits_fn: LogitsFn, x: Tensor, *, steps: int, mask_id: int, noise=N.loglinear, cond: str = "t",
                reuse_logits: bool = True, nucleus_p: float = 1.0, generator: torch.Generator | None = None,
                callback: Callable[[Tensor], None] | None = None) -> tuple[Tensor, dict]:
    """MDLM ancestral sampler (Sahoo et al. 2024, sec. 3; their `ddpm_cache` sampler): on the grid t_i = 1 - i/steps
    draw x_s ~ q(x_s | x_t, x_0 = p_theta(x_t)); the last step (s = 0, alpha_s = 1) unmasks everything. x is a
    canvas (B, L): `mask_id` where to generate, other tokens are kept (SUBS carry-over). Returns (x, {"nfe"}).

    reuse_logits: while x does not change between steps the previous p_theta is reused (no network call), which
    is exact only for a denoiser that ignores t (MDLM caches only without time conditioning).
    callback(x) is called with the canvas after every step (e.g. to show the unmasking). nucleus_p < 1 filters
    p_theta (`nucleus`) before the posterior.
    """
    check_canvas(x, mask_id)
    if steps <= 0:
        raise UserError(f"steps must be positive, got {steps}")
    x, B = x.clone(), x.shape[0]
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device=x.device)  # (steps + 1,)
    p_x0, nfe = None, 0
    for i in range(steps):
        if not (x == mask_id).any():
            break
        if p_x0 is None:
            level = noise_level(ts[i].expand(B), noise, cond).float()  # (B,)
            p_x0 = nucleus(subs_log_probs(logits_fn(x, level), x, mask_id).double().exp(), nucleus_p)  # (B, L, V+1)
            nfe += 1
        alpha_t, alpha_s = N.alpha(noise(ts[i])[0]), N.alpha(noise(ts[i + 1])[0])
        x_new = sample_categorical(posterior_probs(p_x0, x, alpha_t, alpha_s, mask_id), generator)  # (B, L)
        if not reuse_logits or not torch.equal(x_new, x):
            p_x0 = None
        x = x_new
        if callback is not None:
            callback(x)
    return x, {"nfe": nfe}


def check_tokens(x0: Tensor, mask_id: int | None) -> None:
    """Clean training / evaluation tokens: (B, L) long, never the mask id."""
    if x0.dim() != 2 or x0.dtype != torch.long:
        raise UserError(f"tokens must be a (B, L) long tensor, got {tuple(x0.shape)} {x0.dtype}")
    if mask_id is not None and (x0 == mask_id).any():
        raise UserError(f"clean tokens contain the mask id {mask_id}; the mask must not be a tokenizer id")


def check_canvas(x: Tensor, mask_id: int) -> None:
    """A sampler's canvas: (B, L) long tokens, `mask_id` where to generate."""
    if x.dim() != 2 or x.dtype != torch.long:
        raise UserError(f"the canvas must be a (B, L) long tensor, got {tuple(x.shape)} {x.dtype}")
