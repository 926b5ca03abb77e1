"""Every flow layer and whole multi-scale models: exact inverse (hypothesis inputs) and log|det J| against autograd's
Jacobian + slogdet; actnorm's data-dependent initialisation; the LU form equals its matrix."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tests.normalizing_flows.helpers import layer_cases, small_model
from unigen.families.normalizing_flows.layers import ActNorm, InvConv1x1

CASES = layer_cases()
MODELS = {f"{arch}{'-lu' if lu else ''}": small_model(arch, lu) for arch in ("nice", "realnvp", "glow")
          for lu in ((False, True) if arch == "glow" else (False,))}
MODELS["toy-glow"] = small_model("glow", shape=(2,))
MODELS["toy-realnvp"] = small_model("realnvp", shape=(2,))
MODELS["toy-nice"] = small_model("nice", shape=(2,))


def _inputs(shape, domain, batch=3):
    lo, hi = (0.0, 0.999) if domain == "unit" else (-3.0, 3.0)
    return arrays(np.float64, (batch, *shape), elements=st.floats(lo, hi, allow_nan=False, width=64))


def _check_round_trip(f, x):
    z, logdet = f(x)
    assert torch.isfinite(z).all() and logdet.shape == (x.shape[0],)
    torch.testing.assert_close(f.inverse(z), x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_layer_inverse_round_trip(name, data):
    layer, shape, domain = CASES[name]
    x = torch.from_numpy(data.draw(_inputs(shape, domain)))
    _check_round_trip(layer, x)


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_model_inverse_round_trip(name, data):
    model = MODELS[name]
    domain = "unit" if len(model.shape) == 3 else "real"
    x = torch.from_numpy(data.draw(_inputs(model.shape, domain)))
    _check_round_trip(model, x)


def _jacobian_logdet(f, x):
    """log|det| of the Jacobian of x -> f(x) for one example x, by autograd."""
    shape = x.shape
    J = torch.autograd.functional.jacobian(lambda v: f(v.view(1, *shape))[0].flatten(), x.flatten())
    return torch.linalg.slogdet(J)[1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_logdet_matches_autograd_jacobian(name):
    layer, shape, domain = CASES[name]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=g, dtype=torch.float64) * (0.9 if domain == "unit" else 4) \
        - (0 if domain == "unit" else 2)
    _, logdet = layer(x[None])
    torch.testing.assert_close(logdet[0], _jacobian_logdet(layer, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_logdet_matches_autograd_jacobian(name):
    model = MODELS[name]
    g = torch.Generator().manual_seed(2)
    x = torch.rand(model.shape, generator=g, dtype=torch.float64) * 0.9 + 0.05
    z, logdet = model(x[None])
    assert z.shape == (1, model.dims)
    torch.testing.assert_close(logdet[0], _jacobian_logdet(model, x), rtol=1e-10, atol=1e-10)


def test_multiscale_models_factor_out_half_per_scale():
    assert MODELS["glow"].latent_shapes == [(2, 2, 2), (8, 1, 1)]       # squeeze, split, squeeze
    assert MODELS["realnvp"].latent_shapes == [(2, 2, 2), (2, 2, 2)]    # checker, squeeze, channel, split, checker


def test_actnorm_data_dependent_init_normalises_the_first_batch_and_only_it():
    torch.manual_seed(0)
    layer = ActNorm(3).train()
    sd, mean = torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1), torch.tensor([1.0, -3.0, 0.2]).view(1, 3, 1, 1)
    x = torch.randn(64, 3, 5, 5) * sd + mean
    z, logdet = layer(x)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(logdet, (25 * layer.log_s.sum()).expand(64))
    assert int(layer.initialized) == 1 and "initialized" in layer.state_dict()
    b = layer.b.detach().clone()
    layer(x * 10 + 5)                                   # a second batch does not re-initialise
    torch.testing.assert_close(layer.b.detach(), b)
    fresh = ActNorm(3).eval()                           # nor does evaluation of an untrained layer
    fresh(x)
    assert int(fresh.initialized) == 0 and fresh.b.abs().sum() == 0


def test_actnorm_state_travels_with_the_weights():
    trained = ActNorm(2).train()
    trained(torch.randn(16, 2) * 3 + 1)
    loaded = ActNorm(2).train()
    loaded.load_state_dict(trained.state_dict())
    x = torch.randn(8, 2)
    torch.testing.assert_close(loaded(x)[0], trained(x)[0])      # the first batch of a resumed run: no re-init


def test_lu_form_is_the_matrix_and_its_log_det():
    torch.manual_seed(0)
    conv = InvConv1x1(6, lu=True).double()
    with torch.no_grad():
        for p in conv.parameters():
            p.add_(0.2 * torch.randn_like(p))
    W = conv.matrix()
    torch.testing.assert_close(conv.log_abs_det(), torch.linalg.slogdet(W)[1])
    assert torch.equal(torch.triu(conv.L * conv.lower_mask), torch.zeros(6, 6, dtype=torch.float64))
    plain = InvConv1x1(6)
    torch.testing.assert_close(plain.weight @ plain.weight.T, torch.eye(6), atol=1e-5, rtol=0)  # a rotation at init
