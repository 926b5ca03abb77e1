"""The word2vec model: its config and the vectors (parameters only; the update rule is in `sgd.py`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from unigen.errors import UserError
from unigen.families.word2vec.tables import huffman, keep_probability, unigram_table


@dataclass
class Word2VecConfig:
    arch: str = "skipgram"      # skipgram | cbow
    dim: int = 100              # vector size (word2vec.c -size)
    window: int = 5             # max context distance; each word's window shrinks to uniform 1..window
    negative: int = 5           # negatives per prediction from the unigram^0.75 table (0 = off)
    hs: bool = False            # hierarchical softmax over word2vec.c's Huffman tree
    sample: float = 1e-3        # sub-sampling threshold s of word2vec.c's keep rule (0 = off)
    alpha: float = 0.0          # starting learning rate (0 = word2vec.c's: 0.025 skip-gram, 0.05 CBOW)
    table_size: int = 10_000_000   # entries of the negative table (word2vec.c: 1e8)
    update_words: int = 256     # words per SGD update: the batch's chunks advance in lockstep, this many words at
                                # a time (like word2vec.c's threads); 8000 at once diverged on enwiki

    def check(self) -> None:
        if self.arch not in ("skipgram", "cbow"):
            raise UserError(f"model.arch={self.arch!r} is not one of: skipgram, cbow")
        for key in ("dim", "window", "table_size", "update_words"):
            if getattr(self, key) < 1:
                raise UserError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.negative < 0 or self.sample < 0 or self.alpha < 0:
            raise UserError("model.negative, model.sample and model.alpha must be >= 0, got "
                            f"{self.negative}, {self.sample}, {self.alpha}")
        if self.negative == 0 and not self.hs:
            raise UserError("model.negative=0 and model.hs=false leave word2vec nothing to predict; set one")

    @property
    def alpha0(self) -> float:
        return self.alpha or (0.025 if self.arch == "skipgram" else 0.05)


class Word2Vec(nn.Module):
    """syn0 (V, d) input vectors, U(-0.5, 0.5) / d; syn1neg (V, d) and syn1 (V - 1, d) output vectors, zero
    (word2vec.c InitNet). The vectors are parameters that no optimizer steps: `sgd.py` updates them in place.
    `anchor` is an empty parameter so that `fit()` (which needs one to build its optimizer) has one: its AdamW
    steps nothing. The tables derived from the counts are rebuilt, not saved."""

    def __init__(self, cfg: Word2VecConfig, vocab: list[str], counts: list[int]):
        super().__init__()
        V, d = len(vocab), cfg.dim
        self.cfg, self.vocab = cfg, list(vocab)
        self.syn0 = nn.Parameter((torch.rand(V, d) - 0.5) / d, requires_grad=False)
        self.syn1neg = nn.Parameter(torch.zeros(V, d), requires_grad=False) if cfg.negative else None
        self.syn1 = nn.Parameter(torch.zeros(V - 1, d), requires_grad=False) if cfg.hs else None
        self.anchor = nn.Parameter(torch.zeros(0))
        cn = torch.tensor(counts, dtype=torch.long)
        self.register_buffer("cn", cn, persistent=False)
        self.register_buffer("keep", keep_probability(cn, cfg.sample).float(), persistent=False)
        if cfg.negative:
            self.register_buffer("table", unigram_table(cn, cfg.table_size), persistent=False)
        if cfg.hs:
            code, point, codelen = huffman(cn)
            self.register_buffer("code", code, persistent=False)
            self.register_buffer("point", point, persistent=False)
            self.register_buffer("codelen", codelen, persistent=False)

    def layers(self) -> list:
        """The output layers for `sgd.outputs_step`: hierarchical softmax first, as word2vec.c."""
        out = []
        if self.syn1 is not None:
            out.append(("hs", self.syn1.data, self.code, self.point, self.codelen))
        if self.syn1neg is not None:
            out.append(("ns", self.syn1neg.data, self.table, self.cfg.negative))
        return out

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}
