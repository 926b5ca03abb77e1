"""ViT classifier: presets, training smoke test, Hugging Face parity, and patch-permutation behaviour."""
import math

import pytest
import torch

from unigen.errors import UserError
from unigen.models.vit import VIT_SIZES, ViT, vit_config


def _perturb(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> None:
    """Add noise to every parameter so zero heads, unit LayerNorms and zero biases all take part in a comparison."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def _permute_patches(x: torch.Tensor, p: int, perm: torch.Tensor) -> torch.Tensor:
    """Rearrange the p x p patches of x (B, C, H, W): new patch k (row-major) = old patch perm[k]."""
    B, C, H, W = x.shape
    h, w = H // p, W // p
    patches = x.reshape(B, C, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, C, p, p)
    patches = patches[:, perm]
    return patches.reshape(B, h, w, C, p, p).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


def test_permute_patches_helper_moves_whole_patches():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = _permute_patches(x, 2, torch.tensor([3, 2, 1, 0]))
    assert torch.equal(y[0, 0, :2, :2], x[0, 0, 2:, 2:])
    assert torch.equal(y[0, 0, 2:, :2], x[0, 0, :2, 2:])


@pytest.mark.parametrize("size", list(VIT_SIZES))
def test_presets_build_and_give_logits(size):
    torch.manual_seed(0)
    cfg = vit_config(size, image_size=32, channels=3, patch=8 if size in ("S", "B") else 4, num_classes=7)
    model = ViT(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.equal(out, torch.zeros_like(out))  # zero-init head


def test_parameter_count_of_vit_s16():
    # ViT-S/16 on 224x224 with 1000 classes has 22.05M parameters (timm vit_small_patch16_224: 22,050,664)
    model = ViT(vit_config("S", image_size=224, channels=3, patch=16, num_classes=1000))
    assert sum(p.numel() for p in model.parameters()) == 22_050_664


@pytest.mark.parametrize("pool,pos", [("cls", "learned"), ("mean", "learned"), ("cls", "rope2d"), ("mean", "rope2d")])
def test_tiny_trains_two_steps_and_runs_in_eval(pool, pos):
    torch.manual_seed(0)
    model = ViT(vit_config("tiny", pool=pool, pos=pos, dropout=0.1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, target = torch.randn(4, 1, 28, 28), torch.randn(4, 10)
    losses = []
    for _ in range(2):
        loss = torch.nn.functional.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert math.isfinite(losses[0]) and losses[1] < losses[0]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    ce = torch.nn.functional.cross_entropy(ViT(vit_config("tiny"))(x), torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(ce, torch.tensor(math.log(10)))  # zero head: uniform prediction


def _port_to_hf(model: ViT, ref) -> None:
    """Copy our weights into transformers' ViTForImageClassification, splitting the fused qkv."""
    D = model.cfg.dim
    sd = {"vit.embeddings.cls_token": model.cls, "vit.embeddings.position_embeddings": model.pos.weight[None],
          "vit.embeddings.patch_embeddings.projection.weight": model.patch_embed.proj.weight,
          "vit.embeddings.patch_embeddings.projection.bias": model.patch_embed.proj.bias,
          "vit.layernorm.weight": model.norm.weight, "vit.layernorm.bias": model.norm.bias,
          "classifier.weight": model.head.weight, "classifier.bias": model.head.bias}
    for i, b in enumerate(model.blocks):
        pre = f"vit.encoder.layer.{i}."
        for t in ("weight", "bias"):
            sd[pre + f"layernorm_before.{t}"] = getattr(b.norm1, t)
            sd[pre + f"layernorm_after.{t}"] = getattr(b.norm2, t)
            sd[pre + f"attention.output.dense.{t}"] = getattr(b.attn.proj, t)
            sd[pre + f"intermediate.dense.{t}"] = getattr(b.mlp.w_in, t)
            sd[pre + f"output.dense.{t}"] = getattr(b.mlp.w_out, t)
            fused = getattr(b.attn.qkv, t)
            if fused is not None:
                for name, part in zip(("query", "key", "value"), fused.split(D)):
                    sd[pre + f"attention.attention.{name}.{t}"] = part
    ref.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True)


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_parity_with_hf_vit(qkv_bias):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_act="gelu", layer_norm_eps=1e-12, qkv_bias=qkv_bias, num_labels=5)
    ref = transformers.ViTForImageClassification(hf_cfg).eval()
    model = ViT(vit_config("tiny", image_size=16, channels=3, patch=4, num_classes=5, dim=32, depth=2, heads=4,
                           mlp_ratio=2.0, norm_eps=1e-12, qkv_bias=qkv_bias)).eval()
    _perturb(model)
    _port_to_hf(model, ref)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expect = ref(pixel_values=x).logits
        got = model(x)
    assert expect.abs().mean() > 1e-2
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_patch_permutation(pool):
    """Without positions a ViT is a set function of its patches; learned positions and 2-D RoPE break that."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    perm = torch.randperm(49, generator=torch.Generator().manual_seed(1))
    xp = _permute_patches(x, 4, perm)
    outs = {}
    base = ViT(vit_config("tiny", pool=pool, pos="none")).eval()
    _perturb(base)
    for pos in ("none", "learned", "rope2d"):
        model = ViT(vit_config("tiny", pool=pool, pos=pos)).eval()
        model.load_state_dict(base.state_dict(), strict=False)  # same weights; learned adds a position table
        if pos == "learned":
            _perturb(model.pos, seed=2)
        with torch.no_grad():
            outs[pos] = (model(x), model(xp))
    torch.testing.assert_close(outs["none"][1], outs["none"][0], atol=1e-5, rtol=1e-5)
    for pos in ("learned", "rope2d"):
        assert (outs[pos][1] - outs[pos][0]).abs().max() > 1e-3
    # RoPE has no parameters: the same weights without it give a different function
    assert (outs["rope2d"][0] - outs["none"][0]).abs().max() > 1e-3


def test_rope2d_and_none_accept_other_sizes_learned_does_not():
    x = torch.randn(1, 1, 16, 20)
    for pos in ("rope2d", "none"):
        assert ViT(vit_config("tiny", pos=pos))(x).shape == (1, 10)
    with pytest.raises(UserError, match="learned positions"):
        ViT(vit_config("tiny", pos="learned"))(x)


def test_bad_configs_raise_user_error():
    for bad in (dict(pool="max"), dict(pos="sincos"), dict(patch=5), dict(heads=3), dict(pos="rope2d", dim=24, heads=4)):
        with pytest.raises(UserError):
            ViT(vit_config("tiny", **bad))
    with pytest.raises(UserError):
        vit_config("XXL")
    with pytest.raises(UserError):
        vit_config("tiny", width=3)
    with pytest.raises(UserError):
        ViT(vit_config("tiny"))(torch.randn(1, 3, 28, 28))
