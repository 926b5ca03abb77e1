"""The recurrent backbone of the AR text LM (text-lstm): parameter counts against text-ar, state carried between
calls equal to one long call (no length limit), causality, cached sampling equal to recomputation, the carried-state
training loss equal to the exact NLL of the concatenated stream, exact resume, and the one-line errors."""
import json
import math
import shutil

import pytest
import torch

from safetensors.torch import load_file

from unigen.cli import main
from unigen.config import apply_overrides
from unigen.data import load as load_data
from unigen.errors import UserError
from unigen.families.discrete_diffusion import network as NW
from unigen.families.discrete_diffusion.ar import ar_token_nll, sample_ar
from unigen.models.rnn import GATES, RecurrentLM, RecurrentLMConfig, hidden_for_params, param_count
from unigen.registry import TASKS, get_preset
from unigen.run import train

SMALL = ["data.seq_len=16", "train.batch_size=4", "train.progress=false", "train.log_every=1", "model.hidden=24"]


def cfg_of(preset: str, *extra: str):
    return apply_overrides(get_preset(preset), list(extra))


def test_text_lstm_matches_text_ar_parameters():
    """text-ar: 3,280,128 parameters; text-lstm (2 layers, width 444): 3,276,720 (-0.10%)."""
    info = load_data(get_preset("text-ar").data, "train").info
    counts = {}
    for name in ("text-ar", "text-lstm"):
        cfg = get_preset(name)
        counts[name] = sum(p.numel() for p in TASKS[cfg.task].build(cfg, info).parameters())
    assert counts == {"text-ar": 3_280_128, "text-lstm": 3_276_720}


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("tied", [True, False])
def test_param_count_formula_equals_numel(cell, tied):
    m = RecurrentLM(RecurrentLMConfig(vocab_size=11, cell=cell, hidden=7, layers=3, tie_embeddings=tied))
    assert param_count(cell, 11, 7, 3, tied) == sum(p.numel() for p in m.parameters())


def test_hidden_for_params_is_nearest_brute_force():
    for target in (5_000, 123_456, 3_280_128):
        for cell in GATES:
            best = min(range(1, 2000), key=lambda h: abs(param_count(cell, 260, h, 2) - target))
            assert hidden_for_params(target, cell, 260, 2) == best


@pytest.mark.parametrize("cell", list(GATES))
def test_state_carried_in_chunks_equals_one_call_and_is_causal(cell):
    torch.manual_seed(0)
    m = RecurrentLM(RecurrentLMConfig(vocab_size=9, cell=cell, hidden=6, layers=2)).double().eval()
    ids = torch.randint(0, 9, (3, 50))
    whole = m(ids)  # (3, 50, 9): any length, nothing positional
    cache = m.new_cache(3)
    chunks = torch.cat([m(ids[:, a:a + 7], cache=cache) for a in range(0, 50, 7)], dim=1)
    torch.testing.assert_close(chunks, whole, rtol=0, atol=1e-12)
    assert cache.length == 50
    changed = ids.clone()
    changed[:, 30:] = (changed[:, 30:] + 1) % 9
    torch.testing.assert_close(m(changed)[:, :30], whole[:, :30], rtol=0, atol=0)  # the future cannot leak back
    with m.peek(cache):
        m(ids[:, :5], cache=cache)
    assert cache.length == 50


def test_cached_sampling_equals_recomputation():
    torch.manual_seed(1)
    cfg = cfg_of("text-lstm", *SMALL)
    lm = TASKS["ar"].build(cfg, load_data(cfg.data, "train").info).eval()
    canvas = torch.tensor([[lm.bos_id, 65, 66] + [lm.mask_id] * 20] * 2)
    runs = [sample_ar(lm, canvas, mask_id=lm.mask_id, use_cache=c, generator=torch.Generator().manual_seed(3))[0]
            for c in (True, False)]
    assert torch.equal(runs[0], runs[1]) and (runs[0] != lm.mask_id).all()


