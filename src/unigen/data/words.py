"""Word-level corpora for word2vec: a stream of word ids cut into fixed chunks, with the counts word2vec needs.

Corpora (`data.corpus`), all read from disk with no network:

    enwiki   206 pages of English Wikipedia (a 2016 dump excerpt, ~6 MB of wikitext; redirects skipped) that
             ship in gensim's wheel as test data, cleaned as text8 was (Matt Mahoney's `wikifil.pl`): visible text
             only, lower case, digits spelt out, everything that is not a letter a space. About 0.5M words.
    stdlib   the English of Python's `pydoc_data.topics` (~64k words): tiny, for smoke tests.
    (file)   `data.path`: any UTF-8 text, lower-cased, split into runs of letters.

The vocabulary is built as word2vec.c's `LearnVocabFromTrainFile` + `SortVocab`: words seen fewer than `min_count`
times are dropped (from the stream too: word2vec.c skips them when it reads a sentence), the rest sorted by count,
most frequent first (ties by first appearance). The id stream is cut into chunks of `chunk` words, padded with -1
(word2vec.c reads "sentences" of at most 1000 words). word2vec is trained and judged on the whole corpus (its tests
are analogy and similarity question sets, not held-out text), so `train` and `test` hold the same chunks.

The question sets come from the same gensim wheel: `questions-words.txt` (Mikolov et al. 2013, 19,544 analogies)
and `wordsim353.tsv` (Finkelstein et al. 2002). gensim is never imported: we find its folder and read the files.
"""
from __future__ import annotations

import bz2
import hashlib
import importlib.util
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from unigen.data import options
from unigen.data.dataset import Dataset, cached, check_split
from unigen.data.text import read_text_file, stdlib_corpus
from unigen.errors import UserError

CORPORA = ("enwiki", "stdlib")
ENWIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass
class WordsData:
    """`data.*` options of the word-level corpus."""

    name: str = "words"
    corpus: str = "enwiki"      # enwiki | stdlib (ignored when `path` is set)
    path: str = ""              # a UTF-8 text file to use instead
    min_count: int = 5          # words seen fewer times are dropped (word2vec.c -min-count)
    chunk: int = 1000           # words per training item (word2vec.c MAX_SENTENCE_LENGTH)

    def check(self) -> None:
        options.one_of("data.corpus", self.corpus, CORPORA)
        options.positive("data.min_count", self.min_count)
        options.positive("data.chunk", self.chunk)


