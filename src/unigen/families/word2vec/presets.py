"""The word2vec presets: word2vec.c's defaults on the enwiki excerpt that ships in gensim's wheel."""
from __future__ import annotations

from unigen.config import Config, SampleConfig, TrainConfig
from unigen.data.words import WordsData
from unigen.families.word2vec.network import Word2VecConfig

# The enwiki excerpt has ~458k training words (min_count 5: 8.7k words) in 459 chunks of 1000; 8 chunks a step,
# 57 steps an epoch. word2vec.c's defaults otherwise: dim 100, window 5, 5 negatives, sample 1e-3; 5 epochs (its
# -iter 5) for CBOW, 15 for skip-gram (the corpus is 30x smaller than text8; measured in benchmarks/word2vec.md).
# train.lr and the schedule do not apply (see task.py): model.alpha is word2vec.c's starting rate.
def _w2v(preset: str, epochs: int, **model) -> Config:
    steps = epochs * 57
    return Config(task="word2vec", preset=preset, data=WordsData(corpus="enwiki", min_count=5, chunk=1000),
                  model=Word2VecConfig(**model),
                  train=TrainConfig(steps=steps, batch_size=8, lr=0.0, schedule="constant", grad_clip=0.0,
                                    ema_decay=0.0, ckpt_every=steps, log_every=10),
                  sample=SampleConfig())


def text_word2vec() -> Config:
    """word2vec skip-gram with negative sampling (word2vec.c's defaults) on 0.46M words of English Wikipedia."""
    return _w2v("text-word2vec", 15, arch="skipgram")


def text_word2vec_cbow() -> Config:
    """word2vec CBOW with negative sampling (word2vec.c's defaults, alpha 0.05) on 0.46M words of Wikipedia."""
    return _w2v("text-word2vec-cbow", 5, arch="cbow")


def text_word2vec_hs() -> Config:
    """word2vec skip-gram with hierarchical softmax (Huffman tree, no negatives) on 0.46M words of Wikipedia."""
    return _w2v("text-word2vec-hs", 15, arch="skipgram", hs=True, negative=0)


PRESETS = {"text-word2vec": text_word2vec, "text-word2vec-cbow": text_word2vec_cbow,
           "text-word2vec-hs": text_word2vec_hs}
