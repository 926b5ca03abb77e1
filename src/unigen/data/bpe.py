"""Byte-level BPE as GPT-2 has it: our own trainer and encoder, saved in the Hugging Face `tokenizer.json` format.

Byte pair encoding (Sennrich et al. 2016, *Neural Machine Translation of Rare Words with Subword Units*,
Algorithm 1) on UTF-8 bytes with GPT-2's pre-split (Radford et al. 2019, *Language Models are Unsupervised
Multitask Learners*, Sec. 2.2): the text is cut into chunks by `GPT2_SPLIT` (contractions, letter runs, digit
runs, punctuation runs, each with at most one leading space, and whitespace), and merges never cross a chunk.

Notation (as karpathy/minbpe and tiktoken's `_educational.py` have it):
    ids 0..255           the bytes themselves (so any byte string has an encoding and decoding is exact)
    merges[k] = (a, b)   the k-th merge; it makes token id 256 + k, so a merge's rank is its id
    vocab[i]             the bytes of token i: vocab[256 + k] = vocab[a] + vocab[b]

Training (`train_reference`, the readable one, and `train`, the fast one; both give the same merges): count
every adjacent pair inside every chunk, merge the most frequent; a tie goes to the pair seen first in the text
(in its current, partly merged form), which is what `max` over an insertion-ordered dict does in minbpe and in
tiktoken's `bpe_train`. Hugging Face `tokenizers`' BpeTrainer breaks ties differently: its priority queue takes
the pair with the smallest (left id, right id) in *its* id numbering (specials first, then the alphabet in
character order), so on a tie the two can pick different merges; `tests/test_bpe.py` shows one such corpus.
Encoding a chunk merges, while any pair of neighbours is a merge, the pair of lowest rank (leftmost first);
tiktoken's byte-level encoder and HF's BPE model do the same, so all three give the same ids for our merges.
"""
from __future__ import annotations

import heapq
import json
from collections import Counter

import regex

from unigen.errors import UserError

GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_SPLIT = regex.compile(GPT2_SPLIT)
CACHE_LIMIT = 1 << 16      # chunks remembered by the encoder before its cache is emptied


