"""Every k-diffusion sampler we port equals k-diffusion's own on identical inputs and identical noise, in float64.

k-diffusion (0.1.1.post1, installed for tests with --no-deps) has a package __init__ that imports image and
training code; only its `sampling.py` is loaded here, with its two unneeded imports stubbed (torchdiffeq: used by
log_likelihood only; utils: only append_dims is called). Noise: both libraries take a noise source called as
noise(sigma, sigma_next); the one used here is a deterministic function of the (rounded) pair, so both see the
same z although they compute sigma along different float paths. k-diffusion's churn samplers draw torch.randn_like
at every step; a proxy for its `torch` serves those draws from the same keyed table.
"""
import hashlib
import importlib.util
import inspect
import math
import sys
import types
from functools import partial
from pathlib import Path

import pytest
import torch

from unigen.families.continuous_diffusion import Gaussian, karras_sigmas
from unigen.families.continuous_diffusion.noise import brownian_noise
from unigen.families.continuous_diffusion.samplers import SAMPLERS
from unigen.families.continuous_diffusion.samplers_dpm import dpm_solver_adaptive, dpm_solver_fast

F64 = torch.float64
DATA = Gaussian(torch.tensor([0.3, -0.5, 0.1], dtype=F64),
                torch.tensor([[1.0, 0.6, 0.0], [0.6, 0.8, 0.1], [0.0, 0.1, 0.5]], dtype=F64))
TOL = 1e-12           # measured max errors are printed by test_report_max_errors (-s)


def _load_kdiffusion():
    spec = importlib.util.find_spec("k_diffusion")
    pytest.importorskip("torchsde")
    pytest.importorskip("scipy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion==0.1.1.post1)")
    path = Path(list(spec.submodule_search_locations)[0]) / "sampling.py"
    pkg = types.ModuleType("_kd_ref")
    pkg.__path__ = []
    utils = types.ModuleType("_kd_ref.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    saved = {k: sys.modules.get(k) for k in ("_kd_ref", "_kd_ref.utils", "torchdiffeq")}
    sys.modules.update({"_kd_ref": pkg, "_kd_ref.utils": utils})
    if saved["torchdiffeq"] is None:
        sys.modules["torchdiffeq"] = types.SimpleNamespace(odeint=None)
    try:
        mod_spec = importlib.util.spec_from_file_location("_kd_ref.sampling", path)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return mod


@pytest.fixture(scope="module")
def K():
    return _load_kdiffusion()


class KeyedNoise:
    """z = f(round(sigma), round(sigma_next)): the same noise for the same step, whichever float path produced sigma."""

    def __init__(self, shape, seed=0):
        self.shape, self.seed, self.calls = shape, seed, 0

    def __call__(self, sigma, sigma_next):
        self.calls += 1
        key = f"{self.seed}:{float(sigma):.9e}:{float(sigma_next):.9e}".encode()
        g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:7], "little"))
        return torch.randn(self.shape, generator=g, dtype=F64)


class _TorchProxy:
    """k-diffusion's `torch` with randn_like served by a keyed noise of the step (for its churn samplers)."""

    def __init__(self, noise, sigmas):
        self._noise, self._sigmas, self._i = noise, sigmas.tolist(), 0

    def __getattr__(self, name):
        return getattr(torch, name)

    def randn_like(self, x):
        i, self._i = self._i, self._i + 1
        return self._noise(self._sigmas[i], self._sigmas[i + 1])


def _network():
    """A fixed random MLP in EDM's preconditioning (EDM Eq. 7): a non-linear, non-Gaussian denoiser."""
    g = torch.Generator().manual_seed(7)
    W1, b1 = torch.randn(4, 32, generator=g, dtype=F64) / 2, torch.randn(32, generator=g, dtype=F64) / 4
    W2 = torch.randn(32, 3, generator=g, dtype=F64) / 6

    def D(x, sigma):
        s = sigma.reshape(-1, 1)
        c_in, c_skip = (s ** 2 + 0.25).rsqrt(), 0.25 / (s ** 2 + 0.25)
        c_out = s * 0.5 * (s ** 2 + 0.25).rsqrt()
        F = torch.tanh(torch.cat([c_in * x, s.log() / 4], 1) @ W1 + b1) @ W2
        return c_skip * x + c_out * F
    return D


DENOISERS = {"gaussian": DATA.denoiser, "network": _network()}

