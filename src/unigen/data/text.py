"""Text data: the English of Python's `pydoc_data.topics` (or a UTF-8 file), tokenized into fixed windows.

The whole corpus is one token stream. The last ceil(5%) of its tokens are the `test` split, the rest `train`;
each split is cut into non-overlapping windows of `data.seq_len` tokens (a trailing partial window is dropped).
A BPE tokenizer is trained on the whole corpus (cached per corpus and vocabulary size).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unigen.data import options
from unigen.data.dataset import Dataset, cached, check_split
from unigen.data.tokenizer import MIN_BPE_VOCAB, TOKENIZERS, Tokenizer, build_tokenizer
from unigen.errors import UserError

TEST_FRACTION = 0.05
STDLIB_SOURCE = "pydoc_data.topics"


@dataclass
class TextData:
    """`data.*` options of the text dataset."""

    name: str = "text"
    path: str = ""              # a UTF-8 file to use instead of the stdlib corpus
    tokenizer: str = "byte"     # byte | bpe (HF tokenizers) | unigen-bpe (ours, unigen.data.bpe)
    vocab_size: int = 512       # BPE vocabulary size (unused by the byte tokenizer)
    seq_len: int = 128          # tokens per training sequence

    def check(self) -> None:
        options.one_of("data.tokenizer", self.tokenizer, TOKENIZERS)
        if self.tokenizer != "byte" and self.vocab_size < MIN_BPE_VOCAB:
            raise UserError(f"data.vocab_size must be >= {MIN_BPE_VOCAB} for a BPE tokenizer, got {self.vocab_size}")
        options.positive("data.seq_len", self.seq_len)


def stdlib_corpus() -> str:
    """The topic texts of Python's help system, joined in sorted key order (~465k characters of English)."""
    from pydoc_data import topics
    return "".join(topics.topics[k] for k in sorted(topics.topics))


def read_text_file(path: str | Path) -> str:
    """A non-empty UTF-8 text file; UserError naming the file for missing, empty, binary or non-UTF-8 content."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"text file {p} does not exist")
    if not p.is_file():
        raise UserError(f"text file {p} is not a regular file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"text file {p} cannot be read: {e.strerror}") from None
    if not data:
        raise UserError(f"text file {p} is empty")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise UserError(f"text file {p} contains a NUL byte at offset {nul}: it looks binary, not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"text file {p} is not valid UTF-8 (bad byte at offset {e.start})") from None
    if not text.strip():
        raise UserError(f"text file {p} is empty (only whitespace)")
    return text


def _corpus(path: str) -> tuple[str, str]:
    """(source name, text); files are re-read only when their size or modification time changes."""
    if not path:
        return STDLIB_SOURCE, cached(("text-source", STDLIB_SOURCE), stdlib_corpus)
    p = Path(path).expanduser()
    try:
        st = p.stat()
        key = ("text-source", str(p.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    text = read_text_file(p) if key is None else cached(key, lambda: read_text_file(p))
    return str(p), text


def _tokenize(text: str, kind: str, vocab_size: int) -> tuple[Tokenizer, np.ndarray]:
    tok = build_tokenizer(kind, text, vocab_size)
    return tok, np.asarray(tok.encode(text), dtype=np.int64)


def split_point(n_tokens: int) -> int:
    """Index where `test` starts: the last ceil(TEST_FRACTION * n) tokens are held out."""
    return n_tokens - math.ceil(TEST_FRACTION * n_tokens)


def windows(stream: np.ndarray, seq_len: int) -> torch.Tensor:
    """Non-overlapping windows (len // T, T) of a 1-D token stream, as a fresh long tensor."""
    n = len(stream) // seq_len
    return torch.from_numpy(stream[: n * seq_len].reshape(n, seq_len).copy())   # (N, T)


def load_text(cfg: TextData, split: str) -> Dataset:
    """`{"ids": (N, seq_len) long}` windows of the tokenized corpus; `ds.tokenizer` encodes and decodes."""
    check_split(split)
    cfg.check()
    source, text = _corpus(cfg.path)
    vocab = cfg.vocab_size if cfg.tokenizer != "byte" else 0
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    tok, stream = cached(("text-tokens", digest, cfg.tokenizer, vocab), lambda: _tokenize(text, cfg.tokenizer, vocab))
    cut = split_point(len(stream))
    if len(stream) - cut < cfg.seq_len:
        raise UserError(f"text {source} has {len(stream)} tokens, too few for data.seq_len={cfg.seq_len}: the held-out "
                        f"last {TEST_FRACTION:.0%} must hold one window, so it needs about {round(cfg.seq_len / TEST_FRACTION)}")
    part = stream[:cut] if split == "train" else stream[cut:]
    ids = windows(part, cfg.seq_len)                                            # (N, T)
    info = {"name": "text", "split": split, "source": source, "tokenizer": tok.kind, "vocab_size": tok.vocab_size,
            "seq_len": cfg.seq_len, "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
            "tokens": int(ids.numel())}
    return Dataset({"ids": ids}, info, tokenizer=tok)
