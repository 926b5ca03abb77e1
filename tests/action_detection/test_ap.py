"""Per-frame AP and calibrated AP against scikit-learn and against brute-force counting from the definitions."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from unigen.errors import UserError
from unigen.families.action_detection.ap import average_precision, calibrated_ap, frame_map, onset_latency


def brute_cap(s, pos, w):
    """cAP from the definition with O(N^2) counting: a frame j is ranked at or before positive i when it scores
    higher, or equal with a smaller index (a stable sort's order)."""
    s, pos = s.tolist(), pos.tolist()
    cp, ap = [], []
    for i in range(len(s)):
        if not pos[i]:
            continue
        before = [j for j in range(len(s)) if s[j] > s[i] or (s[j] == s[i] and j <= i)]
        tp = sum(pos[j] for j in before)
        fp = len(before) - tp
        cp.append(w * tp / (w * tp + fp))
        ap.append(tp / len(before))
    return sum(ap) / len(ap), sum(cp) / len(cp)


def data(seed, n=200, tied=False):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, generator=g, dtype=torch.float64)
    if tied:
        s = (s * 6).floor() / 6                                     # 6 distinct values: many ties
    pos = torch.rand(n, generator=g) < 0.2 + 0.5 * s.float()        # informative scores
    return s, pos


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tied", [False, True])
def test_average_precision_equals_sklearn(seed, tied):
    s, pos = data(seed, tied=tied)
    assert average_precision(s, pos) == pytest.approx(average_precision_score(pos.numpy(), s.numpy()), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_loop_ap_equals_sklearn_on_untied_scores_and_differs_on_ties(seed):
    s, pos = data(seed)
    assert calibrated_ap(s, pos)[0] == pytest.approx(average_precision_score(pos.numpy(), s.numpy()), abs=1e-12)
    s, pos = data(seed, tied=True)
    assert abs(calibrated_ap(s, pos)[0] - average_precision_score(pos.numpy(), s.numpy())) > 1e-6


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tied", [False, True])
def test_calibrated_ap_equals_brute_force(seed, tied):
    s, pos = data(seed, n=80, tied=tied)
    w = (~pos).sum().item() / pos.sum().item()
    loop, cap = calibrated_ap(s, pos)
    bl, bc = brute_cap(s, pos, w)
    assert loop == pytest.approx(bl, abs=1e-12) and cap == pytest.approx(bc, abs=1e-12)
    assert calibrated_ap(s, pos, w=1.0)[1] == pytest.approx(loop, abs=1e-12)   # w = 1: cAP is the loop AP


def test_calibration_removes_the_dependence_on_the_class_prior():
    """Duplicating every negative halves precision-like AP but leaves cAP unchanged (w doubles too)."""
    s, pos = data(3)
    s2, pos2 = torch.cat([s, s[~pos]]), torch.cat([pos, pos[~pos]])
    assert calibrated_ap(s2, pos2)[0] < calibrated_ap(s, pos)[0] - 0.02
    assert calibrated_ap(s2, pos2)[1] == pytest.approx(calibrated_ap(s, pos)[1], abs=1e-12)


def test_frame_map_ignores_ambiguous_frames_and_background():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(300, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (300,), generator=g)
    amb = torch.rand(300, generator=g) < 0.1
    out = frame_map(probs, y, amb)
    want = [average_precision_score((y[~amb] == k).numpy(), probs[~amb, k].numpy()) for k in (1, 2, 3)]
    assert out["AP"] == pytest.approx(want, abs=1e-12) and out["mAP"] == pytest.approx(np.mean(want), abs=1e-12)
    assert not math.isnan(out["cAP"])
    with pytest.raises(UserError, match="class ids"):
        frame_map(probs, y + 1)


def test_onset_latency_counts_frames_to_first_correct_prediction():
    y = torch.tensor([0, 0, 2, 2, 2, 0, 3, 3, 0, 1, 1])
    pred = torch.tensor([0, 0, 0, 2, 1, 0, 0, 0, 0, 1, 0])
    assert onset_latency(pred, y) == ([1, 0], 3)
