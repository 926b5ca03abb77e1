"""UNet denoiser: presets, zero init, per-sample independence, channels_last, and parity with diffusers' UNet2DModel."""
import pytest
import torch

from unigen.errors import UserError
from unigen.models.unet import UNET_SIZES, UNet, _attn_resolutions, unet_config


def _randomise_zeros(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every all-zero parameter (the zero-init convs, GroupNorm biases) small random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _inputs(B=3, C=1, S=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, S, S, generator=g), torch.rand(B, generator=g) * 999


@pytest.mark.parametrize("size", list(UNET_SIZES))
def test_presets_build_and_keep_shape(size):
    torch.manual_seed(0)
    for S, C in ((28, 1), (32, 3)):
        model = UNet(unet_config(size, channels=C, image_size=S, num_classes=10)).eval()
        x, c = _inputs(1, C, S)
        with torch.no_grad():
            assert model(x, c, torch.tensor([3])).shape == (1, C, S, S)


def test_tiny_trains_two_steps_and_runs_in_eval():
    torch.manual_seed(0)
    model = UNet(unet_config("tiny", num_classes=10, dropout=0.1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, c = _inputs(4)
    y, target = torch.randint(0, 11, (4,)), torch.randn(4, 1, 28, 28)
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(2):
        loss = torch.nn.functional.mse_loss(model(x, c, y), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[1] < losses[0]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # zero-init layers open one after another: step 1 moves conv_out, step 2 the residual blocks' conv2
    changed = {n for (n, p), b in zip(model.named_parameters(), before) if not torch.equal(p, b)}
    assert "conv_out.weight" in changed and "down.0.res.0.conv2.weight" in changed
    model.eval()
    with torch.no_grad():
        out1, out2 = model(x, c, y), model(x, c, y)
    assert torch.equal(out1, out2)  # no dropout in eval


def test_fresh_model_outputs_exactly_zero():
    model = UNet(unet_config("tiny", num_classes=10))
    x, c = _inputs()
    out = model(x, c, torch.tensor([0, 5, 10]))
    assert torch.equal(out, torch.zeros_like(out))


def test_output_independent_of_batch_composition():
    torch.manual_seed(0)
    model = UNet(unet_config("tiny", num_classes=10)).eval()
    _randomise_zeros(model)
    x, c = _inputs(5)
    y = torch.tensor([1, 2, 3, 4, 10])
    with torch.no_grad():
        full = model(x, c, y)
        assert full.abs().mean() > 1e-2
        for i in range(5):
            alone = model(x[i:i + 1], c[i:i + 1], y[i:i + 1])
            torch.testing.assert_close(alone, full[i:i + 1], atol=1e-5, rtol=1e-5)
        # changing one sample leaves the others untouched
        x2 = x.clone()
        x2[0] = torch.randn_like(x2[0])
        other = model(x2, c, y)
    torch.testing.assert_close(other[1:], full[1:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(other[0], full[0])


def test_class_label_enters_only_through_y_and_none_is_null():
    torch.manual_seed(0)
    model = UNet(unet_config("tiny", num_classes=10)).eval()
    _randomise_zeros(model)
    x, c = _inputs(2)
    with torch.no_grad():
        a = model(x, c, torch.tensor([1, 1]))
        b = model(x, c, torch.tensor([2, 1]))
        null = model(x, c, torch.tensor([10, 10]))
        none = model(x, c)
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[1], b[1], atol=1e-6, rtol=0)
    assert torch.equal(null, none)
    uncond = UNet(unet_config("tiny"))
    with pytest.raises(UserError):
        uncond(x, c, torch.tensor([1, 1]))
    with pytest.raises(UserError, match="class labels"):
        model(x, c, torch.tensor([1, 1, 1]))


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = UNet(unet_config("tiny", channels=3, image_size=32)).eval()
    _randomise_zeros(model)
    x, c = _inputs(2, 3, 32)
    with torch.no_grad():
        ref = model(x, c)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last), c)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_sizes_that_do_not_halve_raise_user_error():
    with pytest.raises(UserError, match="halved"):
        UNet(unet_config("tiny", image_size=28, mults=(1, 2, 2, 2)))
    model = UNet(unet_config("tiny", image_size=28, mults=(1, 2, 2)))
    with pytest.raises(UserError, match="divisible"):
        model(torch.zeros(1, 1, 30, 30), torch.zeros(1))
    with pytest.raises(UserError, match="attn_resolutions"):
        UNet(unet_config("tiny", image_size=32, attn_resolutions=(7,)))
    with pytest.raises(UserError, match="norm_groups"):
        UNet(unet_config("tiny", norm_groups=7))
    with pytest.raises(UserError, match="unknown UNet size"):
        unet_config("huge")
    with pytest.raises(UserError):
        unet_config("tiny", widht=3)


def test_default_attention_resolutions():
    assert _attn_resolutions(unet_config("tiny", image_size=28, mults=(1, 2, 2))) == (14, 7)
    assert _attn_resolutions(unet_config("tiny", image_size=32, mults=(1, 2, 2, 2))) == (16, 8, 4)


# ---- parity with diffusers.UNet2DModel (scale-shift resnets, attention blocks, class embedding) ----

def _port_from_diffusers(ref, model: UNet) -> None:
    """Copy a diffusers UNet2DModel's weights into our UNet (splitting nothing; fusing q, k, v)."""
    sd = ref.state_dict()
    out = {}

    def res(dst, src):
        for a, b in (("norm1", "norm1"), ("conv1", "conv1"), ("emb", "time_emb_proj"), ("norm2", "norm2"),
                     ("conv2", "conv2"), ("skip", "conv_shortcut")):
            for t in ("weight", "bias"):
                if f"{src}.{b}.{t}" in sd:
                    out[f"{dst}.{a}.{t}"] = sd[f"{src}.{b}.{t}"]

    def attn(dst, src):
        for t in ("weight", "bias"):
            out[f"{dst}.norm.{t}"] = sd[f"{src}.group_norm.{t}"]
            out[f"{dst}.attn.qkv.{t}"] = torch.cat([sd[f"{src}.to_{n}.{t}"] for n in "qkv"])
            out[f"{dst}.attn.proj.{t}"] = sd[f"{src}.to_out.0.{t}"]

    for t in ("weight", "bias"):
        out[f"noise_emb.mlp.0.{t}"] = sd[f"time_embedding.linear_1.{t}"]
        out[f"noise_emb.mlp.2.{t}"] = sd[f"time_embedding.linear_2.{t}"]
        for a, b in (("conv_in", "conv_in"), ("norm_out", "conv_norm_out"), ("conv_out", "conv_out")):
            out[f"{a}.{t}"] = sd[f"{b}.{t}"]
    out["class_emb.table.weight"] = sd["class_embedding.weight"]
    for i, level in enumerate(model.down):
        for j, a in enumerate(level.attn):
            res(f"down.{i}.res.{j}", f"down_blocks.{i}.resnets.{j}")
            if not isinstance(a, torch.nn.Identity):
                attn(f"down.{i}.attn.{j}", f"down_blocks.{i}.attentions.{j}")
        if not isinstance(model.downsample[i], torch.nn.Identity):
            for t in ("weight", "bias"):
                out[f"downsample.{i}.conv.{t}"] = sd[f"down_blocks.{i}.downsamplers.0.conv.{t}"]
    res("mid1", "mid_block.resnets.0")
    res("mid2", "mid_block.resnets.1")
    attn("mid_attn", "mid_block.attentions.0")
    for i, level in enumerate(model.up):
        for j, a in enumerate(level.attn):
            res(f"up.{i}.res.{j}", f"up_blocks.{i}.resnets.{j}")
            if not isinstance(a, torch.nn.Identity):
                attn(f"up.{i}.attn.{j}", f"up_blocks.{i}.attentions.{j}")
        if not isinstance(model.upsample[i], torch.nn.Identity):
            for t in ("weight", "bias"):
                out[f"upsample.{i}.conv.{t}"] = sd[f"up_blocks.{i}.upsamplers.0.conv.{t}"]
    model.load_state_dict(out, strict=True)  # raises on any missing or extra key


@pytest.mark.parametrize("S,C,mults,nrb", [(28, 1, (1, 2, 2), 1), (16, 3, (1, 2), 2)])
def test_parity_with_diffusers_unet2d(S, C, mults, nrb):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    cfg = unet_config("tiny", channels=C, image_size=S, mults=mults, num_res_blocks=nrb, num_classes=10)
    model = UNet(cfg).eval()
    attn_at = _attn_resolutions(cfg)
    sides = [S // 2**i for i in range(len(mults))]
    down = tuple("AttnDownBlock2D" if s in attn_at else "DownBlock2D" for s in sides)
    up = tuple("AttnUpBlock2D" if s in attn_at else "UpBlock2D" for s in reversed(sides))
    ref = diffusers.UNet2DModel(
        sample_size=S, in_channels=C, out_channels=C, down_block_types=down, up_block_types=up,
        block_out_channels=tuple(cfg.base_width * m for m in mults), layers_per_block=nrb,
        attention_head_dim=cfg.head_dim, norm_num_groups=cfg.norm_groups, attn_norm_num_groups=cfg.norm_groups,
        resnet_time_scale_shift="scale_shift", num_class_embeds=cfg.num_classes + 1,
        flip_sin_to_cos=True, freq_shift=0).eval()
    with torch.no_grad():  # diffusers zero-inits nothing we do not; make the check non-trivial anyway
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    _port_from_diffusers(ref, model)
    x, c = _inputs(2, C, S)
    y = torch.tensor([3, 10])
    with torch.no_grad():
        expect = ref(x, c, class_labels=y).sample
        got = model(x, c, y)
    assert expect.abs().mean() > 1e-2
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)
