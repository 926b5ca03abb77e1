"""The word2vec family end to end: the words dataset, training through fit and the CLI, exact resume, queries,
bad input."""
import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from unigen.cli import main
from unigen.config import apply_overrides
from unigen.data import load as load_data
from unigen.data.words import WordsData, build_vocab, wikifil
from unigen.errors import UserError
from unigen.families.word2vec.presets import PRESETS
from unigen.registry import TASKS, get_preset
from unigen.run import train

# the stdlib corpus (64k words) in small chunks, a small table: seconds on a CPU
SMALL = ["data.corpus=stdlib", "data.chunk=200", "train.batch_size=4", "train.steps=4", "train.ckpt_every=2",
         "train.progress=false", "model.table_size=10000", "model.dim=16"]


def cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code


def test_wikifil_keeps_visible_text_like_text8():
    wiki = ("'''Anarchism''' is a [[political philosophy]]<ref>Kropotkin, 1910</ref> "
            "{{Citation needed|{{date}}}} "
            "of [[Self-governance|self governed]] societies in 1848 &amp; [[fr:Anarchisme]] [[Image:A.png|thumb|A cat]]")
    assert wikifil(wiki) == ("anarchism is a political philosophy of self governed societies in one eight four eight "
                             "a cat")


def test_vocab_sorted_by_count_min_count_drops_words_from_the_stream(tmp_path):
    vocab, counts = build_vocab("b a b c a b d".split(), 2)
    assert (vocab, counts) == (["b", "a"], [3, 2])
    f = tmp_path / "t.txt"
    f.write_text("b a b c a b d " * 3, encoding="utf-8")
    ds = load_data(WordsData(path=str(f), min_count=4, chunk=4), "train")
    assert ds.info["vocab"] == ["b", "a"] and ds.info["counts"] == [9, 6]
    assert ds.tensors["ids"].tolist() == [[0, 1, 0, 1], [0, 0, 1, 0], [1, 0, 0, 1], [0, 1, 0, -1]]


def test_trains_resumes_exactly_and_answers_queries(tmp_path, capsys):
    cfg = apply_overrides(get_preset("text-word2vec"), SMALL)
    run = tmp_path / "full"
    train(cfg, run)
    a = load_file(run / "model.safetensors")
    last = sorted((run / "checkpoints").iterdir())[-1]
    assert last.name.endswith("4")
    shutil.rmtree(last)                                                       # as if killed after step 2's save
    train(cfg, run, resume=True)
    b = load_file(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["syn1neg"].abs().sum() > 0                                       # trained: output vectors left 0
    (run / "eval.json").write_text('{"kept": 1}')
    assert cli("eval", str(tmp_path / "full"), "--query", "class - method + function", "--json") == 0
    assert json.loads((run / "eval.json").read_text()) == {"kept": 1}                  # a query is not an eval
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(out["neighbours"]) == 10 and {"class", "method", "function"}.isdisjoint(w for w, _ in out["neighbours"])
    assert cli("eval", str(tmp_path / "full"), "--query", "class - zzyzx") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'zzyzx' is not in the vocabulary" in err


def test_eval_metrics_and_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli("train", "text-word2vec-cbow", "--out", str(out), *[f"--{o}" for o in SMALL]) == 0
    capsys.readouterr()
    assert cli("eval", str(out), "--json", "--full") == 0                 # the full evaluation draws the pictures
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"analogy_add", "analogy_mul", "ws353_spearman", "random_analogy_add"} <= set(m)
    assert 0 < m["analogy_coverage"] < 1 and 0 < m["ws353_coverage"] < 1
    assert (out / "embedding_pca.png").stat().st_size > 0 and json.loads((out / "neighbours.json").read_text())


@pytest.mark.parametrize("override, message", [
    ("model.arch=glove", "model.arch"), ("model.negative=0", "nothing to predict"), ("model.dim=0", "model.dim"),
    ("train.precision=bf16", "fp32"), ("data.min_count=100000", "at least 2"),
])
def test_bad_settings_are_user_errors(override, message, tmp_path):
    cfg = apply_overrides(get_preset("text-word2vec"), [*SMALL, override])
    with pytest.raises(UserError, match=message):
        train(cfg, tmp_path / "run")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_two_steps(preset, tmp_path):
    cfg = apply_overrides(get_preset(preset), [*SMALL, "train.steps=2"])
    result = train(cfg, tmp_path / "run")
    assert result.step == 2 and math.isfinite(result.loss)


def test_hierarchical_softmax_preset_builds_a_huffman_model():
    cfg = apply_overrides(get_preset("text-word2vec-hs"), SMALL)
    data = load_data(cfg.data, "train")
    m = TASKS["word2vec"].build(cfg, data.info)
    assert m.syn1neg is None and m.syn1.shape == (len(data.info["vocab"]) - 1, 16)
    loss, logs = TASKS["word2vec"].loss(m, data.batch(torch.arange(4)))
    assert torch.isfinite(loss) and logs["predictions"] > 0 and m.syn1.abs().sum() > 0
