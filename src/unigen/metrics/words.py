"""How many of a text's words are words of a corpus: the demo's plain reading of generated text.

A word is a maximal run of ASCII letters, compared lower-cased; only words of at least `min_letters` letters
count (issue 18 counts words of three or more letters, so that "a", "is" and fragments like "th" do not decide
the number). The vocabulary is the set of such words in the corpus's *training* text, so a sample that copies
held-out words the model never saw is not credited for them. Read the fraction beside the same fraction for
held-out text of the same length (windows cut words at their edges, and the held-out split has words the
training split lacks): that is the ceiling a perfect model of the corpus would reach.
"""
from __future__ import annotations

import re
from typing import Iterable

from unigen.errors import UserError

WORD = re.compile(r"[A-Za-z]+")


def words(text: str, min_letters: int = 3) -> list[str]:
    """The lower-cased runs of ASCII letters of `text` with at least `min_letters` letters, in order."""
    if min_letters < 1:
        raise UserError(f"min_letters must be >= 1, got {min_letters}")
    return [w.lower() for w in WORD.findall(text) if len(w) >= min_letters]


def vocabulary(corpus: str, min_letters: int = 3) -> frozenset[str]:
    """The set of words (as `words` reads them) of a corpus text."""
    return frozenset(words(corpus, min_letters))


def real_word_fraction(texts: Iterable[str], vocab: frozenset[str] | set[str], min_letters: int = 3) -> dict:
    """{"real_word_fraction": share of the texts' words found in `vocab`, "words": how many words there were}.
    A text with no word at all gives fraction 0.0 with words 0 (read the count)."""
    found = [w for t in texts for w in words(t, min_letters)]
    real = sum(w in vocab for w in found)
    return {"real_word_fraction": real / len(found) if found else 0.0, "words": len(found)}
