"""benchmarks/text_genppl.py's Fast-dLLM phases end to end on tiny runs: `speed` (interleaved rounds) and
`prompted` (continuations of held-out prompts), checked by their invariants: the uncached run agrees with itself
and has speed-up 1, every run of a length makes the same calls when the threshold never fires, the cached runs
see fewer columns, and the held-out continuation scores what `generative_perplexity` gives it directly."""
import json
import sys
from pathlib import Path

import pytest
import torch

from unigen.config import apply_overrides
from unigen.data import load as load_data
from unigen.families.discrete_diffusion.genppl import generative_perplexity
from unigen.registry import get_preset
from unigen.run import load, train

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds `benchmarks/`

from benchmarks import text_genppl  # noqa: E402

TINY = ["model.size=tiny", "data.seq_len=64", "train.steps=1", "train.batch_size=2", "train.progress=false",
        "train.precision=fp32"]


@pytest.mark.slow  # three tiny trainings and ~30 tiny generations: ~15 s on one core
def test_speed_and_prompted_phases(tmp_path, capsys):
    for name in ("text-ar-judge", "text-ar", "text-mdlm"):
        train(apply_overrides(get_preset(name), TINY), tmp_path / name)
    text_genppl.main(["--runs", str(tmp_path), "--phases", "speed,prompted", "--lengths", "64", "--rounds", "2",
                      "--n", "3", "--prompt-len", "32", "--thresholds", "0.9", "--temperatures", "0"])
    res = json.loads((tmp_path / "genppl.json").read_text())
    rows = {r["sampler"]: r for r in res["speed"]["rows"]}
    assert rows["fast-dllm"]["speedup_rounds"] == [1.0, 1.0] and rows["fast-dllm"]["agreement"] == 1.0
    assert all(r["nfe"] == [64, 64] for r in rows.values())  # an untrained model: one token per call
    assert rows["fast-dllm-dual"]["positions"] < rows["fast-dllm-prefix"]["positions"] < rows["fast-dllm"]["positions"]
    held = res["prompted"]["rows"][0]
    judge = load(tmp_path / "text-ar-judge")
    test = load_data(apply_overrides(get_preset("text-mdlm"), TINY).data, "test")
    ids = test.batch(torch.linspace(0, len(test) - 1, 3).long())["ids"]
    want = generative_perplexity(judge, ids, bos_id=judge.bos_id, mask_id=judge.mask_id, prompt_len=32)
    assert held["model"] == "held-out text" and held["gen_ppl"] == pytest.approx(want["gen_ppl"], rel=1e-12)
    assert held["tokens"] == ids[:, 32:].tolist()
    uncached = [r for r in res["prompted"]["rows"] if r["sampler"] == "fast-dllm"]
    assert len(uncached) == 1 and uncached[0]["agreement"] == 1.0
    capsys.readouterr()
    text_genppl.main(["--runs", str(tmp_path), "--phases", "report"])
    out = capsys.readouterr().out
    assert "| 64 | fast-dllm-dual |" in out and "| held-out text | - |" in out
