"""Our byte-level BPE (`unigen.data.bpe`) against independent references: minbpe's published test vector,
tiktoken's pure-Python trainer (`tiktoken._educational.bpe_train`) and Rust encoder, HF `tokenizers` reading our
tokenizer.json, the readable trainer against the fast one, and round trips on arbitrary text and bytes."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unigen.cli import main
from unigen.data import bpe
from unigen.data import TextData, load
from unigen.data.text import stdlib_corpus
from unigen.data.tokenizer import SPECIAL_TOKENS, BPETokenizer, OwnBPETokenizer, load_tokenizer
from unigen.errors import UserError

CORPUS = stdlib_corpus()
ODD_SPACE = " \t\n\r\u00a0\u2028\u3000\u200bab1'sé.,"   # whitespace that is not ASCII, digits, contractions


@pytest.fixture(scope="module")
def big():
    """1000 merges on the whole bundled corpus (about a second), with the three special tokens."""
    return bpe.BytePairEncoding(bpe.train(CORPUS, 1000), SPECIAL_TOKENS)


def test_minbpe_vector():
    """karpathy/minbpe tests/test_tokenizer.py: "aaabdaaabac" with 3 merges encodes to [258, 100, 258, 97, 99]."""
    for trainer in (bpe.train_reference, bpe.train):
        merges = trainer("aaabdaaabac", 3)
        assert merges == [(97, 97), (256, 97), (257, 98)]
        assert bpe.BytePairEncoding(merges).encode("aaabdaaabac") == [258, 100, 258, 97, 99]


def test_fast_trainer_gives_the_readable_trainers_merges():
    text = CORPUS[200_000:220_000]
    assert bpe.train(text, 120) == bpe.train_reference(text, 120)
    text = CORPUS[:3_000]                 # down to pairs seen once or twice, where nearly every merge is a tie
    assert bpe.train(text, 400) == bpe.train_reference(text, 400)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab ", max_size=60), st.integers(1, 12))
def test_fast_trainer_equals_readable_on_tie_heavy_texts(text, n):
    """Two letters and a space: nearly every merge is a tie, which the first-seen rule must settle the same way."""
    try:
        want = bpe.train_reference(text, n)
    except bpe.TooFewPairs as e:
        with pytest.raises(bpe.TooFewPairs, match=f"only {e.done} merges"):
            bpe.train(text, n)
        return
    assert bpe.train(text, n) == want


def test_merges_and_encodings_equal_tiktoken_educational():
    edu = pytest.importorskip("tiktoken._educational")
    text, n = CORPUS[:12_000], 80
    ranks = edu.bpe_train(text, 256 + n, bpe.GPT2_SPLIT, visualise=None)   # token bytes -> rank, first-seen ties
    ours = bpe.BytePairEncoding(bpe.train(text, n))
    assert {token: i for i, token in enumerate(ours.vocab)} == ranks
    ref = edu.SimpleBytePairEncoding(pat_str=bpe.GPT2_SPLIT, mergeable_ranks=ranks)
    held_out = CORPUS[300_000:304_000]
    assert ours.encode(held_out) == ref.encode(held_out, visualise=None)


def test_encoding_equals_tiktoken_on_the_whole_corpus(big):
    tiktoken = pytest.importorskip("tiktoken")
    ref = tiktoken.Encoding("ours", pat_str=bpe.GPT2_SPLIT, special_tokens=big.specials,
                            mergeable_ranks={token: i for i, token in enumerate(big.vocab)})
    assert big.encode(CORPUS) == ref.encode_ordinary(CORPUS)
    text = "a<|eos|>b <|bos|><|pad|>"
    assert big.encode(text, "all") == ref.encode(text, allowed_special="all")
    assert big.encode(text, {"<|eos|>"}) == ref.encode(text, allowed_special={"<|eos|>"}, disallowed_special=())


def test_hf_tokenizers_reads_our_file_and_gives_the_same_ids(big, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    path = tmp_path / "tokenizer.json"
    path.write_text(big.to_hf_json(), encoding="utf-8")
    hf = tokenizers.Tokenizer.from_file(str(path))
    assert hf.get_vocab_size(with_added_tokens=True) == big.vocab_size == 256 + 1000 + 3
    assert hf.encode(CORPUS, add_special_tokens=False).ids == big.encode(CORPUS)
    text = "x <|eos|>y<|bos|>"
    assert hf.encode(text, add_special_tokens=False).ids == big.encode(text, "all")   # HF splits specials off
    hf.encode_special_tokens = True
    assert hf.encode(text, add_special_tokens=False).ids == big.encode(text)            # ... unless told not to
    assert hf.decode(big.encode(CORPUS[:5000])) == CORPUS[:5000]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.text(alphabet=ODD_SPACE, max_size=30))
def test_tiktoken_and_hf_agree_on_arbitrary_text(big_hf_tk, text):
    ours, hf, tk = big_hf_tk
    ids = ours.encode(text)
    assert tk.encode_ordinary(text) == ids
    assert hf.encode(text, add_special_tokens=False).ids == ids


@pytest.fixture(scope="module")
def big_hf_tk(big):
    tokenizers, tiktoken = pytest.importorskip("tokenizers"), pytest.importorskip("tiktoken")
    tk = tiktoken.Encoding("ours", pat_str=bpe.GPT2_SPLIT, special_tokens={},
                           mergeable_ranks={token: i for i, token in enumerate(big.vocab)})
    return big, tokenizers.Tokenizer.from_str(big.to_hf_json()), tk


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8")) | st.text(alphabet=ODD_SPACE))
def test_round_trip_on_any_unicode(big, text):
    ids = big.encode(text)
    assert big.decode(ids) == text and all(0 <= i < 1256 for i in ids)


@settings(max_examples=300, deadline=None)
@given(st.binary())
def test_round_trip_on_any_bytes(big, data):
    assert big.decode_bytes(big.encode_bytes(data)) == data


def test_chunks_are_gpt2_pieces_and_merges_never_cross_them(big):
    assert bpe.chunks("Hello world's 123  end!!\n") == ["Hello", " world", "'s", " 123", " ", " end", "!!", "\n"]
    with pytest.raises(bpe.TooFewPairs, match="only 0 merges"):
        bpe.train("a.b,c;" * 50, 1)          # the frequent pairs (a, .) etc. all cross chunks
    pieces = {c.encode("utf-8") for c in bpe.chunks(CORPUS)}
    assert all(any(token in p for p in pieces) for token in big.vocab[256:])


def test_hf_breaks_ties_by_smallest_pair_ids_not_first_seen():
    """"ba ab": pairs (b,a), (' ',a), (a,b) once each. First seen wins for us and tiktoken: "ba". HF's BpeTrainer
    takes the smallest pair in its ids (alphabet in character order): (a, b)."""
    tokenizers = pytest.importorskip("tokenizers")
    assert bpe.train("ba ab", 1) == [(ord("b"), ord("a"))]
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=257, show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["ba ab"], trainer)
    assert json.loads(tok.to_str())["model"]["merges"][0] in (["a", "b"], "a b")


def test_tokenizer_saves_loads_and_reads_old_hf_files(tmp_path):
    tok = OwnBPETokenizer.train(CORPUS[:50_000], 400)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (397, 398, 399, 400)
    back = load_tokenizer(tok.save(tmp_path / "ours"))
    assert isinstance(back, OwnBPETokenizer) and back.bpe.merges == tok.bpe.merges
    hf_kind = load_tokenizer(BPETokenizer.train(CORPUS[:50_000], 300).save(tmp_path / "hf"))
    assert isinstance(hf_kind, BPETokenizer)   # an HF-trained file keeps loading as the HF kind
    text = "x = 1 <|eos|> stays text"
    assert tok.eos_id not in tok.encode(text) and tok.decode(tok.encode(text)) == text
    assert tok.decode([tok.bos_id, *tok.encode("hi"), tok.eos_id, tok.pad_id]) == "hi"


def test_corrupt_tokenizer_file_is_a_one_line_error(tmp_path):
    spec = json.loads(OwnBPETokenizer.train(CORPUS[:20_000], 300).bpe.to_hf_json())
    spec["model"]["merges"] = [["Ġ", "Ġ", "Ġ"]]          # a merge of three strings
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(UserError, match="tokenizer file .* is corrupt"):
        load_tokenizer(tmp_path)


def test_text_dataset_with_our_bpe():
    tr = load(TextData(tokenizer="unigen-bpe", vocab_size=400, seq_len=32), "train")
    tok = tr.tokenizer
    assert isinstance(tok, OwnBPETokenizer) and tr.info["vocab_size"] == 400 and tr.info["tokenizer"] == "unigen-bpe"
    ids = tok.encode(CORPUS)
    assert tok.decode(ids) == CORPUS and len(ids) < 0.7 * len(CORPUS.encode())
    assert torch.equal(tr.tensors["ids"].flatten(), torch.tensor(ids[: len(tr) * 32]))


@pytest.mark.parametrize("text, vocab, match", [
    ("abc abc", 255, "must be >= 259"),
    ("ab ab", 262, "allows only 2 merges, not 3 .* at most 261"),
    ("", 300, "empty text"),
])
def test_bad_training_input(text, vocab, match):
    with pytest.raises(UserError, match=match):
        bpe.BytePairEncoding.train(text, vocab, SPECIAL_TOKENS)


def test_bad_encoding_input(big):
    with pytest.raises(UserError, match="lone surrogate"):
        big.encode("a\ud800b")
    with pytest.raises(UserError, match="not a special token"):
        big.encode("x", {"<|unk|>"})
    with pytest.raises(UserError, match="outside the vocabulary"):
        big.decode([big.vocab_size])


def test_cli_train_encode_and_bad_input(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS[:20_000], encoding="utf-8")
    assert main_code("tokenizer", "train", str(corpus), "--vocab-size", "300", "--out", str(tmp_path / "t")) == 0
    capsys.readouterr()
    assert main_code("tokenizer", "encode", str(tmp_path / "t"), "Return the value") == 0
    want = OwnBPETokenizer.train(CORPUS[:20_000], 300).encode("Return the value")
    assert json.loads(capsys.readouterr().out) == want
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    for args, msg in [((str(corpus), "--vocab-size", "200"), ">= 260"),
                      ((str(corpus), "--vocab-size", "100000"), "allows only"),
                      ((str(tmp_path / "empty.txt"), "--vocab-size", "300"), "is empty"),
                      ((str(tmp_path / "latin1.txt"), "--vocab-size", "300"), "not valid UTF-8")]:
        assert main_code("tokenizer", "train", *args, "--out", str(tmp_path / "x")) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1


def main_code(*argv: str) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    return e.value.code


def test_text_model_trains_on_our_bpe_from_the_cli(tmp_path, capsys):
    """`--data.tokenizer=unigen-bpe` trains a text LM; its run directory holds our tokenizer.json, which
    `unigen tokenizer encode RUN` and `unigen sample` read back."""
    run = tmp_path / "run"
    assert main_code("train", "text-ar", "--out", str(run), "--train.steps=2", "--train.batch_size=4",
                     "--train.progress=false", "--data.tokenizer=unigen-bpe", "--data.vocab_size=300",
                     "--data.seq_len=32") == 0
    capsys.readouterr()
    assert main_code("tokenizer", "encode", str(run), "Return the value") == 0
    want = OwnBPETokenizer.train(CORPUS, 300).encode("Return the value")
    assert json.loads(capsys.readouterr().out) == want and len(want) < len("Return the value")
    assert main_code("sample", str(run), "--n", "2", "--seed", "1") == 0
