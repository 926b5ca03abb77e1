"""Text-conditional UNet: parity with diffusers' UNet2DConditionModel by weight port, zero init, and the context's
role (padding tokens are ignored; the context changes the output only through cross-attention)."""
import re

import pytest
import torch

from unigen.errors import UserError
from unigen.models.spatial_transformer import CrossAttention
from unigen.models.unet import UNet, _attn_resolutions, unet_config

RULES = [  # diffusers key -> ours, applied in order
    (r"^time_embedding\.linear_1", "noise_emb.mlp.0"), (r"^time_embedding\.linear_2", "noise_emb.mlp.2"),
    (r"^conv_norm_out", "norm_out"), (r"^mid_block\.resnets\.0", "mid1"), (r"^mid_block\.resnets\.1", "mid2"),
    (r"^mid_block\.attentions\.0", "mid_attn"), (r"^(down|up)_blocks\.(\d+)\.resnets\.", r"\1.\2.res."),
    (r"^(down|up)_blocks\.(\d+)\.attentions\.", r"\1.\2.attn."), (r"^(down|up)_blocks\.(\d+)\.(down|up)samplers\.0",
                                                                  r"\3sample.\2"),
    (r"\.time_emb_proj\.", ".emb."), (r"\.conv_shortcut\.", ".skip."), (r"\.transformer_blocks\.", ".blocks."),
    (r"\.to_out\.0\.", ".to_out."), (r"\.ff\.net\.0\.proj\.", ".ff.w_in."), (r"\.ff\.net\.2\.", ".ff.w_out."),
]


def port(ref, model: UNet) -> None:
    """Load a diffusers UNet2DConditionModel's weights into our UNet by renaming keys; GEGLU's fused input rows are
    [value; gate] in diffusers and [gate; value] in ours."""
    out = {}
    for k, v in ref.state_dict().items():
        for pat, rep in RULES:
            k = re.sub(pat, rep, k)
        if ".ff.w_in." in k:
            v = torch.cat(v.chunk(2)[::-1])
        out[k] = v
    model.load_state_dict(out, strict=True)


def _pair(S=16, C=4, mults=(1, 2), nrb=1, E=24, depth=1):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    cfg = unet_config("tiny", channels=C, image_size=S, mults=mults, num_res_blocks=nrb, context_dim=E,
                      transformer_depth=depth, head_dim=16)
    model = UNet(cfg).eval()
    sides = [S // 2**i for i in range(len(mults))]
    attn_at = _attn_resolutions(cfg)
    widths = tuple(cfg.base_width * m for m in mults)
    ref = diffusers.UNet2DConditionModel(
        sample_size=S, in_channels=C, out_channels=C, layers_per_block=nrb, block_out_channels=widths,
        down_block_types=tuple("CrossAttnDownBlock2D" if s in attn_at else "DownBlock2D" for s in sides),
        up_block_types=tuple("CrossAttnUpBlock2D" if s in attn_at else "UpBlock2D" for s in reversed(sides)),
        cross_attention_dim=E, attention_head_dim=tuple(w // cfg.head_dim for w in widths),
        transformer_layers_per_block=depth, norm_num_groups=cfg.norm_groups, resnet_time_scale_shift="scale_shift",
        flip_sin_to_cos=True, freq_shift=0).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    port(ref, model)
    return ref, model


@pytest.mark.parametrize("mults,nrb,depth", [((1, 2), 1, 1), ((1, 2, 2), 2, 2)])
def test_parity_with_diffusers_unet2d_condition(mults, nrb, depth):
    ref, model = _pair(mults=mults, nrb=nrb, depth=depth)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 4, 16, 16, generator=g), torch.rand(3, generator=g) * 999
    ctx = torch.randn(3, 7, 24, generator=g)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], dtype=torch.bool)
    with torch.no_grad():
        expect = ref(x, t, encoder_hidden_states=ctx, encoder_attention_mask=mask.long()).sample
        got = model(x, t, context=ctx, context_mask=mask)
        unmasked = model(x, t, context=ctx)
    assert expect.abs().mean() > 1e-2
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked[1:], got[1:], atol=1e-4)          # the mask matters where it hides tokens
    torch.testing.assert_close(unmasked[0], got[0], atol=1e-6, rtol=0)


def test_padding_tokens_are_ignored_and_fresh_model_is_zero():
    torch.manual_seed(0)
    model = UNet(unet_config("tiny", channels=4, image_size=16, mults=(1, 2), context_dim=8, head_dim=16)).eval()
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([10.0, 500.0])
    ctx, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0]] * 2, dtype=torch.bool)
    assert torch.equal(model(x, t, context=ctx, context_mask=mask), torch.zeros_like(x))   # zero-init outputs
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        base = model(x, t, context=ctx, context_mask=mask)
        other = ctx.clone()
        other[:, 3:] = torch.randn(2, 2, 8) * 10                           # change only padding tokens
        torch.testing.assert_close(model(x, t, context=other, context_mask=mask), base, atol=1e-5, rtol=0)
        other[:, 0] += 1                                                   # change a real token
        assert not torch.allclose(model(x, t, context=other, context_mask=mask), base, atol=1e-4)


def test_cross_attention_is_softmax_attention_over_the_context():
    """Brute force: one head, q = x Wq, k = c Wk, v = c Wv, out = softmax(q k^T / sqrt(d)) v Wo + b."""
    torch.manual_seed(0)
    att = CrossAttention(6, 1, context_dim=3)
    x, c = torch.randn(2, 4, 6), torch.randn(2, 5, 3)
    q, k, v = att.to_q(x), att.to_k(c), att.to_v(c)
    want = att.to_out(torch.softmax(q @ k.transpose(1, 2) / 6 ** 0.5, -1) @ v)
    torch.testing.assert_close(att(x, c), want, atol=1e-6, rtol=1e-6)


def test_bad_context_is_user_error():
    model = UNet(unet_config("tiny", channels=4, image_size=16, mults=(1, 2), context_dim=8, head_dim=16))
    x, t = torch.zeros(2, 4, 16, 16), torch.zeros(2)
    with pytest.raises(UserError, match="context_dim=8"):
        model(x, t)
    with pytest.raises(UserError, match="context_dim=8"):
        model(x, t, context=torch.zeros(2, 3, 5))
    with pytest.raises(UserError, match="real token"):
        model(x, t, context=torch.zeros(2, 3, 8), context_mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(UserError, match="context_dim=0"):
        UNet(unet_config("tiny", channels=4, image_size=16, mults=(1, 2)))(x, t, context=torch.zeros(2, 3, 8))
