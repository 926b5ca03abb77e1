"""A recurrent language model: token embedding -> stacked RNN / LSTM / GRU -> linear head (tied to the embedding,
Press & Wolf 2017), the "medium" LSTM LM of Zaremba et al. 2014 in shape (dropout on the embedding, between
layers and before the head).

It takes the calls of `unigen.models.text.TextTransformer` that an autoregressive LM needs, so the AR method can
sample and score with either: forward(ids, cache=None) -> logits, new_cache(batch), peek(cache). The "cache" of a
recurrent model is its hidden state (a `RecurrentState`): a call with a cache starts from its state and leaves the
final state in it. No position enters the model, so it has no length limit.

    B batch, T tokens, V = vocab_size, H = hidden, L = layers.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unigen.errors import UserError
from unigen.nn.recurrent import RECURRENT, make_recurrent

RECURRENT_CELLS = tuple(RECURRENT)
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


@dataclass
class RecurrentLMConfig:
    vocab_size: int
    cell: str = "lstm"          # lstm | gru | rnn_tanh | rnn_relu
    hidden: int = 444           # H: embedding width and every layer's state
    layers: int = 2             # L
    dropout: float = 0.0        # on the embedding, between layers and before the head (Zaremba et al. 2014)
    forget_bias: float | None = None    # LSTM: None = PyTorch's init; 1.0 = Keras' unit_forget_bias
    orthogonal: bool = False    # orthogonal W_hh gate blocks
    impl: str = "auto"          # auto (torch's kernel) | cells (written out) | torch
    tie_embeddings: bool = True

    @property
    def time_cond(self) -> bool:
        """A recurrent LM has no noise-level input (the discrete-LM wrapper asks)."""
        return False

    @property
    def causal(self) -> bool:
        """Position t reads tokens <= t only."""
        return True


class RecurrentState:
    """The hidden state a recurrent LM carries between calls: `state` is (h,) or (h, c), (L, B, H) each, or None
    (zeros); `length` counts the tokens it has read."""

    def __init__(self, batch_size: int, state: tuple[Tensor, ...] | None = None):
        self.batch_size, self.state, self.length = batch_size, state, 0


class RecurrentLM(nn.Module):
    """Token ids -> logits through a stacked recurrent network. Init: embedding (and an untied head) U(-0.1, 0.1),
    as PyTorch's word_language_model example; the recurrent layers keep `unigen.nn.recurrent`'s init."""

    def __init__(self, cfg: RecurrentLMConfig):
        super().__init__()
        if cfg.vocab_size <= 0 or cfg.hidden <= 0 or cfg.layers <= 0:
            raise UserError(f"a recurrent LM needs vocab_size, hidden and layers > 0, got {cfg.vocab_size}, "
                            f"{cfg.hidden}, {cfg.layers}")
        if cfg.cell not in RECURRENT:
            raise UserError(f"unknown recurrent cell {cfg.cell!r}; choose one of {', '.join(RECURRENT)}")
        if not 0 <= cfg.dropout < 1:
            raise UserError(f"dropout must be in [0, 1), got {cfg.dropout}")
        self.cfg = cfg
        H = cfg.hidden
        self.tok_emb = nn.Embedding(cfg.vocab_size, H)
        self.rnn = make_recurrent(cfg.cell, H, H, cfg.layers, batch_first=True, dropout=cfg.dropout,
                                  forget_bias=cfg.forget_bias if cfg.cell == "lstm" else None,
                                  orthogonal=cfg.orthogonal, impl=cfg.impl)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(H, cfg.vocab_size, bias=False)
        nn.init.uniform_(self.tok_emb.weight, -0.1, 0.1)
        nn.init.uniform_(self.head.weight, -0.1, 0.1)
        if cfg.tie_embeddings:
            self.head.weight = self.tok_emb.weight

    @property
    def n_state(self) -> int:
        """Tensors in the hidden state: 2 for the LSTM (h, c), else 1."""
        return 2 if self.cfg.cell == "lstm" else 1

    def new_cache(self, batch_size: int, max_len: int | None = None) -> RecurrentState:
        """An empty state (zeros); `max_len` is accepted for the transformer's signature and has no effect."""
        return RecurrentState(batch_size)

    @staticmethod
    @contextlib.contextmanager
    def peek(cache: RecurrentState):
        """Calls inside read the cache's state without advancing it."""
        state, length = cache.state, cache.length
        try:
            yield cache
        finally:
            cache.state, cache.length = state, length

    def forward(self, ids: Tensor, t: Tensor | None = None, *, cache: RecurrentState | None = None) -> Tensor:
        """ids (B, T) long -> logits (B, T, V) float32. cache: start from its state and leave the last in it."""
        if t is not None:
            raise UserError("a recurrent LM has no noise-level input t")
        if ids.dim() != 2 or ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise UserError(f"ids must be an integer tensor of shape (B, T), got {tuple(ids.shape)} {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.cfg.vocab_size):
            bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
            raise UserError(f"token id {bad} is outside the model's vocabulary 0..{self.cfg.vocab_size - 1}")
        if cache is not None and cache.batch_size != ids.shape[0]:
            raise UserError(f"the state holds {cache.batch_size} sequences, the batch has {ids.shape[0]}")
        hx = None if cache is None or cache.state is None else cache.state
        if hx is not None and self.n_state == 1:
            hx = hx[0]
        x = self.drop(self.tok_emb(ids))  # (B, T, H)
        y, hn = self.rnn(x, hx)  # (B, T, H), (L, B, H) [x 2]
        if cache is not None:
            cache.state = hn if isinstance(hn, tuple) else (hn,)
            cache.length += ids.shape[1]
        return self.head(self.drop(y)).float()  # (B, T, V)


def param_count(cell: str, vocab_size: int, hidden: int, layers: int, tied: bool = True) -> int:
    """Parameters of a RecurrentLM: embedding V H, per layer G H (H + H) weights and 2 G H biases (torch's two
    bias vectors), and an untied head V H."""
    if cell not in GATES:
        raise UserError(f"unknown recurrent cell {cell!r}; choose one of {', '.join(GATES)}")
    G, H = GATES[cell], hidden
    return vocab_size * H * (1 if tied else 2) + layers * (G * H * 2 * H + 2 * G * H)


def hidden_for_params(target: int, cell: str, vocab_size: int, layers: int) -> int:
    """The width H whose `param_count` (tied head) is nearest `target`."""
    lo, hi = 1, 1
    while param_count(cell, vocab_size, hi, layers) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # param_count(lo) < target <= param_count(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if param_count(cell, vocab_size, mid, layers) < target else (lo, mid)
    return min((lo, hi), key=lambda h: abs(param_count(cell, vocab_size, h, layers) - target))