# (our name, k-diffusion function, options given to both, k-diffusion-only options)
CASES = [
    ("euler", "sample_euler", {}, {}),
    ("euler", "sample_euler", {"S_churn": 5.0, "S_min": 0.05, "S_max": 10.0, "S_noise": 1.007}, "churn"),
    ("heun", "sample_heun", {"S_churn": 5.0, "S_min": 0.05, "S_max": 10.0, "S_noise": 1.007}, "churn"),
    ("euler-ancestral", "sample_euler_ancestral", {"eta": 0.8, "s_noise": 1.01}, {}),
    ("lms", "sample_lms", {}, {}),
    ("lms", "sample_lms", {"order": 3}, {}),
    ("dpm-2", "sample_dpm_2", {}, {}),
    ("dpm-2", "sample_dpm_2", {"S_churn": 5.0, "S_min": 0.05, "S_max": 10.0, "S_noise": 1.007}, "churn"),
    ("dpm-2", "sample_dpm_2", {"S_churn": 1.0}, "churn"),   # gamma = S_churn / N below its cap; default S_min, S_max
    ("dpm-2-ancestral", "sample_dpm_2_ancestral", {"eta": 0.8, "s_noise": 1.01}, {}),
    ("dpmpp-2s-ancestral", "sample_dpmpp_2s_ancestral", {"eta": 1.0, "s_noise": 1.01}, {}),
    ("dpmpp-2s-ancestral", "sample_dpmpp_2s_ancestral", {"eta": 0.0}, {}),
    ("dpmpp-sde", "sample_dpmpp_sde", {"eta": 1.0, "s_noise": 1.01}, {}),
    ("dpmpp-sde", "sample_dpmpp_sde", {"eta": 0.5, "r": 0.4}, {}),
    ("dpmpp-2m-sde", "sample_dpmpp_2m_sde", {"eta": 1.0, "s_noise": 1.01}, {}),
    ("dpmpp-2m-sde", "sample_dpmpp_2m_sde", {"eta": 0.0}, {}),
    ("dpmpp-2m-sde-heun", "sample_dpmpp_2m_sde", {"eta": 1.0}, {"solver_type": "heun"}),
    ("dpmpp-3m-sde", "sample_dpmpp_3m_sde", {"eta": 1.0, "s_noise": 1.01}, {}),
    ("dpmpp-3m-sde", "sample_dpmpp_3m_sde", {"eta": 0.0}, {}),
    ("dpmpp-3m-sde", "sample_dpmpp_3m_sde", {"eta": 0.5}, {}),   # eta in the noise term too (a mutant: h / eta)
    ("dpmpp-2m", "sample_dpmpp_2m", {}, {}),
]
_KD_NAMES = {"S_churn": "s_churn", "S_min": "s_tmin", "S_max": "s_tmax", "S_noise": "s_noise"}
MEASURED: dict[str, float] = {}


def _run_pair(K, name, kd_fn, opts, extra, D, n=9):
    sigmas = karras_sigmas(n, sigma_min=0.02, sigma_max=20.0)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(3), dtype=F64) * sigmas[0]
    noise = KeyedNoise(x.shape)
    kd_opts = {_KD_NAMES.get(k, k): v for k, v in opts.items()}
    if extra == "churn":
        K.torch = _TorchProxy(noise, sigmas)                          # churn: randn_like per step
        try:
            ref = getattr(K, kd_fn)(D, x, sigmas, disable=True, **kd_opts)
        finally:
            K.torch = torch
    else:
        uses_noise = "noise_sampler" in inspect.signature(getattr(K, kd_fn)).parameters
        ref = getattr(K, kd_fn)(D, x, sigmas, disable=True, **kd_opts, **extra,
                                **({"noise_sampler": noise} if uses_noise else {}))
    ours = SAMPLERS[name](D, x, sigmas, noise=noise, **opts) if _takes_noise(name) else \
        SAMPLERS[name](D, x, sigmas, **opts)
    return ours, ref


def _takes_noise(name):
    return "noise" in inspect.signature(SAMPLERS[name].fn).parameters or name == "dpmpp-2m-sde-heun"


