"""Metric surrogates (classify/surrogates.py): equal to scikit-learn's exact metrics on one-hot predictions,
converging to them as the temperature goes to 0, batch-level (not per-sample) F1, and the long-tailed digits."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

from unigen.cli import main
from unigen.data import DigitsData, load
from unigen.errors import UserError
from unigen.families.classify.surrogates import (sigmoid_f1, soft_accuracy, soft_macro_f1, soft_micro_f1,
                                                 soft_predictions, surrogate_loss)

K = 5


def batch(seed: int, n: int = 40):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, K, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, K - 1, (n,), generator=g)        # class K-1 never a label: the absent-class rule is tested
    return z, y


@pytest.mark.parametrize("seed", range(5))
def test_one_hot_predictions_equal_sklearn(seed):
    z, y = batch(seed)
    pred = z.argmax(-1)
    p, t = F.one_hot(pred, K).double(), F.one_hot(y, K)
    labels = list(range(K))
    assert soft_macro_f1(p, t).item() == pytest.approx(
        f1_score(y, pred, average="macro", labels=labels, zero_division=0), abs=1e-12)
    assert soft_micro_f1(p, t).item() == pytest.approx(f1_score(y, pred, average="micro"), abs=1e-12)
    assert soft_accuracy(p, t).item() == pytest.approx(accuracy_score(y, pred), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_sigmoid_f1_on_hard_multilabel_equals_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(30, K, generator=g, dtype=torch.float64)
    y = (torch.rand(30, K, generator=g) < 0.3).long()
    exact = f1_score(y.numpy(), (z > 0).long().numpy(), average="macro", zero_division=0)
    assert 1 - sigmoid_f1(z, y, tau=1e-6).item() == pytest.approx(exact, abs=1e-9)


def test_surrogates_converge_as_temperature_goes_to_zero():
    z, y = batch(7)
    pred = z.argmax(-1)
    exact = f1_score(y, pred, average="macro", labels=list(range(K)), zero_division=0)
    gaps = [abs(soft_macro_f1(soft_predictions(z, tau), F.one_hot(y, K)).item() - exact)
            for tau in (1.0, 0.3, 0.1, 0.03, 0.01)]
    assert gaps[0] > 1e-3                                      # at tau = 1 the surrogate is not the metric
    assert gaps[2] > gaps[3] > gaps[4] and gaps[-1] < 1e-6     # 1 - p_max <= (K - 1) exp(-margin / tau) -> 0


def test_f1_is_a_batch_statistic_not_a_mean_over_samples():
    z, y = batch(1)
    p, t = soft_predictions(z, 1.0), F.one_hot(y, K)
    per_sample = torch.stack([soft_macro_f1(p[i:i + 1], t[i:i + 1]) for i in range(len(y))]).mean()
    assert abs(soft_macro_f1(p, t) - per_sample) > 0.05


def test_mix_weights_and_bad_values():
    z, y = batch(2)
    ce = F.cross_entropy(z, y)
    assert torch.allclose(surrogate_loss(z, y, "soft_macro_f1", 1.0, 0.0), ce)
    full = 1 - soft_macro_f1(soft_predictions(z, 1.0), F.one_hot(y, K))
    assert torch.allclose(surrogate_loss(z, y, "soft_macro_f1", 1.0, 1.0), full)
    assert torch.allclose(surrogate_loss(z, y, "soft_macro_f1", 1.0, 0.25), 0.75 * ce + 0.25 * full)
    with pytest.raises(UserError, match="temperature"):
        surrogate_loss(z, y, "soft_accuracy", 0.0, 0.5)
    with pytest.raises(UserError, match="not one of"):
        surrogate_loss(z, y, "f2", 1.0, 0.5)


def test_long_tailed_digits_profile():
    counts = np.bincount(load(DigitsData(imbalance=50.0), "train").tensors["y"].numpy(), minlength=10)
    full = np.bincount(load(DigitsData(), "train").tensors["y"].numpy(), minlength=10)
    assert list(counts) == [int(np.ceil(n * 50.0 ** (-c / 9))) for c, n in enumerate(full)]
    assert len(load(DigitsData(imbalance=50.0), "test")) == 300      # the test split stays balanced
    with pytest.raises(UserError, match="imbalance"):
        DigitsData(imbalance=0.5).check()


def test_digits_softf1_preset_trains_two_steps_and_reports_macro_f1(tmp_path, capsys):
    out = str(tmp_path / "run")
    for argv in (["train", "digits-softf1", "--out", out, "--train.steps=2", "--train.progress=false"],
                 ["eval", out, "--json"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= metrics["macro_f1"] <= 1 and 0 <= metrics["accuracy"] <= 1
    with pytest.raises(SystemExit) as e:
        main(["train", "digits-softf1", "--out", out + "2", "--model.loss=f2", "--train.steps=1"])
    assert e.value.code == 2 and "model.loss='f2' is not one of" in capsys.readouterr().err
