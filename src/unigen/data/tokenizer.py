"""Tokenizers with one interface: `ByteTokenizer` (UTF-8 bytes), `BPETokenizer` (Hugging Face byte-level BPE) and
`OwnBPETokenizer` (our byte-level BPE, `unigen.data.bpe`, saved in HF's tokenizer.json layout).

Both have `encode(str) -> list[int]`, `decode(list[int]) -> str` (special ids are dropped), `vocab_size`,
`bos_id`, `eos_id`, `pad_id`, and `save(dir)` which writes `dir/tokenizer.json`; `load_tokenizer(dir)` (also
`Tokenizer.load(dir)`) reads either kind back. `encode` adds no special ids. The mask token of diffusion LMs is not
part of a tokenizer: those models use the id `vocab_size` themselves.
"""
from __future__ import annotations

import json
from pathlib import Path

from unigen.data.bpe import BytePairEncoding
from unigen.errors import UserError
from unigen.io import atomic_write_text

FILENAME = "tokenizer.json"
TOKENIZERS = ("byte", "bpe", "unigen-bpe")   # the kinds `build_tokenizer` makes: bpe is HF-trained, unigen-bpe ours
MIN_BPE_VOCAB = 260            # the 256 bytes, BOS, EOS, PAD and at least one merge
SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|pad|>")   # BPE spellings of BOS, EOS, PAD


class Tokenizer:
    """Shared behaviour; subclasses set `vocab_size`, `bos_id`, `eos_id`, `pad_id` and implement the codecs."""

    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    kind: str

    @property
    def special_ids(self) -> tuple[int, int, int]:
        return (self.bos_id, self.eos_id, self.pad_id)

    def _check_ids(self, ids: list[int]) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise UserError(f"token id {bad[0]} is outside the {self.kind} tokenizer's vocabulary 0..{self.vocab_size - 1}")
        return ids

    def _json(self) -> str:
        raise NotImplementedError

    def save(self, directory: str | Path) -> Path:
        """Write `directory/tokenizer.json` atomically; returns its path."""
        return atomic_write_text(Path(directory) / FILENAME, self._json())

    @staticmethod
    def load(directory: str | Path) -> "Tokenizer":
        return load_tokenizer(directory)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class ByteTokenizer(Tokenizer):
    """Ids 0..255 are the UTF-8 bytes; 256 = BOS, 257 = EOS, 258 = PAD; vocab_size 259."""

    kind = "byte"

    def __init__(self):
        self.bos_id, self.eos_id, self.pad_id, self.vocab_size = 256, 257, 258, 259

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        """Bytes -> text; special ids are dropped and invalid UTF-8 becomes U+FFFD."""
        data = bytes(i for i in self._check_ids(ids) if i < 256)
        return data.decode("utf-8", errors="replace")

    def _json(self) -> str:
        return json.dumps({"unigen_tokenizer": "byte", "vocab_size": self.vocab_size, "bos_id": self.bos_id,
                           "eos_id": self.eos_id, "pad_id": self.pad_id}, indent=2)


