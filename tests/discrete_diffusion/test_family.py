"""The discrete LM family: presets build and train through `unigen.run`, sampling keeps the prompt, the held-out
bounds of a network that predicts uniformly equal their analytic value, the AR likelihood matches a token-by-token
brute force, and `--watch` renders without a terminal."""
import io
import json
import math
from pathlib import Path

import pytest
import torch

from unigen.cli import main
from unigen.config import apply_overrides
from unigen.data import load as load_data
from unigen.data import load_tokenizer
from unigen.families.discrete_diffusion import evaluate as E
from unigen.families.discrete_diffusion import network as NW
from unigen.families.discrete_diffusion import presets as P
from unigen.families.discrete_diffusion import task as F
from unigen.families.discrete_diffusion.masked import subs_log_probs
from unigen.families.discrete_diffusion.sedd import subs_to_log_score
from unigen.families.discrete_diffusion.watch import MASK_GLYPH, Watch, render, screen_lines
from unigen.errors import UserError
from unigen.registry import PRESETS, TASKS, get_preset
from unigen.run import evaluate, load, sample, train

TINY = ["model.size=tiny", "data.seq_len=32", "train.steps=2", "train.batch_size=4", "train.progress=false",
        "train.log_every=1"]
PROMPT = "The assert statement"


