"""metrics/words.py: the demo's real-word fraction, checked by hand on small texts."""
import pytest

from unigen.errors import UserError
from unigen.metrics.words import real_word_fraction, vocabulary, words


def test_words_are_letter_runs_of_three_or_more_lower_cased():
    assert words("The cat's tol0plfoc, a dog-house; IS x") == ["the", "cat", "tol", "plfoc", "dog", "house"]
    assert words("ab abc", min_letters=2) == ["ab", "abc"]
    with pytest.raises(UserError):
        words("abc", min_letters=0)


def test_fraction_by_hand():
    vocab = vocabulary("The class statement defines a class. Return the value.")
    assert vocab == {"the", "class", "statement", "defines", "return", "value"}
    got = real_word_fraction(["the Class Assemdiin", "statementin value"], vocab)
    # words: the, class, assemdiin, statementin, value -> 3 of 5 real (a glued word is not a word)
    assert got == {"real_word_fraction": pytest.approx(3 / 5), "words": 5}


def test_text_without_words_has_none():
    assert real_word_fraction(["   ", "1 2 ,."], {"the"}) == {"real_word_fraction": 0.0, "words": 0}


def test_corpus_text_is_all_real_but_a_cut_word_is_not():
    corpus = "for each item in the list the loop runs its body once"
    vocab = vocabulary(corpus)
    assert real_word_fraction([corpus], vocab)["real_word_fraction"] == 1.0
    assert real_word_fraction([corpus[5:14]], vocab) == {"real_word_fraction": 0.5, "words": 2}   # "ach item"
