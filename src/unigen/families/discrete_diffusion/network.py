"""The network of every discrete LM method: one Llama-style `TextTransformer`, its config, and the views each
method's samplers take of it (the denoisers of samplers.py), SEDD's score parameterisation included.

Vocabulary: tokenizer ids 0..V-1 (BOS, EOS, PAD included) plus the mask id V, so every network has V + 1 outputs
(the AR model never sees the mask and its logit is excluded). The AR model reads [BOS; x] and so scores all T
tokens of a window, like the diffusion bounds do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from unigen.errors import UserError
from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion.samplers import BlockDenoiser, CausalDenoiser, MaskedDenoiser, ScoreDenoiser
from unigen.families.discrete_diffusion.sedd import GRAPHS
from unigen.models.text import TEXT_SIZES, TextTransformer, text_config
from unigen.task import unwrap as _unwrap


@dataclass
class DiscreteLMConfig:
    size: str = "small"         # TextTransformer size (tiny | small | base | medium): depth L, width 64 L
    dim: int = 0                # width override, a multiple of 64 (heads of 64 channels); 0 = the size's
    depth: int = 0              # depth override; 0 = the size's
    time_cond: bool = False     # adaLN on the noise level (SEDD: sigma, MDLM / BD3: t); must be false for AR
    graph: str = "absorb"       # sedd: absorb | uniform
    block_size: int = 16        # bd3: tokens per block B' (must divide data.seq_len)
    beta: float = 0.3           # bd3: training mask rates t ~ U[beta, omega] (BD3-LM's clipped schedule)
    omega: float = 0.8
    dropout: float = 0.0


class DiscreteLM(nn.Module):
    """A TextTransformer and the ids its method needs (mask = V, BOS). forward(ids, t, **kw) drops t when the
    network has no time conditioning, so it is a `logits_fn(x_t, t)` for every sampler and loss."""

    def __init__(self, net: TextTransformer, method: str, config: DiscreteLMConfig, mask_id: int, bos_id: int):
        super().__init__()
        self.net, self.method, self.config = net, method, config
        self.mask_id, self.bos_id = mask_id, bos_id

    @property
    def time_cond(self) -> bool:
        return self.net.cfg.time_cond

    @property
    def n_states(self) -> int:
        """SEDD's number of states N: V + 1 with the mask (absorbing graph), V (uniform graph)."""
        return self.mask_id + (self.config.graph == "absorb")

    def forward(self, ids: Tensor, t: Tensor | None = None, **kw) -> Tensor:
        return self.net(ids, t if self.time_cond else None, **kw)  # (B, T, V+1)

    def new_cache(self, batch_size: int, max_len: int | None = None):
        return self.net.new_cache(batch_size, max_len)

    def peek(self, cache):
        return self.net.peek(cache)


def unwrap(model: nn.Module) -> DiscreteLM:
    """The DiscreteLM inside a DDP / compile wrapper."""
    return _unwrap(model, DiscreteLM, "a discrete language model")


def with_bos(x: Tensor, bos_id: int) -> Tensor:
    """[BOS; x]: what the AR model reads, so that it predicts (and is scored on) every token of x. (B, T+1)."""
    return torch.cat([x.new_full((x.shape[0], 1), bos_id), x], dim=1)


def check_network(cfg, data_info: dict, method: str) -> None:
    """The settings every method shares: text data, a known size, whole heads, a known SEDD graph, dropout."""
    m: DiscreteLMConfig = cfg.model
    if "vocab_size" not in data_info:
        raise UserError(f"a {method} language model needs text data (data.name=text), got {cfg.data.name!r}")
    if m.size not in TEXT_SIZES:
        raise UserError(f"model.size={m.size!r} is not one of: {', '.join(TEXT_SIZES)}")
    if m.dim < 0 or m.dim % 64 or m.depth < 0:
        raise UserError(f"model.dim must be a multiple of 64 and model.depth >= 0, got {m.dim}, {m.depth}")
    if m.graph not in GRAPHS:
        raise UserError(f"model.graph={m.graph!r} is not one of: {', '.join(GRAPHS)}")
    if not 0 <= m.dropout < 1:
        raise UserError(f"model.dropout must be in [0, 1), got {m.dropout}")


def build_network(m: DiscreteLMConfig, data_info: dict, method: str, *, causal: bool) -> DiscreteLM:
    """The TextTransformer of `m` over V + 1 outputs (V = the tokenizer's vocabulary, V = the mask id)."""
    V = data_info["vocab_size"]
    sizes = {"depth": m.depth} if m.depth else {}
    if m.dim:
        sizes.update(dim=m.dim, n_heads=m.dim // 64)
    net = TextTransformer(text_config(m.size, V + 1, causal=causal, time_cond=m.time_cond, dropout=m.dropout,
                                      **sizes))
    return DiscreteLM(net, method, m, mask_id=V, bos_id=data_info["bos_id"])


# ------------------------------------------------------------------------------------ the network as a denoiser
def sedd_noise(graph: str):
    """SEDD's schedules: log-linear for the absorbing graph, geometric sigma in [1e-4, 20] for the uniform one."""
    return N.loglinear if graph == "absorb" else partial(N.geometric, sigma_min=1e-4, sigma_max=20.0)


def sedd_log_score(model: nn.Module, lm: DiscreteLM, x: Tensor, sigma: Tensor) -> Tensor:
    """SEDD's score network (Lou et al. 2024, sec. 5, `scale_by_sigma`): log s_theta = output - log(e^sigma - 1)
    - log(N - 1) on the absorbing graph (the true score of a masked token is p(v | unmasked) / (e^sigma - 1)); the
    current token's entry is 0. x (B, L), sigma (B,) -> (B, L, N)."""
    n = lm.n_states
    out = model(x, sigma)[..., :n]  # (B, L, N)
    if lm.config.graph == "absorb":
        out = out - torch.log(N.esigm1(sigma.float()))[:, None, None] - math.log(n - 1)
    return out.scatter(-1, x[..., None], 0.0)


def masked_denoiser(lm: DiscreteLM) -> MaskedDenoiser:
    """MDLM's view: the network's logits at (x_t, t)."""
    return MaskedDenoiser(lm, lm.mask_id, time_cond=lm.time_cond)


def score_denoiser(lm: DiscreteLM, model: nn.Module | None = None) -> ScoreDenoiser:
    """SEDD's view: `sedd_log_score` on the config's graph, with its schedule. `model`: a wrapper of lm (DDP) to
    call instead of lm, for training."""
    g = lm.config.graph
    return ScoreDenoiser(partial(sedd_log_score, lm if model is None else model, lm), lm.mask_id, graph=g,
                         n_states=lm.n_states, noise=sedd_noise(g))


def block_denoiser(lm: DiscreteLM) -> BlockDenoiser:
    """BD3-LM's view: the network with its attention mask, positions and KV cache, in blocks of the config's size."""
    return BlockDenoiser(lm, lm.mask_id, lm.config.block_size, time_cond=lm.time_cond)


def causal_denoiser(lm: DiscreteLM) -> CausalDenoiser:
    """The AR view: the causal network with its KV cache."""
    return CausalDenoiser(lm, lm.mask_id)