@pytest.mark.parametrize("denoiser", sorted(DENOISERS))
@pytest.mark.parametrize("name, kd_fn, opts, extra", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_equals_kdiffusion(K, name, kd_fn, opts, extra, denoiser):
    ours, ref = _run_pair(K, name, kd_fn, opts, extra, DENOISERS[denoiser])
    err = (ours - ref).abs().max().item()
    MEASURED[f"{name} {opts} ({denoiser})"] = err
    assert err < TOL * max(1.0, ref.abs().max().item()), err


@pytest.mark.parametrize("denoiser", sorted(DENOISERS))
@pytest.mark.parametrize("nfe, eta", [(1, 0.0), (2, 0.0), (3, 0.0), (7, 0.0), (10, 0.0), (12, 0.0), (10, 0.7)])
def test_dpm_fast_equals_kdiffusion(K, nfe, eta, denoiser):
    D = DENOISERS[denoiser]
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(4), dtype=F64) * 20.0
    noise = KeyedNoise(x.shape)
    torch.set_default_dtype(F64)                                     # its grid is torch.linspace in the default dtype
    try:
        ref = K.sample_dpm_fast(D, x, 0.02, 20.0, nfe, disable=True, eta=eta, noise_sampler=noise)
    finally:
        torch.set_default_dtype(torch.float32)
    calls = []
    ours = dpm_solver_fast(lambda x_, s_: calls.append(1) or D(x_, s_), x, 20.0, 0.02, nfe, eta=eta, noise=noise)
    err = (ours - ref).abs().max().item()
    MEASURED[f"dpm-fast nfe={nfe} eta={eta} ({denoiser})"] = err
    assert err < TOL * ref.abs().max().item() and len(calls) == nfe


@pytest.mark.parametrize("denoiser", sorted(DENOISERS))
@pytest.mark.parametrize("opts", [{"order": 3}, {"order": 2}, {"order": 3, "rtol": 1e-3, "atol": 1e-4},
                                  {"order": 3, "pcoeff": 0.2, "icoeff": 0.8, "dcoeff": 0.1},
                                  {"order": 2, "eta": 0.5}])
def test_dpm_adaptive_equals_kdiffusion(K, opts, denoiser):
    D = DENOISERS[denoiser]
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(5), dtype=F64) * 20.0
    noise = KeyedNoise(x.shape)
    torch.set_default_dtype(F64)                                     # its t, atol and rtol are default-dtype tensors
    try:
        ref, ref_info = K.sample_dpm_adaptive(D, x, 0.02, 20.0, disable=True, noise_sampler=noise, return_info=True,
                                              **opts)
    finally:
        torch.set_default_dtype(torch.float32)
    ours, info = dpm_solver_adaptive(D, x, 20.0, 0.02, noise=noise, **opts)
    err = (ours - ref).abs().max().item()
    MEASURED[f"dpm-adaptive {opts} ({denoiser})"] = err
    assert info == ref_info
    assert err < TOL * ref.abs().max().item()


def test_polyexponential_and_exponential_grids_equal_kdiffusion(K):
    from unigen.families.continuous_diffusion.grids import logsnr_sigmas, polyexponential_sigmas
    torch.set_default_dtype(F64)
    try:
        for rho in (0.5, 1.0, 2.0):
            torch.testing.assert_close(polyexponential_sigmas(12, 0.03, 14.6, rho),
                                       K.get_sigmas_polyexponential(12, 0.03, 14.6, rho), rtol=1e-14, atol=0)
        torch.testing.assert_close(logsnr_sigmas(12, 0.03, 14.6), K.get_sigmas_exponential(12, 0.03, 14.6),
                                   rtol=1e-13, atol=0)
        torch.testing.assert_close(karras_sigmas(12, 0.03, 14.6), K.get_sigmas_karras(12, 0.03, 14.6),
                                   rtol=1e-14, atol=0)
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("seed", [12345, [11, 22, 33, 44]])
def test_brownian_noise_equals_kdiffusion_brownian_tree(K, seed):
    x = torch.zeros(4, 3, dtype=F64)
    sigmas = karras_sigmas(10, 0.02, 20.0)
    ours = brownian_noise(x, 0.02, 20.0, seed)
    ref = K.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=seed)
    for a, b in zip(sigmas[:-2], sigmas[1:-1]):
        torch.testing.assert_close(ours(a.item(), b.item()), ref(a, b), rtol=0, atol=1e-14)


def test_brownian_default_equals_kdiffusion_with_the_same_tree(K):
    """The SDE samplers' default noise is a Brownian tree on [sigma_min, sigma_max] (k-diffusion's default), seeded
    from `generator`: with the seed handed to k-diffusion's own tree, the two samples agree."""
    from unigen.families.continuous_diffusion.noise import seed_from
    sigmas = karras_sigmas(12, 0.02, 20.0)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=F64) * sigmas[0]
    seed = seed_from(torch.Generator().manual_seed(9))
    ref = K.sample_dpmpp_2m_sde(DATA.denoiser, x, sigmas, disable=True,
                                noise_sampler=K.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=seed))
    ours = SAMPLERS["dpmpp-2m-sde"](DATA.denoiser, x, sigmas, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_report_max_errors():
    """Prints the max |ours - k-diffusion| of every case above (run with -s); runs last in this file."""
    for k, v in sorted(MEASURED.items()):
        print(f"{v:.2e}  {k}")
