"""Likelihood bounds of masked diffusion LMs on held-out sequences: Monte-Carlo NELBOs, i.e. upper bounds on
-log p_theta(x), reported in nats per sequence, nats per token and perplexity exp(nats per token).

Two estimators of the same bound (for a denoiser that ignores t they have the same expectation):
    elbo_stratified  LLaDA's estimator (Nie et al. 2025, sec. 2.4 and get_log_likelihood.py): draw a number
                     of masked tokens l ~ U{1..n}, mask exactly l of the n scored tokens, weight the masked
                     cross-entropy by n / l; the l of one row's samples are stratified (evenly spaced from a random
                     start), which lowers the variance without bias.
    nelbo_mdlm       MDLM's continuous-time NELBO, t ~ U[eps, 1] with antithetic draws, weight w(t).
Identity behind their agreement: int_0^1 w(t) C(n, l) t^l (1 - t)^(n - l) dt = 1/l for alpha_t = 1 - t.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion.llada import guided_logits
from unigen.families.discrete_diffusion.masked import LogitsFn, mdlm_token_nll, q_xt, subs_log_probs
from unigen.errors import UserError


def summarize(nll: Tensor, n_tokens: Tensor, mc_se: Tensor | None = None, n_bytes: int | None = None) -> dict:
    """Per-sequence bounds (B,) in nats and their token counts (B,) -> {"nll", "nats_per_token", "ppl"}.

    With each bound's Monte-Carlo standard error mc_se (B,) also "se", the standard error of nats/token over the
    sequences (sampling and MC noise together), and "mc_se", the MC part alone; with the text's size in bytes
    also "bits_per_byte"."""
    per_token = float(nll.sum() / n_tokens.sum())
    out = {"nll": nll, "nats_per_token": per_token, "ppl": math.exp(per_token)}
    if mc_se is not None:
        B = nll.shape[0]
        out["se"] = float((nll / n_tokens).std() / math.sqrt(B)) if B > 1 else float("nan")
        out["mc_se"] = float(mc_se.pow(2).sum().sqrt() / n_tokens.sum())
    if n_bytes is not None:
        out["bits_per_byte"] = float(nll.sum()) / math.log(2) / n_bytes
    return out


@torch.no_grad()
def elbo_stratified(logits_fn: LogitsFn, x0: Tensor, *, mask_id: int, n_samples: int = 128, batch_size: int = 64,
                    prompt_mask: Tensor | None = None, cfg_scale: float = 0.0,
                    generator: torch.Generator | None = None) -> dict:
    """LLaDA's Monte-Carlo bound on -log p(answer | prompt): E_l [ (n/l) sum_{masked} -log p(x_0^i | x_l) ],
    l ~ U{1..n} stratified over each row's n_samples, exactly l of the row's n scored tokens masked.

    prompt_mask (B, L) bool: conditioning tokens, never masked or scored (LLaDA's prompt). logits_fn gets t = l / n.
    cfg_scale w > 0: the logits are LLaDA's unsupervised classifier-free guidance (`llada.guided_logits`: the
    unconditional pass masks the prompt), as get_log_likelihood.py's get_logits; it needs a prompt.
    Returns `summarize(...)` plus "stderr" (B,), the standard error of each row's mean (conservative under
    stratification).
    """
    B, L = x0.shape
    scored = torch.ones_like(x0, dtype=torch.bool) if prompt_mask is None else ~prompt_mask.bool()  # (B, L)
    n = scored.sum(dim=1)  # (B,)
    if (n == 0).any():
        raise UserError("every sequence needs at least one scored token")
    if cfg_scale and prompt_mask is None:
        raise UserError(f"cfg_scale {cfg_scale} needs a prompt_mask (the unconditional pass masks the prompt)")
    M = n_samples
    k = (torch.rand(B, generator=generator, device=x0.device) * n).long()  # (B,) random stratum start in 0..n-1
    j = torch.arange(M, device=x0.device)
    l = (k[:, None] + (j[None, :] * n[:, None]) // M) % n[:, None] + 1  # (B, M) in 1..n, evenly spaced
    rows = torch.arange(B, device=x0.device).repeat_interleave(M)  # (B*M,)
    ls, est = l.flatten(), torch.empty(B * M, dtype=torch.float64, device=x0.device)
    for a in range(0, B * M, batch_size):
        r, lc = rows[a:a + batch_size], ls[a:a + batch_size]
        x, sc = x0[r], scored[r]  # (b, L)
        keys = torch.rand(x.shape, generator=generator, device=x.device).masked_fill(~sc, 2.0)  # (b, L)
        masked = keys.argsort(dim=1).argsort(dim=1) < lc[:, None]  # exactly lc random scored tokens
        x_t = torch.where(masked, torch.full_like(x, mask_id), x)
        logits = guided_logits(logits_fn, x_t, (lc / n[r]).float(), ~sc, mask_id, cfg_scale)  # (b, L, V+1)
        logp = subs_log_probs(logits, x_t, mask_id)  # (b, L, V+1)
        ce = -logp.gather(-1, x[..., None]).squeeze(-1).masked_fill(~masked, 0.0)  # (b, L)
        est[a:a + batch_size] = ce.sum(dim=1).double() * n[r] / lc
    est = est.view(B, M)
    out = summarize(est.mean(dim=1), n)
    out["stderr"] = est.std(dim=1) / math.sqrt(M) if M > 1 else torch.full((B,), float("nan"), device=x0.device)
    return out


@torch.no_grad()
def nelbo_mdlm(logits_fn: LogitsFn, x0: Tensor, *, mask_id: int, n_samples: int = 128, batch_size: int = 64,
               noise: Callable = N.loglinear, eps: float = 1e-3, cond: str = "t",
               generator: torch.Generator | None = None) -> dict:
    """MDLM continuous-time NELBO per sequence, E_{t ~ U[eps, 1]} sum_i w(t) -log p_theta(x_0^i | x_t), with
    n_samples antithetic times per row. Returns `summarize(...)` plus "stderr" (B,) (conservative)."""
    B, L = x0.shape
    M = n_samples
    u = torch.rand(B, 1, generator=generator, device=x0.device)  # (B, 1)
    u = (u / M + torch.arange(M, device=x0.device)[None, :] / M) % 1  # (B, M) antithetic per row
    ts, rows = ((1 - eps) * u + eps).flatten(), torch.arange(B, device=x0.device).repeat_interleave(M)
    est = torch.empty(B * M, dtype=torch.float64, device=x0.device)
    for a in range(0, B * M, batch_size):
        x, t = x0[rows[a:a + batch_size]], ts[a:a + batch_size]  # (b, L), (b,)
        x_t = q_xt(x, N.move_chance(noise(t)[0])[:, None], mask_id, generator=generator)
        est[a:a + batch_size] = mdlm_token_nll(logits_fn, x, t, mask_id, noise=noise, cond=cond,
                                               x_t=x_t).sum(dim=1).double()
    est = est.view(B, M)
    out = summarize(est.mean(dim=1), torch.full((B,), L, device=x0.device))
    out["stderr"] = est.std(dim=1) / math.sqrt(M) if M > 1 else torch.full((B,), float("nan"), device=x0.device)
    return out
