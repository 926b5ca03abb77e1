"""Text conditioning math of latent diffusion: caption dropout, classifier-free guidance, the latent scale factor.

Notation
    c, c_null       token states of the caption and of the empty caption "" (the unconditional input)
    mask            (B, S) bool, True = a real token of the caption
    scale           guidance scale s: D_guided = D(x; c_null) + s (D(x; c) - D(x; c_null))
                    (Ho & Salimans 2022, Eq. 6 with s = 1 + w; Stable Diffusion's txt2img uses s = 7.5)
    z               latents of the first-stage autoencoder; the diffusion model sees scale_factor * z
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from unigen.errors import UserError

Denoiser = Callable[..., Tensor]


def drop_captions(ids: Tensor, p_uncond: float, null_ids: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Ho & Salimans 2022, Alg. 1 line 3 for captions: with probability p_uncond a row of `ids` (B, S) becomes the
    empty caption `null_ids` (S,) (LDM / SD train with 10% of captions dropped to "")."""
    if not 0 <= p_uncond <= 1:
        raise UserError(f"p_uncond must be in [0, 1], got {p_uncond}")
    drop = torch.rand(ids.shape[0], generator=generator, device=ids.device) < p_uncond     # (B,)
    return torch.where(drop[:, None], null_ids.to(ids.device)[None], ids)


def text_guided(D: Denoiser, c: Tensor, mask: Tensor, c_null: Tensor, mask_null: Tensor, scale: float) -> Denoiser:
    """Ho & Salimans 2022, Eq. 6: D_guided(x, sigma) = D(x; c_null) + scale (D(x; c) - D(x; c_null)), both branches
    in one batched call. scale = 1 calls D with c only (the conditional model), scale = 0 with c_null only."""
    if not scale >= 0:
        raise UserError(f"the guidance scale must be >= 0, got {scale}")
    if scale == 1 or scale == 0:
        ctx, m = (c, mask) if scale == 1 else (c_null.expand_as(c), mask_null.expand_as(mask))
        return lambda x, sigma: D(x, sigma, context=ctx, context_mask=m)
    both_c = torch.cat([c, c_null.expand_as(c)])                      # (2B, S, E)
    both_m = torch.cat([mask, mask_null.expand_as(mask)])             # (2B, S)

    def D_guided(x: Tensor, sigma: Tensor) -> Tensor:
        D_both = D(torch.cat([x, x]), torch.cat([sigma, sigma]), context=both_c, context_mask=both_m)
        D_cond, D_uncond = D_both.chunk(2)
        return D_uncond + scale * (D_cond - D_uncond)                 # (family math imports only its own folder)

    return D_guided


def std_scale_factor(z: Tensor) -> float:
    """Rombach et al. 2022, Sec. 4.3.2 / App. G (`scale_by_std` in ldm/models/diffusion/ddpm.py): 1 / std of the
    first batch's latents over all elements, so that the diffusion model sees latents of unit variance."""
    std = z.detach().float().flatten().std()
    if not torch.isfinite(std) or std <= 0:
        raise UserError(f"cannot set the latent scale factor: the first batch's latents have std {float(std)}")
    return float(1 / std)