class BPETokenizer(Tokenizer):
    """Byte-level BPE (Hugging Face `tokenizers`); ids 0, 1, 2 are BOS, EOS, PAD, then the 256 bytes, then merges."""

    kind = "bpe"

    def __init__(self, hf_tokenizer):
        added = {tok.content: i for i, tok in hf_tokenizer.get_added_tokens_decoder().items() if tok.special}
        if any(t not in added for t in SPECIAL_TOKENS):
            raise UserError(f"BPE tokenizer lacks the special tokens {', '.join(SPECIAL_TOKENS)}")
        ids = [added[t] for t in SPECIAL_TOKENS]
        hf_tokenizer.encode_special_tokens = True   # "<|eos|>" typed in text is plain text, not the EOS id
        self.hf = hf_tokenizer
        self.bos_id, self.eos_id, self.pad_id = ids
        self.vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BPETokenizer":
        """Learn `vocab_size - 259` merges on `text` (deterministic: counts and tie-breaks do not depend on order)."""
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
        if vocab_size < MIN_BPE_VOCAB:
            raise UserError(f"data.vocab_size must be >= {MIN_BPE_VOCAB} for a BPE tokenizer, got {vocab_size}")
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(text.splitlines(keepends=True), trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(self._check_ids(ids), skip_special_tokens=True)

    def _json(self) -> str:
        return self.hf.to_str(pretty=True)


class OwnBPETokenizer(Tokenizer):
    """Our byte-level BPE (`unigen.data.bpe`): ids 0..255 are the bytes, 256.. the merges, then BOS, EOS, PAD."""

    kind = "unigen-bpe"

    def __init__(self, bpe: BytePairEncoding):
        if tuple(bpe.specials) != SPECIAL_TOKENS:
            raise UserError(f"BPE tokenizer has the special tokens {list(bpe.specials)}, not {list(SPECIAL_TOKENS)}")
        self.bpe = bpe
        self.bos_id, self.eos_id, self.pad_id = (bpe.specials[s] for s in SPECIAL_TOKENS)
        self.vocab_size = bpe.vocab_size

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "OwnBPETokenizer":
        """Learn `vocab_size - 259` merges on `text` with `unigen.data.bpe.train`."""
        if vocab_size < MIN_BPE_VOCAB:
            raise UserError(f"BPE vocabulary size must be >= {MIN_BPE_VOCAB} (256 bytes, BOS, EOS, PAD and a merge), "
                            f"got {vocab_size}")
        return cls(BytePairEncoding.train(text, vocab_size, SPECIAL_TOKENS))

    def encode(self, text: str) -> list[int]:
        return self.bpe.encode_ordinary(text)   # "<|eos|>" typed in text is plain text, not the EOS id

    def decode(self, ids: list[int]) -> str:
        return self.bpe.decode([i for i in self._check_ids(ids) if i not in self.special_ids])

    def _json(self) -> str:
        return self.bpe.to_hf_json()


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Read `directory/tokenizer.json` (or that file itself) written by `Tokenizer.save`."""
    path = Path(directory)
    if path.is_dir() or path.name != FILENAME:
        path = path / FILENAME
    if not path.is_file():
        raise UserError(f"tokenizer file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        spec = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"tokenizer file {path} is corrupt: not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise UserError(f"tokenizer file {path} is corrupt: expected a JSON object")
    if spec.get("unigen_tokenizer") == "byte":
        want = ByteTokenizer()
        if any(spec.get(k) != getattr(want, k) for k in ("vocab_size", "bos_id", "eos_id", "pad_id")):
            raise UserError(f"tokenizer file {path} is corrupt: byte tokenizer ids differ from 256/257/258/259")
        return want
    if isinstance(spec.get("model"), dict) and spec["model"].get("type") == "BPE":
        try:
            own = BytePairEncoding.from_hf_json(spec)   # None: not our id layout, so HF reads it
            if own is not None:
                return OwnBPETokenizer(own)
        except (UserError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"tokenizer file {path} is corrupt: {e}") from None
        from tokenizers import Tokenizer as HFTokenizer
        try:
            hf = HFTokenizer.from_str(text)
        except Exception as e:  # the Rust parser raises plain Exception subclasses
            raise UserError(f"tokenizer file {path} is corrupt: {e}") from None
        try:
            return BPETokenizer(hf)
        except UserError as e:
            raise UserError(f"tokenizer file {path} is corrupt: {e}") from None
    raise UserError(f"tokenizer file {path} is corrupt: neither a unigen byte tokenizer nor a BPE tokenizer")


def build_tokenizer(kind: str, text: str, vocab_size: int) -> Tokenizer:
    """The tokenizer `data.tokenizer` names: "byte" (fixed), "bpe" (HF-trained) or "unigen-bpe" (ours), on `text`."""
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size)
    if kind == "unigen-bpe":
        return OwnBPETokenizer.train(text, vocab_size)
    raise UserError(f"data.tokenizer={kind!r} is not one of: {', '.join(TOKENIZERS)}")