def tiny(preset: str, *extra: str):
    return apply_overrides(get_preset(preset), TINY + list(extra))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Every text preset trained 2 steps at tiny size through `unigen.run.train`."""
    root = tmp_path_factory.mktemp("lm")
    out = {}
    for name in P.PRESETS:
        train(tiny(name), root / name)
        out[name] = root / name
    return out


def test_presets_registered_with_equal_networks():
    assert F.PRESETS is P.PRESETS  # the registry reads the presets through task.py
    info = {"vocab_size": 1024, "seq_len": 128, "bos_id": 0}
    counts = {}
    for name in P.PRESETS:
        assert name in PRESETS and get_preset(name).task in TASKS
        cfg = get_preset(name)
        lm = TASKS[cfg.task].build(cfg, info)
        assert lm.net.cfg.vocab_size == 1025 and lm.mask_id == 1024  # the mask is never a tokenizer id
        assert lm.net.cfg.causal == (cfg.task == "ar")
        counts[name] = sum(p.numel() for p in lm.parameters())
    same = {counts[n] for n in ("text-ar", "text-mdlm", "text-bd3-4", "text-bd3-16")}
    assert len(same) == 1, counts  # SEDD adds only its sigma conditioning (adaLN)
    budgets = {(c.train.steps, c.train.batch_size, c.data.seq_len, c.model.size)
               for c in (get_preset(n) for n in P.PRESETS)}
    assert len(budgets) == 1, budgets


def test_block_size_must_divide_seq_len(tmp_path):
    with pytest.raises(UserError, match="block_size"):
        train(tiny("text-bd3-4", "model.block_size=5"), tmp_path / "bad")
    with pytest.raises(UserError, match="time_cond"):
        train(tiny("text-ar", "model.time_cond=true"), tmp_path / "bad2")


@pytest.mark.parametrize("name", list(P.PRESETS))
def test_train_sample_eval(runs, name, tmp_path):
    run = runs[name]
    assert (run / "model.safetensors").exists()
    tok = load_tokenizer(run)
    task = TASKS[get_preset(name).task]
    V = tok.vocab_size
    free = sample(run, n=2, steps=4, seed=1, out_dir=tmp_path / "free")
    with_prompt = sample(run, n=2, seed=1, out_dir=tmp_path / "prompt", prompt=PROMPT, length=12)
    ids = tok.encode(PROMPT)
    for s, head in ((free, []), (with_prompt, ids)):
        js = json.loads(Path(s["json"]).read_text())
        assert s["sampler"] == (get_preset(name).sample.sampler or task.samplers[0]) and s["nfe"] > 0 and s["tokens_per_s"] > 0
        for row in js["tokens"]:
            assert row[:len(head)] == head                       # the prompt is kept verbatim
            assert len(row) == len(head) + s["length"]
            assert all(0 <= i < V for i in row)                  # no mask id (or anything else) left
        assert Path(s["samples"]).read_text().count("=== sample") == 2
    assert with_prompt["length"] == 12 and all(t.startswith(PROMPT) for t in
                                               json.loads(Path(with_prompt["json"]).read_text())["texts"])
    m = evaluate(run, quick=True)
    assert math.isfinite(m["ppl"]) and m["ppl"] > 1 and m["seqs"] == 8 and m["tokens"] == 8 * 32


def test_every_sampler_runs(runs, tmp_path):
    for name in ("text-mdlm", "text-sedd"):
        for sampler in TASKS[get_preset(name).task].samplers:
            s = sample(runs[name], sampler=sampler, n=1, steps=3, out_dir=tmp_path / sampler, prompt="x = ")
            assert s["sampler"] == sampler
    llada = sample(runs["text-mdlm"], sampler="llada", n=1, steps=5, length=10, out_dir=tmp_path / "l")
    assert llada["nfe"] == 5  # LLaDA: one network call per step
    ar = sample(runs["text-ar"], n=1, length=10, out_dir=tmp_path / "a")
    assert ar["nfe"] == 10    # AR: prefill + one cached call per further token


def test_bd3_cache_matches_recompute_and_calls(runs, tmp_path):
    """The KV-cached BD3 sampler draws the same tokens as the full-recompute one (same seed) with fewer FLOPs."""
    a = sample(runs["text-bd3-4"], n=2, length=16, seed=3, out_dir=tmp_path / "c", prompt=PROMPT)
    b = sample(runs["text-bd3-4"], n=2, length=16, seed=3, out_dir=tmp_path / "r", prompt=PROMPT, use_cache=False)
    ta, tb = (json.loads(Path(s["json"]).read_text())["tokens"] for s in (a, b))
    assert ta == tb and a["nfe"] == b["nfe"]


def test_sampling_user_errors(runs, tmp_path):
    with pytest.raises(UserError, match="prompt"):
        sample(runs["text-mdlm"], n=1, prompt="word " * 200, out_dir=tmp_path / "long")   # fills seq_len
    with pytest.raises(UserError, match="guidance"):
        sample(runs["text-mdlm"], sampler="llada", n=1, guidance=2.0, out_dir=tmp_path / "g")  # needs a prompt
    with pytest.raises(UserError, match="unknown sampler"):
        sample(runs["text-ar"], sampler="llada", n=1, out_dir=tmp_path / "s")
    with pytest.raises(UserError, match="option"):
        evaluate(runs["text-ar"], nfe_sweep=True)
    with pytest.raises(UserError, match="guidance=2.0 applies to the samplers llada"):
        sample(runs["text-mdlm"], sampler="mdlm", n=1, guidance=2.0, prompt=PROMPT, out_dir=tmp_path / "g2")
    with pytest.raises(UserError, match="use_cache=False applies to the samplers bd3, bd3-fh, ar"):
        sample(runs["text-mdlm"], n=1, use_cache=False, out_dir=tmp_path / "c")
    g = sample(runs["text-mdlm"], sampler="llada", n=1, guidance=2.0, prompt=PROMPT, length=8, out_dir=tmp_path / "ok")
    assert g["nfe"] == 8


@pytest.mark.parametrize("name,extra", [(n, ()) for n in P.PRESETS] + [("text-mdlm", ("model.time_cond=true",))])
def test_uniform_network_bound_is_log_vocab(name, extra):
    """A network whose outputs are all zero predicts every real token with probability 1/V, so every bound has
    an analytic expectation: ln V per token for AR (exact), MDLM (stratified: l masked tokens weighted n / l, no
    noise at all) and BD3 (weight 1/t, mask rate t); (1 - eps) ln V for SEDD and time-conditioned MDLM (log-linear
    mask rate (1 - eps) t, weight 1/t)."""
    cfg = tiny(name, "data.tokenizer=byte", *extra)
    data = load_data(cfg.data, "train")
    lm = TASKS[cfg.task].build(cfg, data.info).eval()
    for p in lm.parameters():
        torch.nn.init.zeros_(p)
    m = TASKS[cfg.task].evaluate(lm, cfg, run_dir=Path("."), seqs=16, mc=8)
    V = data.info["vocab_size"]
    continuous = cfg.task == "sedd" or (cfg.task == "mdlm" and cfg.model.time_cond)
    want = math.log(V) * (1 - E.EVAL_EPS if continuous else 1.0)
    if cfg.task == "ar" or not (continuous or cfg.task == "bd3"):
        assert m["nats_per_token"] == pytest.approx(want, rel=1e-6) and m["mc_se"] < 1e-6
    else:
        assert m["mc_se"] > 0 and abs(m["nats_per_token"] - want) < 5 * m["mc_se"], (m, want)
    assert m["ppl"] == pytest.approx(math.exp(m["nats_per_token"]))


def test_ar_nll_matches_token_by_token(runs):
    """The AR evaluation equals -sum log p(x_i | BOS, x_<i) computed by re-running the model on every prefix."""
    lm = NW.unwrap(load(runs["text-ar"]))
    cfg = tiny("text-ar")
    x = load_data(cfg.data, "test").batch(torch.arange(2))["ids"][:, :10]  # (2, 10)
    got, _ = F.METHODS["ar"].bound(lm, x, 0, 64)
    want = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for i in range(10):
            prefix = NW.with_bos(x[:, :i], lm.bos_id)  # (2, i + 1)
            logits = lm(prefix)[:, -1].double()
            logits[:, lm.mask_id] = float("-inf")
            want -= torch.log_softmax(logits, -1).gather(1, x[:, i:i + 1]).squeeze(1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_sedd_score_of_normalised_output_is_subs_score():
    """If the network outputs log p + log(N - 1) (p normalised over the real tokens), SEDD's parameterisation gives
    exactly the absorbing concrete score of SUBS probabilities p at every masked position."""
    torch.manual_seed(0)
    V, B, L = 7, 3, 5
    logits = torch.randn(B, L, V + 1)
    x = torch.randint(0, V, (B, L))
    x[:, ::2] = V  # some masked positions
    sigma = torch.rand(B) * 3 + 0.05
    logp = subs_log_probs(logits, torch.full_like(x, V), V)  # (B, L, V+1): normalised, -inf on the mask

    class Fixed(torch.nn.Module):
        def forward(self, ids, s):
            return logp + math.log(V)  # N - 1 = V on the absorbing graph

    lm = NW.DiscreteLM(torch.nn.Linear(1, 1), "sedd", NW.DiscreteLMConfig(graph="absorb"), mask_id=V, bos_id=0)
    got = NW.sedd_log_score(Fixed(), lm, x, sigma)
    want = subs_to_log_score(logp, x, sigma, V)
    masked = x == V
    torch.testing.assert_close(got[masked], want[masked])


def test_cli_sample_with_prompt_and_watch(runs, capsys):
    run = str(runs["text-mdlm"])
    with pytest.raises(SystemExit) as e:
        main(["sample", run, "--prompt", PROMPT, "--n", "1", "--steps", "4", "--json"])
    assert e.value.code == 0
    summary = json.loads(capsys.readouterr().out)
    written = Path(summary["samples"]).read_text()
    assert written.splitlines()[1].startswith(PROMPT)
    with pytest.raises(SystemExit) as e:                   # without --json: the text itself, then how and where
        main(["sample", run, "--prompt", PROMPT, "--n", "1", "--steps", "4"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(written.rstrip("\n")) and summary["samples"] in out.splitlines()[-1]
    assert "sampler " in out.splitlines()[-1]
    with pytest.raises(SystemExit) as e:
        main(["sample", run, "--prompt", PROMPT, "--n", "1", "--steps", "4", "--watch"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out                              # not a TTY: snapshots, no cursor movement
    assert out.count("masked ---") >= 2 and MASK_GLYPH in out.split("masked ---")[1]


def test_watch_tty_redraws_in_place():
    decode = lambda ids: "".join(chr(97 + i) for i in ids)  # noqa: E731
    buf = io.StringIO()
    w = Watch(decode, mask_id=9, stream=buf, tty=True, frame_s=0.0)
    w(torch.tensor([[9, 9, 9]]))
    w(torch.tensor([[0, 9, 2]]))
    w(torch.tensor([[0, 9, 2]]))  # unchanged: not drawn again
    w(torch.tensor([[0, 1, 2]]))
    w.close()
    text = buf.getvalue()
    assert text.count("\x1b[2F\x1b[J") == 2  # two redraws, each moving up over the 2-line frame
    assert text.rstrip().endswith("abc") and len(w.states) == 3
    assert render([0, 9, 1], decode, 9, "#") == "a#b"


def test_watch_pipe_prints_few_snapshots():
    buf = io.StringIO()
    w = Watch(lambda ids: "x" * len(ids), mask_id=5, stream=buf, tty=False, snapshots=3)
    for k in range(10):
        w(torch.tensor([[0] * k + [5] * (10 - k)]))
    w.close()
    heads = [l for l in buf.getvalue().splitlines() if l.startswith("---")]
    assert len(heads) == 3 and "step 1/10: 10/10 masked" in heads[0] and "step 10/10: 1/10 masked" in heads[-1]


def test_screen_lines_brute_force():
    for text in ["", "abc", "a" * 10, "a" * 11, "ab\n\ncdefghijklmnop", "x\n"]:
        rows = 0
        for line in text.split("\n"):
            rows += max(1, -(-len(line) // 10))
        assert screen_lines(text, 10) == rows
