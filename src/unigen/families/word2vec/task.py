"""word2vec (Mikolov et al. 2013a/b, as word2vec.c trains it): the family behind `text-word2vec` and
`text-word2vec-cbow`.

How it trains through `fit()`: `fit` gives the data order (chunks of the corpus, a fresh permutation each epoch),
the seeded and checkpointed RNG, logging, checkpoints and exact resume. The update itself is word2vec.c's plain SGD
with its linear learning-rate decay, applied in place by `sgd.py` inside the loss call; the objective's only
trainable parameter is the model's empty `anchor`, so fit's AdamW (whose step and schedule would not be
word2vec's) changes nothing. `train.lr`, `train.schedule` and friends therefore do not apply: the rate is
`model.alpha`, decayed linearly over `train.steps` to alpha * 1e-4.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

from unigen.config import Config
from unigen.errors import UserError
from unigen.families.word2vec import evaluate as evaluation
from unigen.families.word2vec.network import Word2Vec, Word2VecConfig
from unigen.families.word2vec.sgd import ARCHITECTURES, alpha_at, contexts, sgd_chunks, subsample
from unigen.task import Task, unwrap
from unigen.train import Objective


class Word2VecTask(Task):
    model_config = Word2VecConfig

    def build(self, cfg: Config, data_info: dict) -> nn.Module:
        m: Word2VecConfig = cfg.model
        m.check()
        if "vocab" not in data_info or "counts" not in data_info:
            raise UserError(f"word2vec needs a word corpus (data.name=words), got data.name={cfg.data.name!r}")
        if cfg.train.precision != "fp32":
            raise UserError(f"word2vec trains in fp32 as word2vec.c does; got train.precision={cfg.train.precision!r}")
        return Word2Vec(m, data_info["vocab"], data_info["counts"])

    def objectives(self, cfg: Config) -> list[Objective]:
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:   # each process would update its own copy, unsynced
            raise UserError("word2vec trains in one process (its SGD updates the vectors in place); "
                            "run it without accelerate launch / torchrun")
        return [Objective("sgd", partial(train_batch, alpha0=cfg.model.alpha0, steps=cfg.train.steps),
                          params=lambda model: [unwrap(model, Word2Vec, "a word2vec model").anchor],
                          with_step=True)]

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        """The SGD step at the starting rate (what `objectives` runs, with the decay, during training)."""
        m = unwrap(model, Word2Vec, "a word2vec model")
        return train_batch(model, batch, 0, alpha0=m.cfg.alpha0, steps=1)

    def evaluate(self, model: nn.Module, cfg: Config, *, run_dir: Path, quick: bool = False, query: str = "",
                 **kw) -> dict:
        if kw:
            raise UserError(f"word2vec eval has no option(s) {', '.join(kw)}")
        m = unwrap(model, Word2Vec, "a word2vec model")
        if query:
            return evaluation.answer_query(m, query)
        return evaluation.evaluate(m, run_dir=Path(run_dir), quick=quick)


def train_batch(model: nn.Module, batch: dict, step: int, *, alpha0: float, steps: int) -> tuple[torch.Tensor, dict]:
    """word2vec.c's SGD on a batch of chunks (B, T): sub-sample, shrink windows, update in place (`sgd.py`).
    Returns (mean loss per prediction + 0 * anchor, logs); the random numbers come from torch's global RNG."""
    m = unwrap(model, Word2Vec, "a word2vec model")
    ids = batch["ids"]                                                        # (B, T), -1 = padding
    seq = subsample(ids, m.keep, torch.rand(ids.shape, device=ids.device))   # (B, T)
    b = torch.randint(0, m.cfg.window, seq.shape, device=ids.device)          # window shrink, word2vec.c's `b`
    ctx, valid = contexts(seq, m.cfg.window, b)
    alpha = alpha_at(alpha0, step / max(steps, 1))
    table = getattr(m, "table", None)
    draw = (lambda shape: torch.randint(0, table.numel(), shape, device=ids.device)) if table is not None else None
    with torch.no_grad():
        positions = max(1, m.cfg.update_words // ids.shape[0])
        loss, n = sgd_chunks(ARCHITECTURES[m.cfg.arch], m.syn0.data, seq, ctx, valid, m.layers(), alpha, draw,
                             positions)
    logs = {"alpha": alpha, "words": float((ids >= 0).sum()), "predictions": float(n)}
    return loss / max(n, 1) + m.anchor.sum(), logs


TASK = Word2VecTask()
