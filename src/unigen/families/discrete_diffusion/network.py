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

from unigen.data.pixels import PIXEL_VALUES
from unigen.errors import UserError
from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion.ar import ar_loss
from unigen.families.discrete_diffusion.samplers import BlockDenoiser, CausalDenoiser, MaskedDenoiser, ScoreDenoiser
from unigen.families.discrete_diffusion.sedd import GRAPHS
from unigen.models.rnn import RECURRENT_CELLS, RecurrentLM, RecurrentLMConfig, RecurrentState, hidden_for_params
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
    resample: bool = True       # bd3: redraw blocks whose masked fraction is outside [beta, omega] (bd3lms' default)
    ignore_bos: bool = False    # bd3: never mask (so never score) the first token of a window (bd3lms' algo.ignore_bos)
    dropout: float = 0.0
    backbone: str = "transformer"  # transformer | lstm | gru | rnn_tanh | rnn_relu (recurrent: causal, so AR only)
    hidden: int = 0             # recurrent width H; 0 = the H whose parameter count is nearest the transformer's
    layers: int = 2             # recurrent layers
    unit_forget_bias: bool = False  # LSTM forget-gate bias 1 (Keras' default; PyTorch's init has none)
    orthogonal: bool = False    # orthogonal recurrent weights W_hh (per gate block)
    carry_state: bool = False   # recurrent AR: truncated BPTT over contiguous streams, state carried across batches


class DiscreteLM(nn.Module):
    """A TextTransformer and the ids its method needs (mask = V, BOS). forward(ids, t, **kw) drops t when the
    network has no time conditioning, so it is a `logits_fn(x_t, t)` for every sampler and loss."""

    def __init__(self, net: TextTransformer, method: str, config: DiscreteLMConfig, mask_id: int, bos_id: int,
                 n_data: int | None = None):
        super().__init__()
        self.net, self.method, self.config = net, method, config
        self.mask_id, self.bos_id = mask_id, bos_id
        # ids n_data .. mask_id - 1 never occur in the data (pixel tokens: BOS, EOS, PAD) and get no probability
        self.n_data = mask_id if n_data is None else n_data
        self.register_buffer("never", torch.arange(self.n_data, mask_id), persistent=False)

    @property
    def time_cond(self) -> bool:
        return self.net.cfg.time_cond

    @property
    def n_states(self) -> int:
        """SEDD's number of states N: V + 1 with the mask (absorbing graph), V (uniform graph)."""
        return self.mask_id + (self.config.graph == "absorb")

    def forward(self, ids: Tensor, t: Tensor | None = None, **kw) -> Tensor:
        logits = self.net(ids, t if self.time_cond else None, **kw)  # (B, T, V+1)
        if self.never.numel():
            logits = logits.index_fill(-1, self.never, float("-inf"))
        return logits

    def new_cache(self, batch_size: int, max_len: int | None = None):
        return self.net.new_cache(batch_size, max_len)

    def peek(self, cache):
        return self.net.peek(cache)

    def enable_carry(self, batch_size: int) -> None:
        """A persistent buffer `carry` (n_state, L, B, H) for the recurrent state carried from one training batch to
        the next: it is saved in every checkpoint, so a resumed run continues from the very same state."""
        net = self.net
        self.register_buffer("carry", torch.zeros(net.n_state, net.cfg.layers, batch_size, net.cfg.hidden))


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
    if m.backbone != "transformer" and m.backbone not in RECURRENT_CELLS:
        raise UserError(f"model.backbone={m.backbone!r} is not one of: transformer, {', '.join(RECURRENT_CELLS)}")
    if m.hidden < 0 or m.layers <= 0:
        raise UserError(f"model.hidden must be >= 0 and model.layers > 0, got {m.hidden}, {m.layers}")


def build_network(m: DiscreteLMConfig, data_info: dict, method: str, *, causal: bool) -> DiscreteLM:
    """The TextTransformer of `m` over V + 1 outputs (V = the tokenizer's vocabulary, V = the mask id)."""
    V = data_info["vocab_size"]
    sizes = {"depth": m.depth} if m.depth else {}
    if m.dim:
        sizes.update(dim=m.dim, n_heads=m.dim // 64)
    tcfg = text_config(m.size, V + 1, causal=causal, time_cond=m.time_cond, dropout=m.dropout, **sizes)
    net = TextTransformer(tcfg) if m.backbone == "transformer" else build_recurrent(m, tcfg, causal)
    n_data = PIXEL_VALUES if data_info.get("pixels") else V            # pixel data: the 256 byte values only
    return DiscreteLM(net, method, m, mask_id=V, bos_id=data_info["bos_id"], n_data=n_data)


def build_recurrent(m: DiscreteLMConfig, tcfg, causal: bool) -> RecurrentLM:
    """The recurrent LM of `m.backbone`; width m.hidden, or (0) the one matching the parameter count of the
    transformer `tcfg` (built on the meta device only to be counted)."""
    if not causal:
        raise UserError(f"model.backbone={m.backbone} reads left to right: use it with the autoregressive method "
                        "(--task=ar)")
    if m.unit_forget_bias and m.backbone != "lstm":
        raise UserError(f"model.unit_forget_bias applies to the LSTM only, not model.backbone={m.backbone}")
    hidden = m.hidden
    if not hidden:
        with torch.device("meta"):
            target = sum(p.numel() for p in TextTransformer(tcfg).parameters())
        hidden = hidden_for_params(target, m.backbone, tcfg.vocab_size, m.layers)
    return RecurrentLM(RecurrentLMConfig(tcfg.vocab_size, cell=m.backbone, hidden=hidden, layers=m.layers,
                                         dropout=m.dropout, forget_bias=1.0 if m.unit_forget_bias else None,
                                         orthogonal=m.orthogonal))


# ----------------------------------------------------------------------------- truncated BPTT over carried state
def stream_windows(step: int, n: int, batch_size: int) -> tuple[Tensor, bool]:
    """Zaremba et al. 2014's batching, made stateless: the n training windows, in corpus order, are cut into B
    streams of n // B consecutive windows; step k reads window k mod (n // B) of every stream, so row b continues
    row b of step k - 1. Returns the window indices (B,) and whether the streams restart here (fresh state)."""
    per = n // batch_size
    j = step % per
    return torch.arange(batch_size) * per + j, j == 0


def carried_ar_loss(model: nn.Module, lm: DiscreteLM, windows: Tensor, step: int) -> Tensor:
    """Truncated BPTT (Williams & Peng 1990) with the state carried across batches: the AR loss of step `step`'s
    stream windows (B, T), starting from the final state of step - 1 (`lm.carry`, detached: gradients stop at
    the window's start) and predicting its first token from the previous window's last one (BOS at a restart).
    The final state is stored back in `lm.carry`. windows (N, T): every training window in corpus order."""
    B = lm.carry.shape[2]
    idx, fresh = stream_windows(step, windows.shape[0], B)
    x = windows[idx].to(lm.carry.device)  # (B, T)
    if fresh:
        prev, state = x.new_full((B,), lm.bos_id), None
    else:
        prev, state = windows[idx - 1, -1].to(x.device), tuple(s.clone() for s in lm.carry)  # (B,), (L, B, H) each
    cache = RecurrentState(B, state)
    nats = ar_loss(partial(model, cache=cache), torch.cat([prev[:, None], x], dim=1), mask_id=lm.mask_id)
    with torch.no_grad():
        lm.carry.copy_(torch.stack(cache.state))
    return nats


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
