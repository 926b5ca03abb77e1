"""Generative perplexity (genppl.py, `unigen eval RUN --gen-ppl --judge JUDGE_RUN`): the metric against a
prefix-by-prefix brute force, the judge's own held-out text scoring its evaluation perplexity, the unigram entropy
against hand-computed values, and bad judges refused with one line and exit 2."""
import json
import math

import pytest
import torch

from unigen.cli import main
from unigen.config import apply_overrides
from unigen.data import load as load_data
from unigen.errors import UserError
from unigen.families.discrete_diffusion.genppl import generative_perplexity, unigram_entropy
from unigen.models.text import TextTransformer, text_config
from unigen.registry import get_preset
from unigen.run import evaluate, load, train

TINY = ["model.size=tiny", "data.seq_len=32", "train.steps=2", "train.batch_size=4", "train.progress=false",
        "train.log_every=1"]


def tiny(preset: str, *extra: str):
    return apply_overrides(get_preset(preset), TINY + list(extra))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("genppl")
    for name in ("text-ar-judge", "text-mdlm"):
        train(tiny(name), root / name)
    return root


def test_unigram_entropy_by_hand():
    ids = torch.tensor([[3, 3, 3, 3], [0, 1, 0, 1], [0, 1, 2, 3]])
    got = unigram_entropy(ids)
    assert torch.allclose(got, torch.tensor([0.0, math.log(2), math.log(4)], dtype=torch.float64))
    p = torch.tensor([3 / 6, 2 / 6, 1 / 6], dtype=torch.float64)  # [5, 5, 5, 7, 7, 9]
    assert float(unigram_entropy(torch.tensor([[5, 7, 5, 9, 7, 5]]))) == pytest.approx(float(-(p * p.log()).sum()))


def test_generative_perplexity_equals_a_prefix_by_prefix_brute_force():
    torch.manual_seed(0)
    V, bos, mask = 11, 0, 10
    net = TextTransformer(text_config("tiny", V, causal=True)).double().eval()
    ids = torch.randint(1, mask, (3, 7))  # (B, L)
    got = generative_perplexity(net, ids, bos_id=bos, mask_id=mask, batch_size=2)
    nats = tail = 0.0  # tail: the tokens after a prompt of 3
    for row in ids.tolist():
        ctx = [bos]
        for i, tok in enumerate(row):  # p(tok | BOS, earlier tokens) from a fresh forward of the prefix alone
            logits = net(torch.tensor([ctx]))[0, -1].clone()
            logits[mask] = float("-inf")
            nats -= float(torch.log_softmax(logits.detach(), -1)[tok])
            tail -= float(torch.log_softmax(logits.detach(), -1)[tok]) if i >= 3 else 0.0
            ctx.append(tok)
    assert got["gen_nats_per_token"] == pytest.approx(nats / ids.numel(), rel=1e-10)
    assert got["gen_ppl"] == pytest.approx(math.exp(nats / ids.numel()), rel=1e-10)
    assert got["tokens"] == 21 and got["entropy"] == pytest.approx(float(unigram_entropy(ids).mean()))
    cond = generative_perplexity(net, ids, bos_id=bos, mask_id=mask, prompt_len=3)  # continuations of 3-token prompts
    assert cond["gen_nats_per_token"] == pytest.approx(tail / 12, rel=1e-10) and cond["tokens"] == 12
    assert cond["entropy"] == pytest.approx(float(unigram_entropy(ids[:, 3:]).mean()))
    for bad in (-1, 7):
        with pytest.raises(UserError, match="prompt_len"):
            generative_perplexity(net, ids, bos_id=bos, mask_id=mask, prompt_len=bad)
    with pytest.raises(UserError, match="mask id"):
        generative_perplexity(net, ids.index_fill(1, torch.tensor([2]), mask), bos_id=bos, mask_id=mask)


def test_judge_held_out_text_scores_its_eval_perplexity(runs):
    judge = runs / "text-ar-judge"
    ev = evaluate(judge)  # exact NLL of every test window
    lm = load(judge)
    test = load_data(tiny("text-ar-judge").data, "test")
    ids = test.batch(torch.arange(len(test)))["ids"]
    got = generative_perplexity(lm, ids, bos_id=lm.bos_id, mask_id=lm.mask_id)
    assert ev["tokens"] == ids.numel()
    assert got["gen_ppl"] == pytest.approx(ev["ppl"], rel=1e-12)  # both sum float64 token terms


def test_cli_gen_ppl_json(runs, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", str(runs / "text-mdlm"), "--gen-ppl", "--judge", str(runs / "text-ar-judge"), "--n", "3",
              "--samplers", "mdlm", "--budgets", "8", "--json"])
    assert e.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sampler"] == "mdlm" and out["steps"] == 8 and out["n"] == 3 and out["tokens"] == 3 * 32
    assert 1 <= out["nfe"] <= 8 and out["gen_ppl"] == pytest.approx(math.exp(out["gen_nats_per_token"]))
    assert 0 < out["entropy"] <= math.log(32)


def test_bad_judges_exit_2(runs, tmp_path, exit_line):
    text = tmp_path / "corpus.txt"
    text.write_text("the judge reads another tokenizer of this little text. " * 200)
    other = tmp_path / "bpe-judge"
    train(tiny("text-ar-judge", f"data.path={text}", "data.tokenizer=bpe", "data.vocab_size=300"), other)
    run = str(runs / "text-mdlm")
    assert "another tokenizer" in exit_line(["eval", run, "--gen-ppl", "--judge", str(other)])
    assert "autoregressive judge" in exit_line(["eval", run, "--gen-ppl", "--judge", run])
    assert "needs --judge" in exit_line(["eval", run, "--gen-ppl"])
    assert "does not exist" in exit_line(["eval", run, "--gen-ppl", "--judge", str(tmp_path / "nope")])
    assert "one sampler" in exit_line(["eval", run, "--gen-ppl", "--judge", str(runs / "text-ar-judge"),
                                       "--samplers", "mdlm,llada"])
