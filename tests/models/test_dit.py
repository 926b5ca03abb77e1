"""DiT denoiser: presets, adaLN-Zero identity at init, conditioning, sin-cos positions, and diffusers parity."""
import math

import numpy as np
import pytest
import torch

from unigen.errors import UserError
from unigen.models.dit import DIT_SIZES, DiT, DiTBlock, dit_config, sincos_2d
from unigen.nn.embeddings import ClassEmbedding, NoiseLevelEmbedding, PatchEmbed, unpatchify


def _perturb(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_cpu_presets_keep_shape_and_start_at_zero(size):
    torch.manual_seed(0)
    for cfg in (dit_config(size), dit_config(size, num_classes=10, out_channels=2, pos="rope2d")):
        model = DiT(cfg).eval()
        y = torch.tensor([3, 10]) if cfg.num_classes else None
        with torch.no_grad():
            out = model(torch.randn(2, 1, 28, 28), torch.rand(2) * 999, y)
        assert out.shape == (2, cfg.out_channels or 1, 28, 28)
        assert torch.equal(out, torch.zeros_like(out))


def _paper_config(size):
    """DiT-{size}/2 as trained in the paper: 32x32x4 latents, 1000 classes (+ null), learned sigma (8 channels)."""
    return dit_config(size, image_size=32, channels=4, out_channels=8, patch=2, num_classes=1000)


def test_dit_xl2_parameter_count_matches_the_official_model():
    # The official DiT-XL/2 prints 675,129,632 parameters, which include its fixed 256 x 1152 sin-cos table
    # (a frozen Parameter there, a buffer here). Built on the meta device: no memory, no time.
    with torch.device("meta"):
        model = DiT(_paper_config("XL"))
    assert _n_params(model) == 675_129_632 - 256 * 1152


def test_large_presets_build_and_count_parameters():
    s2 = DiT(_paper_config("S"))  # the paper's "33M": 32,963,360 with the 256 x 384 sin-cos table
    assert _n_params(s2) == 32_963_360 - 256 * 384
    assert DIT_SIZES["S"] == dict(dim=384, depth=12, heads=6)
    for size in ("B", "L", "XL"):
        with torch.device("meta"):
            model = DiT(_paper_config(size))
            assert model(torch.randn(1, 4, 32, 32), torch.ones(1), torch.tensor([3])).shape == (1, 8, 32, 32)


@pytest.mark.parametrize("pos,num_classes", [("sincos", 0), ("sincos", 10), ("rope2d", 10)])
def test_tiny_trains_two_steps_and_runs_in_eval(pos, num_classes):
    torch.manual_seed(0)
    model = DiT(dit_config("tiny", pos=pos, num_classes=num_classes))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, c, target = torch.randn(4, 1, 28, 28), torch.rand(4) * 999, torch.randn(4, 1, 28, 28)
    y = torch.tensor([0, 3, 9, 10]) if num_classes else None
    losses = []
    for _ in range(2):
        loss = torch.nn.functional.mse_loss(model(x, c, y), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert math.isfinite(losses[0]) and losses[1] < losses[0]
    with torch.no_grad():                 # no dropout or batch statistics: train and eval mode compute the same
        train_out = model(x, c, y)
        model.eval()
        assert torch.equal(model(x, c, y), train_out)


def test_fresh_block_is_identity_and_fresh_dit_outputs_zero():
    torch.manual_seed(0)
    block = DiTBlock(64, 4, 256)
    x, c = torch.randn(3, 10, 64), torch.randn(3, 64)
    assert torch.equal(block(x, c), x)
    model = DiT(dit_config("tiny", num_classes=10))
    out = model(torch.randn(3, 1, 28, 28), torch.rand(3) * 999, torch.tensor([0, 1, 10]))
    assert torch.equal(out, torch.zeros_like(out))
    # yet every layer receives a gradient path: the zero final linear gets a nonzero gradient
    (out - 1).pow(2).sum().backward()
    assert model.final.linear.weight.grad.abs().sum() > 0


def test_class_label_enters_only_through_y_and_none_is_null():
    torch.manual_seed(0)
    model = DiT(dit_config("tiny", num_classes=10)).eval()
    _perturb(model)
    x, c = torch.randn(2, 1, 28, 28), torch.rand(2) * 999
    with torch.no_grad():
        a = model(x, c, torch.tensor([1, 1]))
        b = model(x, c, torch.tensor([2, 1]))
        null = model(x, c, torch.tensor([10, 10]))
        none = model(x, c)
    assert (a[0] - b[0]).abs().max() > 1e-3
    torch.testing.assert_close(a[1], b[1], atol=1e-6, rtol=0)
    assert torch.equal(null, none)
    with pytest.raises(UserError, match="class labels"):
        model(x, c, torch.tensor([1]))
    with pytest.raises(UserError, match="unconditional"):
        DiT(dit_config("tiny"))(x, c, torch.tensor([1, 1]))


def test_sincos_2d_matches_mae_formula():
    """Oracle: the MAE/DiT recipe in numpy: meshgrid(w, h), half the channels per axis, [sin, cos] of omega."""
    D, h, w = 32, 3, 5

    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))  # x first, as DiT
    expect = np.concatenate([one_axis(D // 2, grid[0]), one_axis(D // 2, grid[1])], axis=1)
    torch.testing.assert_close(sincos_2d(D, h, w), torch.from_numpy(expect).float(), atol=1e-6, rtol=0)


def test_patch_embed_then_unpatchify_round_trip():
    """A patch conv whose kernel picks out each (row, col, channel) of the patch, unpatchified, is the identity."""
    C, p = 3, 2
    pe = PatchEmbed(C, p * p * C, p, bias=False)
    with torch.no_grad():
        pe.proj.weight.zero_()
        for r in range(p):
            for s in range(p):
                for ch in range(C):
                    pe.proj.weight[(r * p + s) * C + ch, ch, r, s] = 1.0
    x = torch.randn(2, C, 6, 8)
    torch.testing.assert_close(unpatchify(pe(x), C, 3, 4, p), x)
    with pytest.raises(UserError):
        pe(torch.randn(1, C, 5, 8))


def test_noise_and_class_embeddings():
    emb = NoiseLevelEmbedding(16, freq_dim=8)
    assert emb(torch.tensor([0.0, 1.5, -2.0])).shape == (3, 16)
    with pytest.raises(UserError):
        emb(torch.zeros(3, 1))
    table = ClassEmbedding(4, 8)
    assert table.null_id == 4 and table.table.num_embeddings == 5
    with pytest.raises(UserError):
        table(torch.zeros(2))


def test_bad_configs_raise_user_error():
    for bad in (dict(pos="learned"), dict(patch=3), dict(heads=3), dict(dim=66, heads=2),
                dict(pos="rope2d", dim=40, heads=4)):
        with pytest.raises(UserError):
            DiT(dit_config("tiny", **bad))
    with pytest.raises(UserError):
        dit_config("XL-ish")
    with pytest.raises(UserError):
        dit_config("tiny", width=3)
    with pytest.raises(UserError):
        DiT(dit_config("tiny"))(torch.randn(1, 1, 32, 32), torch.ones(1))


def _port_to_diffusers(model: DiT, ref) -> None:
    """Copy our weights into diffusers' DiTTransformer2DModel (each of its blocks holds a copy of the embedder)."""
    D = model.cfg.dim
    sd = {"pos_embed.proj.weight": model.patch_embed.proj.weight, "pos_embed.proj.bias": model.patch_embed.proj.bias}
    for t in ("weight", "bias"):
        sd[f"proj_out_1.{t}"] = getattr(model.final.ada, t)
        sd[f"proj_out_2.{t}"] = getattr(model.final.linear, t)
        for i, b in enumerate(model.blocks):
            pre = f"transformer_blocks.{i}."
            sd[pre + f"norm1.emb.timestep_embedder.linear_1.{t}"] = getattr(model.noise_emb.mlp[0], t)
            sd[pre + f"norm1.emb.timestep_embedder.linear_2.{t}"] = getattr(model.noise_emb.mlp[2], t)
            sd[pre + f"norm1.linear.{t}"] = getattr(b.ada, t)
            for name, part in zip("qkv", getattr(b.attn.qkv, t).split(D)):
                sd[pre + f"attn1.to_{name}.{t}"] = part
            sd[pre + f"attn1.to_out.0.{t}"] = getattr(b.attn.proj, t)
            sd[pre + f"ff.net.0.proj.{t}"] = getattr(b.mlp.w_in, t)
            sd[pre + f"ff.net.2.{t}"] = getattr(b.mlp.w_out, t)
    for i in range(len(model.blocks)):
        sd[f"transformer_blocks.{i}.norm1.emb.class_embedder.embedding_table.weight"] = model.class_emb.table.weight
    ref.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True)


def test_parity_with_diffusers_dit():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    cfg = dit_config("tiny", image_size=16, channels=3, out_channels=6, patch=2, dim=64, depth=2, heads=4,
                     num_classes=5)
    model = DiT(cfg).eval()
    model.noise_emb.freq_shift = 1.0  # diffusers' DiT embeds timesteps with downscale_freq_shift=1
    _perturb(model)  # the zero-init adaLN and final layers must take part
    ref = diffusers.DiTTransformer2DModel(
        num_attention_heads=4, attention_head_dim=16, in_channels=3, out_channels=6, num_layers=2, sample_size=16,
        patch_size=2, num_embeds_ada_norm=5, norm_eps=1e-6).eval()
    _port_to_diffusers(model, ref)
    x, c, y = torch.randn(2, 3, 16, 16), torch.tensor([3.0, 700.0]), torch.tensor([1, 5])
    with torch.no_grad():
        expect = ref(x, timestep=c, class_labels=y).sample
        got = model(x, c, y)
    assert expect.abs().mean() > 1e-2
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)
