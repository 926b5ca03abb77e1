"""The latent-diffusion family end to end on tiny settings: an autoencoder run, 2 training steps, prompts, guidance,
the frozen first stage, the EMA's scope, the scale factor, and the one-line errors of bad input."""
import json

import pytest
import torch
from safetensors.torch import load_file

from unigen.cli import main
from unigen.data import ShapesData, load as load_data
from unigen.errors import UserError
from unigen.data.shapes import encode_words
from unigen.families.latent_diffusion.network import LatentDiffusionConfig, LatentDiffusionNet, PixelSpace, generate
from unigen.families.latent_diffusion.task import TASK
from unigen.registry import get_preset
from unigen.run import load, sample, train

TINY = dict(width=16, depth=1, attn="4", head_dim=16, text_dim=16, text_depth=1)


def _quick(cfg, **model):
    cfg.data.n_train = 64
    cfg.train.steps, cfg.train.batch_size, cfg.train.progress = 2, 4, False
    for k, v in model.items():
        setattr(cfg.model, k, v)
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ldm")
    train(_quick(get_preset("shapes-kl"), channels=(16, 16, 16)), root / "ae")
    train(_quick(get_preset("shapes-ldm"), autoencoder=str(root / "ae"), **TINY), root / "ldm")
    return root


def test_trains_keeps_the_first_stage_frozen_and_averages_only_the_text_unet(runs):
    weights = load_file(runs / "ldm" / "model.safetensors")
    ae = load_file(runs / "ae" / "model.safetensors")
    for k, v in ae.items():
        assert torch.equal(weights[f"autoencoder.{k}"], v), k                  # the first stage never moved
    assert weights["scale_factor"] > 0 and torch.isfinite(weights["scale_factor"])
    ema = load_file(runs / "ldm" / "ema.safetensors")
    assert ema and all(k.startswith("model.") for k in ema)


def test_latents_set_the_scale_factor_from_the_first_batch(runs):
    net = load(runs / "ldm")
    net.scale_factor.zero_()
    x = load_data(ShapesData(n_train=64, max_shapes=1), "train").tensors["x"][:32]
    z = net.latents(x)
    assert z.flatten().std().item() == pytest.approx(1.0, abs=1e-5)
    s = float(net.scale_factor)
    net.latents(x[:8])
    assert float(net.scale_factor) == s                                           # set once, then kept


def test_guidance_zero_ignores_the_prompt_and_one_follows_it(runs):
    net = load(runs / "ldm")
    with torch.no_grad():                          # make the conditioning paths non-trivial (zero-init outputs)
        for p in net.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    a = torch.tensor([encode_words("a big red circle on the left")] * 2)
    b = torch.tensor([encode_words("a small blue square at the top right")] * 2)
    draw = lambda ids, s: generate(net, ids, sampler="ddim", steps=3, guidance=s,
                                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(draw(a, 0.0), draw(b, 0.0))
    assert not torch.allclose(draw(a, 1.0), draw(b, 1.0))
    assert not torch.allclose(draw(a, 1.0), draw(a, 3.0))


def test_sample_with_a_prompt_writes_images(runs, tmp_path):
    out = sample(runs / "ldm", steps=2, n=3, out_dir=tmp_path / "s", prompt="a red circle on the left")
    x = load_file(out["samples"])["x"]
    assert x.shape == (3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert json.loads((tmp_path / "s" / "prompts.json").read_text()) == ["a red circle on the left"] * 3
    assert (tmp_path / "s" / "samples.png").stat().st_size > 0


def test_bad_input_is_a_one_line_user_error(runs, tmp_path, capsys):
    with pytest.raises(UserError, match="'purple'"):
        sample(runs / "ldm", steps=2, n=1, out_dir=tmp_path / "a", prompt="a purple circle")
    with pytest.raises(UserError, match="guidance"):
        sample(runs / "ldm", steps=2, n=1, out_dir=tmp_path / "b", guidance=-1.0)
    assert main_code("sample", str(runs / "ldm"), "--prompt", "a purple circle", "--n", "1") == 2
    assert capsys.readouterr().err.count("\n") == 1
    cases = [(dict(autoencoder=str(tmp_path / "missing")), "no config.json"),
             (dict(autoencoder=str(runs / "ldm")), "not a KL autoencoder run")]
    for model, message in cases:
        with pytest.raises(UserError, match=message):
            train(_quick(get_preset("shapes-ldm"), **TINY, **model), tmp_path / "x", overwrite=True)
    bigger = _quick(get_preset("shapes-ldm"), autoencoder=str(runs / "ae"), **TINY)
    bigger.data.image_size = 48
    with pytest.raises(UserError, match=r"shape \(3, 32, 32\).*\(3, 48, 48\)"):
        train(bigger, tmp_path / "y", overwrite=True)


def main_code(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code


def test_pixel_space_first_stage_is_the_identity():
    """autoencoder="none" (the paper's LDM-1): latents are the pixels times the scale factor, decoding inverts it."""
    m = LatentDiffusionConfig(autoencoder="none", scale_factor=2.0, mults="1,2,2,2", **TINY)
    net = LatentDiffusionNet(m, PixelSpace(), (3, 32, 32), 28)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert net.latent_shape == (3, 32, 32)
    assert torch.equal(net.latents(x), 2 * x) and torch.equal(net.decode(2 * x), x)


def test_training_loss_drops_captions_to_the_empty_one(runs):
    """With p_uncond -> 1 the loss equals, noise for noise, the loss on empty captions with p_uncond = 0."""
    net = load(runs / "ldm")
    with torch.no_grad():
        for p in net.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    batch = load_data(ShapesData(n_train=64, max_shapes=1), "train").batch(torch.arange(8))
    empty = dict(batch, word_ids=net.null_ids.expand(8, -1).clone())

    def loss(b, p):
        net.config.p_uncond = p
        torch.manual_seed(0)
        return TASK.loss(net, b)
    assert loss(batch, 1 - 1e-9) == loss(empty, 0.0)
    assert loss(batch, 0.0) != loss(empty, 0.0)


@pytest.mark.slow
def test_eval_json_reports_adherence_and_fd(runs, capsys):
    """`unigen eval RUN --json` (slow: the first call trains the attribute classifier)."""
    assert main_code("eval", str(runs / "ldm"), "--json", "--n", "8") == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"adherence_colour", "adherence_all", "fd", "fd_data", "chance_position"} <= set(metrics)
    assert all(isinstance(v, (int, float)) for v in metrics.values())