def test_stream_windows_are_contiguous_streams():
    n, B = 23, 4  # 5 windows per stream; 3 windows are never read
    seen = {b: [] for b in range(B)}
    for step in range(12):
        idx, fresh = NW.stream_windows(step, n, B)
        assert fresh == (step % 5 == 0)
        for b in range(B):
            seen[b].append(int(idx[b]))
    for b in range(B):
        assert seen[b] == [b * 5 + k % 5 for k in range(12)]


def test_carried_loss_is_exact_nll_of_the_concatenated_stream():
    """Two steps with the carried state == the AR NLL of [BOS; w_0; w_1] in one pass, for every stream."""
    torch.manual_seed(2)
    cfg = cfg_of("text-lstm", *SMALL, "model.carry_state=true")
    data = load_data(cfg.data, "train")
    lm = TASKS["ar"].build(cfg, data.info).eval()
    windows = data.batch(torch.arange(len(data)))["ids"]
    T = windows.shape[1]
    with torch.no_grad():
        got = sum(NW.carried_ar_loss(lm, lm, windows, step) * T for step in (0, 1)) / (2 * T)
        idx0, _ = NW.stream_windows(0, len(windows), 4)
        stream = torch.cat([windows[idx0], windows[idx0 + 1]], dim=1)  # (4, 2T)
        want = ar_token_nll(lm, NW.with_bos(stream, lm.bos_id), lm.mask_id).mean()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    assert lm.carry.abs().sum() > 0


def test_carried_state_resumes_exactly(tmp_path):
    cfg = cfg_of("text-lstm", *SMALL, "model.carry_state=true", "train.steps=4", "train.ckpt_every=2",
                 "train.precision=fp32", "train.ema_decay=0")
    train(cfg, tmp_path / "straight")
    shutil.copytree(tmp_path / "straight", tmp_path / "split")
    shutil.rmtree(tmp_path / "split" / "checkpoints" / "step_0000004")  # as if killed after step 2's checkpoint
    train(cfg, tmp_path / "split", resume=True)
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "split" / "model.safetensors")
    assert a.keys() == b.keys() and "carry" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k


def cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code


def test_cli_train_sample_eval_and_errors(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli("train", "text-lstm", "--out", out, "--train.steps=2", "--train.batch_size=4", "--train.progress=false",
               "--model.hidden=32", "--sample.n=2") == 0
    assert cli("sample", out, "--n", "2") == 0
    capsys.readouterr()
    assert cli("eval", out, "--json") == 0
    m = json.loads(capsys.readouterr().out)
    assert math.isfinite(m["bits_per_byte"]) and m["exact"] == 1.0
    assert cli("sample", out, "--prompt", "x" * 200) == 2  # longer than data.seq_len: what the sampler fills
    assert "data.seq_len" in capsys.readouterr().err
    bad = {"--model.backbone=lstn": "model.backbone",
           "--model.unit_forget_bias=true --model.backbone=gru": "LSTM only",
           "--model.carry_state=true --train.grad_accum=2": "grad_accum"}
    for args, msg in bad.items():
        assert cli("train", "text-lstm", "--out", str(tmp_path / "bad"), *args.split(), "--train.steps=1") == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and err.count("\n") == 0, err


def test_recurrent_needs_ar_and_carry_state_needs_recurrent():
    cfg = cfg_of("text-ar", "model.carry_state=true")
    info = load_data(cfg.data, "train").info
    with pytest.raises(UserError, match="recurrent"):
        TASKS["ar"].build(cfg, info)
    with pytest.raises(UserError, match="reads left to right"):
        TASKS["mdlm"].build(cfg_of("text-lstm"), info)


def test_keras_options_reach_the_lstm():
    cfg = cfg_of("text-lstm", *SMALL, "model.unit_forget_bias=true", "model.orthogonal=true")
    rnn = TASKS["ar"].build(cfg, load_data(cfg.data, "train").info).net.rnn
    H = rnn.hidden_size
    assert torch.equal(rnn.bias_ih_l1[H:2 * H], torch.ones(H)) and rnn.orthogonal