def gensim_test_data() -> Path:
    """The `gensim/test/test_data` folder of the installed gensim wheel, found without importing gensim."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the enwiki corpus and the word2vec question sets ship in the 'gensim' wheel: "
                        "run `pip install gensim==4.4.0` (it is never imported)")
    return Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"


def gensim_file(name: str) -> Path:
    p = gensim_test_data() / name
    if not p.is_file():
        raise UserError(f"{p} is missing: reinstall gensim==4.4.0")
    return p


def wikifil(wikitext: str) -> str:
    """One article's wikitext -> text8-style text, following `wikifil.pl` (Mahoney, the cleaner of text8).

    One difference: templates `{{...}}` nested in templates are removed from the inside out until none is left
    (wikifil.pl's single pass, per '>'-ended record, leaves pieces of nested ones behind)."""
    t = re.sub(r"<ref[^<]*</ref>", "", wikitext)          # references
    t = re.sub(r"<[^>]*>", "", t)                          # xhtml tags
    t = re.sub(r"\[http:[^\] ]*", "[", t)                 # urls, keeping the visible text
    t = re.sub(r"\|(thumb|left|right|\d+px)", "", t, flags=re.I)
    t = re.sub(r"\[\[image:[^\[\]]*\|", "", t, flags=re.I)
    t = re.sub(r"\[\[category:([^|\]]*)[^\]]*\]\]", r"[[\1]]", t, flags=re.I)
    t = re.sub(r"\[\[[a-z\-]*:[^\]]*\]\]", "", t)         # links to other languages
    t = re.sub(r"\[\[[^|\]]*\|", "[[", t)                 # link targets, keeping the visible text
    while True:                                            # templates and tables, innermost first
        t, n = re.subn(r"\{[^{}]*\}", "", t)
        if not n:
            break
    t = t.replace("[", "").replace("]", "")
    t = re.sub(r"&[^;]*;", " ", t)                         # remaining entities
    t = t.lower()
    for d, word in enumerate(DIGITS):
        t = t.replace(str(d), f" {word} ")
    return re.sub(r"[^a-z]+", " ", t).strip()


def enwiki_corpus() -> str:
    """The cleaned text of the enwiki excerpt: articles in file order, redirects skipped."""
    path = gensim_file(ENWIKI_FILE)
    parts = []
    try:
        with bz2.open(path) as f:
            for _, el in ET.iterparse(f):
                if el.tag.endswith("}text") or el.tag == "text":
                    text = el.text or ""
                    if not re.match(r"\s*#redirect", text, flags=re.I):
                        parts.append(wikifil(text))
                    el.clear()
    except (OSError, EOFError, ET.ParseError) as e:
        raise UserError(f"{path} is not a readable bz2 XML dump ({e}): reinstall gensim==4.4.0") from None
    return " ".join(p for p in parts if p)


def words_of(text: str) -> list[str]:
    """Lower-cased runs of letters (any script): the words of a user's text file."""
    return re.findall(r"[^\W\d_]+", text.lower())


def build_vocab(words: list[str], min_count: int) -> tuple[list[str], list[int]]:
    """(vocabulary, counts), most frequent first (ties in order of first appearance), counts >= min_count."""
    counts = Counter(words)                    # insertion order = first appearance; sorted() is stable
    kept = sorted(((w, c) for w, c in counts.items() if c >= min_count), key=lambda wc: -wc[1])
    return [w for w, _ in kept], [c for _, c in kept]


def _corpus_words(cfg: WordsData) -> tuple[str, list[str]]:
    if cfg.path:
        p = Path(cfg.path).expanduser()
        return str(p), words_of(read_text_file(p))
    if cfg.corpus == "stdlib":
        return "pydoc_data.topics", words_of(stdlib_corpus())
    return "enwiki (gensim test data)", enwiki_corpus().split()


def _encode(words: list[str], min_count: int, chunk: int) -> tuple[list[str], list[int], torch.Tensor]:
    vocab, counts = build_vocab(words, min_count)
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.tensor([index[w] for w in words if w in index], dtype=torch.long)
    n = -(-ids.numel() // chunk)
    chunks = torch.full((n * chunk,), -1, dtype=torch.long)
    chunks[: ids.numel()] = ids
    return vocab, counts, chunks.view(n, chunk)                              # (N, chunk), -1 = padding


def load_words(cfg: WordsData, split: str) -> Dataset:
    """`{"ids": (N, chunk) long}` word ids (-1 pads the last chunk); `info` holds the vocabulary and its counts."""
    check_split(split)
    cfg.check()
    source, words = _corpus_words(cfg)
    digest = hashlib.sha256(" ".join(words).encode()).hexdigest()
    vocab, counts, chunks = cached(("words", digest, cfg.min_count, cfg.chunk),
                                   lambda: _encode(words, cfg.min_count, cfg.chunk))
    if len(vocab) < 2:
        raise UserError(f"corpus {source} has {len(vocab)} word(s) seen >= data.min_count={cfg.min_count} times; "
                        "word2vec needs at least 2 (lower data.min_count or use a larger text)")
    info = {"name": "words", "split": split, "source": source, "vocab_size": len(vocab),
            "train_words": int(sum(counts)), "corpus_words": len(words), "chunk": cfg.chunk,
            "vocab": list(vocab), "counts": list(counts)}
    return Dataset({"ids": chunks.clone()}, info)


def analogy_questions(path: str | Path = "") -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """Sections of an analogy file in word2vec's `questions-words.txt` format (': section', then 'a b c d' lines),
    lower-cased; the default is the file in gensim's wheel (Mikolov et al. 2013a)."""
    p = Path(path) if path else gensim_file("questions-words.txt")
    sections: list[tuple[str, list]] = []
    for n, line in enumerate(read_text_file(p).splitlines(), 1):
        if line.startswith(":"):
            sections.append((line[1:].strip(), []))
        elif line.strip():
            q = line.lower().split()
            if len(q) != 4 or not sections:
                raise UserError(f"{p}:{n}: expected ': section' or four words, got {line.strip()!r}")
            sections[-1][1].append(tuple(q))
    return sections


def similarity_pairs(path: str | Path = "") -> list[tuple[str, str, float]]:
    """(word1, word2, human score) rows of a tab-separated similarity file ('#' comments); default wordsim353.tsv."""
    p = Path(path) if path else gensim_file("wordsim353.tsv")
    rows = []
    for n, line in enumerate(read_text_file(p).splitlines(), 1):
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split("\t")
        try:
            rows.append((parts[0].lower(), parts[1].lower(), float(parts[2])))
        except (IndexError, ValueError):
            raise UserError(f"{p}:{n}: expected 'word1<TAB>word2<TAB>score', got {line.strip()!r}") from None
    return rows
