"""Vector quantisation (van den Oord et al. 2017, "Neural Discrete Representation Learning", Sec. 3.1-3.2 and
App. A.1 for the EMA codebook), as pure functions plus the module that holds the codebook.

    z_e (N, D)      encoder outputs, one row per latent position     e (K, D)   the codebook
    k (N,)          index of the nearest code, z_q = e[k]            beta       commitment weight (0.25)

The straight-through estimator copies the decoder's gradient at z_q to z_e: z_e + sg[z_q - z_e]. The codebook
loss ||sg[z_e] - e||^2 moves the codes, the commitment loss beta ||z_e - sg[e]||^2 the encoder (beta on this term:
taming-transformers' `legacy=True` puts it on the other one). With the EMA codebook (App. A.1; sonnet's
`VectorQuantizerEMA`: decay 0.99, Laplace smoothing eps 1e-5, debiased moving averages) the codes are moving
averages of their assigned encoder outputs and only the commitment term is a loss.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def nearest_code(z_e: Tensor, e: Tensor) -> Tensor:
    """argmin_k ||z_e - e_k||^2 per row (N,), via ||z||^2 - 2 z.e + ||e||^2 (Eq. 1)."""
    d = z_e.pow(2).sum(1, keepdim=True) - 2 * z_e @ e.T + e.pow(2).sum(1)[None]     # (N, K)
    return d.argmin(1)


def straight_through(z_e: Tensor, z_q: Tensor) -> Tensor:
    """Forward value z_q, gradient d/dz_e = identity (Sec. 3.1)."""
    return z_e + (z_q - z_e).detach()


def codebook_loss(z_e: Tensor, z_q: Tensor) -> Tensor:
    """||sg[z_e] - e||^2, mean over elements (the second term of Eq. 3)."""
    return (z_e.detach() - z_q).pow(2).mean()


def commitment_loss(z_e: Tensor, z_q: Tensor) -> Tensor:
    """||z_e - sg[e]||^2, mean over elements (the third term of Eq. 3, before its beta)."""
    return (z_e - z_q.detach()).pow(2).mean()


def ema_codebook(hidden_n: Tensor, hidden_m: Tensor, count: int, z_e: Tensor, k: Tensor, decay: float,
                 eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """One EMA step of the codebook (App. A.1, Eq. 6-8) with sonnet 2's debiased moving averages: returns the new
    hidden N (K,), hidden m (K, D) and the codes e_i = m_i / N~_i, where N, m are the hidden averages divided by
    1 - decay^count (`count` includes this step) and N~_i = (N_i + eps) / (n + K eps) n the Laplace-smoothed counts
    (n = sum_i N_i). At decay 0 and eps -> 0 this is one k-means step (codes with no assignment become 0)."""
    K = hidden_n.shape[0]
    onehot = torch.nn.functional.one_hot(k, K).to(z_e.dtype)                          # (N, K)
    hidden_n = decay * hidden_n + (1 - decay) * onehot.sum(0)
    hidden_m = decay * hidden_m + (1 - decay) * onehot.T @ z_e
    debias = 1 - decay ** count
    N, m = hidden_n / debias, hidden_m / debias
    n = N.sum()
    N_smooth = (N + eps) / (n + K * eps) * n
    return hidden_n, hidden_m, m / N_smooth[:, None]


def perplexity(k: Tensor, K: int) -> tuple[float, float]:
    """(exp of the entropy of the code histogram of k, fraction of the K codes used at least once)."""
    p = torch.bincount(k.flatten(), minlength=K).double() / k.numel()
    ent = -(p[p > 0] * p[p > 0].log()).sum()
    return float(ent.exp()), float((p > 0).double().mean())


class VectorQuantizer(nn.Module):
    """The codebook `embedding` (K, D) (uniform(-1/K, 1/K) init, as taming), and, for the EMA variant, the hidden
    moving averages and their step counter; `usage` is an EMA of each code's assignments per batch (for restarts)."""

    def __init__(self, K: int, D: int, ema: bool = False):
        super().__init__()
        self.embedding = nn.Embedding(K, D)
        nn.init.uniform_(self.embedding.weight, -1.0 / K, 1.0 / K)
        self.ema = ema
        if ema:
            self.embedding.weight.requires_grad_(False)
            self.register_buffer("hidden_n", torch.zeros(K))
            self.register_buffer("hidden_m", torch.zeros(K, D))
            self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("usage", torch.ones(K))

    @property
    def K(self) -> int:
        return self.embedding.num_embeddings

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Feature map z (B, D, h, w) -> (z_q (B, D, h, w) without gradient tricks, indices (B, h, w))."""
        B, D, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, D)                                  # (B h w, D)
        k = nearest_code(flat.float(), self.embedding.weight.float())
        return self.lookup(k.view(B, h, w)).to(z.dtype), k.view(B, h, w)

    def lookup(self, k: Tensor) -> Tensor:
        """Indices (B, h, w) -> codes (B, D, h, w)."""
        return self.embedding(k).permute(0, 3, 1, 2)

    @torch.no_grad()
    def update(self, z: Tensor, k: Tensor, decay: float, eps: float, usage_decay: float = 0.99) -> None:
        """After a training batch: the EMA codebook step (EMA variant) and the usage statistics."""
        flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if self.ema:
            self.count += 1
            n, m, e = ema_codebook(self.hidden_n, self.hidden_m, int(self.count), flat, k.flatten(), decay, eps)
            self.hidden_n.copy_(n), self.hidden_m.copy_(m), self.embedding.weight.copy_(e)
        counts = torch.bincount(k.flatten(), minlength=self.K).float()
        self.usage.mul_(usage_decay).add_((1 - usage_decay) * counts)

    @torch.no_grad()
    def restart_dead(self, z: Tensor, threshold: float) -> int:
        """Codes whose usage EMA fell below `threshold` restart at random encoder outputs of this batch (global RNG);
        their EMA statistics restart with them. Returns how many were restarted."""
        dead = (self.usage < threshold).nonzero().flatten()
        if len(dead) == 0:
            return 0
        flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        pick = flat[torch.randint(len(flat), (len(dead),))]
        self.embedding.weight[dead] = pick
        self.usage[dead] = 1.0
        if self.ema:                         # m / N of the restarted codes = pick (the debias factor cancels)
            self.hidden_n[dead] = self.hidden_n.mean().clamp_min(1e-3)
            self.hidden_m[dead] = pick * self.hidden_n[dead, None]
        return len(dead)