def chunks(text: str) -> list[str]:
    """GPT-2's pre-split: the pieces that merges never cross (they concatenate back to `text`)."""
    return _SPLIT.findall(text)


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of `pair` in `ids`, left to right, by `new_id`."""
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class TooFewPairs(UserError):
    """The text runs out of pairs (every chunk is one token) before `n_merges` merges."""

    def __init__(self, n_merges: int, done: int, floor: int = 256):
        super().__init__(f"the text allows only {done} merges, not {n_merges} (every chunk is one token by then): "
                         f"the vocabulary size can be at most {floor + done}; use a smaller one or a larger text")
        self.n_merges, self.done = n_merges, done


def train_reference(text: str, n_merges: int) -> list[tuple[int, int]]:
    """Sennrich et al. 2016, Algorithm 1 on bytes, read straight: recount all pairs, merge the most frequent, repeat.

    O(n_merges x corpus); it is the specification `train` is tested against."""
    words = [list(c.encode("utf-8")) for c in chunks(text)]
    merges: list[tuple[int, int]] = []
    for k in range(n_merges):
        stats: dict[tuple[int, int], int] = {}          # insertion order = order first seen in the text
        for w in words:
            for pair in zip(w, w[1:]):
                stats[pair] = stats.get(pair, 0) + 1
        if not stats:
            raise TooFewPairs(n_merges, k)
        best = max(stats, key=stats.__getitem__)      # the first of the most frequent pairs
        merges.append(best)
        words = [merge(w, best, 256 + k) for w in words]
    return merges


class _PairIndex:
    """Pair counts over distinct chunks (weighted by how often each occurs), the chunks holding each pair, and a
    max-heap of (count, first chunk) whose entries are checked when they reach the top (lazy deletion)."""

    def __init__(self, text: str):
        freq = Counter(chunks(text))                  # insertion order = first seen in the text
        self.words = [list(c.encode("utf-8")) for c in freq]
        self.freq = list(freq.values())
        self.count: dict[tuple[int, int], int] = {}
        self.where: dict[tuple[int, int], set[int]] = {}
        self.first: dict[tuple[int, int], int] = {}   # min(where[pair]), or a lower bound for pairs in `moved`
        self.moved: set[tuple[int, int]] = set()      # pairs whose first chunk lost them since
        for j, w in enumerate(self.words):
            for pair in zip(w, w[1:]):
                self.count[pair] = self.count.get(pair, 0) + self.freq[j]
                self.where.setdefault(pair, set()).add(j)
                self.first.setdefault(pair, j)
        self.heap = [(-c, self.first[pair], pair) for pair, c in self.count.items()]
        heapq.heapify(self.heap)

    def _top(self) -> tuple[int, int, tuple[int, int]] | None:
        """The heap's top once it is true: an entry whose count changed is dropped (the change pushed a new one);
        one whose first chunk moved on (that chunk lost the pair) goes back with the new one. A pair's first
        chunk only moves later, so a stale entry never sorts after the true one."""
        while self.heap:
            c, f, pair = self.heap[0]
            if self.count.get(pair) != -c:
                heapq.heappop(self.heap)
                continue
            if pair in self.moved:
                self.first[pair] = min(self.where[pair])
                self.moved.discard(pair)
            true = self.first[pair]
            if true == f:
                return self.heap[0]
            heapq.heapreplace(self.heap, (c, true, pair))
        return None

    def position(self, pair: tuple[int, int]) -> int:
        """Where the pair first occurs in its first chunk."""
        w = self.words[self.first[pair]]
        return next(i for i in range(len(w) - 1) if (w[i], w[i + 1]) == pair)

    def pop_best(self) -> tuple[int, int] | None:
        """The most frequent pair, ties to the one seen first (first chunk, then first position in it); None
        when no pair is left."""
        top = self._top()
        if top is None:
            return None
        ties: dict[tuple[int, int], None] = {}
        while (t := self._top()) is not None and t[:2] == top[:2]:
            ties[heapq.heappop(self.heap)[2]] = None
        best = next(iter(ties)) if len(ties) == 1 else min(ties, key=self.position)
        for pair in ties:
            if pair != best:
                heapq.heappush(self.heap, (top[0], top[1], pair))
        return best

    def apply(self, pair: tuple[int, int], new_id: int) -> None:
        """Merge `pair` in every chunk holding it and update the counts of the pairs that changed."""
        changed: set[tuple[int, int]] = set()
        for j in self.where.pop(pair):
            old = self.words[j]
            new = self.words[j] = merge(old, pair, new_id)
            delta = Counter(zip(new, new[1:]))
            delta.subtract(Counter(zip(old, old[1:])))
            for p, d in delta.items():
                if d:
                    self.count[p] = self.count.get(p, 0) + d * self.freq[j]
                    changed.add(p)
            for p in set(zip(old, old[1:])) - set(zip(new, new[1:])):
                if p in self.where:                   # `pair` itself was popped above
                    self.where[p].discard(j)
                    if self.first[p] == j:
                        self.moved.add(p)
            for p in zip(new, new[1:]):               # only pairs with new_id are new to chunk j
                self.where.setdefault(p, set()).add(j)
                self.first[p] = min(self.first.get(p, j), j)
        self.count.pop(pair, None)
        for p in changed:
            if self.count.get(p):
                heapq.heappush(self.heap, (-self.count[p], self.first[p], p))
            else:
                self.count.pop(p, None)
                self.where.pop(p, None)
                self.first.pop(p, None)
                self.moved.discard(p)


def train(text: str, n_merges: int) -> list[tuple[int, int]]:
    """The merges of `train_reference`, with incremental pair counts instead of a recount per merge.

    Identical chunks are counted once with their frequency; a merge touches only the chunks that hold its pair
    (the same bookkeeping as HF's BpeTrainer and Sennrich's `learn_bpe.py` index)."""
    index = _PairIndex(text)
    merges: list[tuple[int, int]] = []
    for k in range(n_merges):
        best = index.pop_best()
        if best is None:
            raise TooFewPairs(n_merges, k)
        merges.append(best)
        index.apply(best, 256 + k)
    return merges


def _alternation(words) -> regex.Pattern:
    """A pattern whose `split` keeps the matches of `words` (longest first, so no prefix hides a longer one)."""
    return regex.compile("(" + "|".join(map(regex.escape, sorted(words, key=len, reverse=True))) + ")")


def _utf8(piece: str) -> bytes:
    try:
        return piece.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError as e:
        raise UserError(f"text is not valid Unicode: lone surrogate {piece[e.start]!r} cannot be UTF-8 encoded") from None


def encode_chunk(data: bytes, ranks: dict[tuple[int, int], int]) -> list[int]:
    """Apply the merges to one chunk: while some neighbouring pair is a merge, merge the lowest-ranked one
    (every occurrence, left to right). `ranks[pair]` is the id the merge makes (256 + its rank)."""
    ids = list(data)
    while len(ids) > 1:
        pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, 1 << 62))   # first of the lowest rank
        if pair not in ranks:
            break
        ids = merge(ids, pair, ranks[pair])
    return ids


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte (openai/gpt-2 `src/encoder.py`; HF's ByteLevel uses the
    same): printable Latin-1 bytes stand for themselves, the other 68 become U+0100.. in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    table = {b: chr(b) for b in keep} | {b: chr(256 + n) for n, b in enumerate(extra)}
    return dict(sorted(table.items()))


B2U = bytes_to_unicode()
U2B = {c: b for b, c in B2U.items()}
HF_PRE = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


class BytePairEncoding:
    """Merges and special tokens as an encoder / decoder: ids 0..255 bytes, 256 + k merge k, then the specials."""

    def __init__(self, merges: list[tuple[int, int]], specials: tuple[str, ...] = ()):
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.vocab = [bytes([b]) for b in range(256)]
        for k, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                raise UserError(f"BPE merge {k} ({a}, {b}) uses a token that does not exist yet")
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.ranks = {pair: 256 + k for k, pair in enumerate(self.merges)}
        if len(set(specials)) != len(specials) or not all(specials):
            raise UserError(f"special tokens must be distinct and non-empty, got {list(specials)}")
        self.specials = {s: len(self.vocab) + i for i, s in enumerate(specials)}
        self.vocab_size = len(self.vocab) + len(self.specials)
        self._special_split = _alternation(specials) if specials else None
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(cls, text: str, vocab_size: int, specials: tuple[str, ...] = (), *, fast: bool = True):
        """`vocab_size` counts the 256 bytes, the merges and the specials."""
        floor = 256 + len(specials)
        if vocab_size < floor:
            raise UserError(f"BPE vocabulary size must be >= {floor} (256 bytes + {len(specials)} special tokens), "
                            f"got {vocab_size}")
        if not text:
            raise UserError("cannot train a BPE tokenizer on an empty text")
        try:
            return cls((train if fast else train_reference)(text, vocab_size - floor), specials)
        except TooFewPairs as e:
            raise TooFewPairs(e.n_merges, e.done, floor) from None

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of `text`, chunk by chunk; special-token spellings in it are plain text."""
        out: list[int] = []
        cache, ranks = self._cache, self.ranks
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        for piece in _SPLIT.findall(text):
            ids = cache.get(piece)
            if ids is None:
                ids = cache[piece] = encode_chunk(_utf8(piece), ranks)
            out += ids
        return out

    def encode_bytes(self, data: bytes) -> list[int]:
        """Ids of any byte string: bytes that are not UTF-8 ride through the split as U+DC80..U+DCFF (Python's
        surrogateescape) and come back as themselves, so `decode_bytes(encode_bytes(b)) == b`."""
        return self.encode_ordinary(data.decode("utf-8", errors="surrogateescape"))

    def encode(self, text: str, allowed_special: str | set[str] | tuple[str, ...] = ()) -> list[int]:
        """Like tiktoken's `encode`: the specials in `allowed_special` ("all" for every one) become their ids, any
        other special-token spelling is encoded as text."""
        allowed = set(self.specials) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.specials)
        if unknown:
            raise UserError(f"{sorted(unknown)[0]!r} is not a special token of this tokenizer")
        if not allowed:
            return self.encode_ordinary(text)
        split = self._special_split if allowed == set(self.specials) else _alternation(allowed)
        out: list[int] = []
        for i, part in enumerate(split.split(text)):   # odd parts are the allowed specials
            if i % 2:
                out.append(self.specials[part])
            elif part:
                out += self.encode_ordinary(part)
        return out

    def decode_bytes(self, ids: list[int]) -> bytes:
        """The bytes of `ids`; a special id gives its spelling."""
        names = {i: s.encode("utf-8") for s, i in self.specials.items()}
        try:
            return b"".join(self.vocab[i] if 0 <= i < len(self.vocab) else names[i] for i in ids)
        except KeyError as e:
            raise UserError(f"token id {e.args[0]} is outside the vocabulary 0..{self.vocab_size - 1}") from None

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def to_hf_json(self) -> str:
        """The tokenizer in HF `tokenizers`' tokenizer.json layout (a BPE model with a ByteLevel pre-tokenizer and
        decoder, specials as added tokens), which `tokenizers.Tokenizer.from_file` reads."""
        text = ["".join(B2U[b] for b in token) for token in self.vocab]
        if len(set(text)) < len(text):
            dup = next(i for i, t in enumerate(text) if text.index(t) != i)
            raise UserError(f"token {dup} has the same bytes as token {text.index(text[dup])}: tokenizer.json maps each "
                            f"string to one id, so this vocabulary cannot be saved in that format")
        added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
                  "special": True} for s, i in self.specials.items()]
        model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                 "vocab": {t: i for i, t in enumerate(text)}, "merges": [f"{text[a]} {text[b]}" for a, b in self.merges]}
        spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
                "pre_tokenizer": HF_PRE, "post_processor": None, "decoder": {**HF_PRE, "add_prefix_space": True},
                "model": model}
        return json.dumps(spec, indent=2, ensure_ascii=False)

    @classmethod
    def from_hf_json(cls, spec: dict) -> "BytePairEncoding | None":
        """The tokenizer a `to_hf_json` file holds; None for a tokenizer.json of another layout (HF-trained ids)."""
        model = spec.get("model")
        if not isinstance(model, dict) or model.get("type") != "BPE" or spec.get("pre_tokenizer") != HF_PRE \
                or model.get("ignore_merges") or spec.get("normalizer") is not None:
            return None
        vocab = model.get("vocab", {})
        if any(vocab.get(c) != b for b, c in B2U.items()):
            return None
        merges = []
        for k, m in enumerate(model.get("merges", [])):
            a, b = m.split(" ") if isinstance(m, str) else m
            if vocab.get(a + b) != 256 + k or a not in vocab or b not in vocab:
                return None
            merges.append((vocab[a], vocab[b]))
        added = sorted(spec.get("added_tokens", []), key=lambda t: t["id"])
        if [t["id"] for t in added] != list(range(256 + len(merges), 256 + len(merges) + len(added))):
            return None
        return cls(merges, tuple(t["content"] for t in added))
