"""Training step (forward + backward + AdamW step) of each unigen backbone against its reference implementation.

    DiT   unigen.models.DiT            vs diffusers DiTTransformer2DModel   (adaLN-Zero, class-conditional)
    UNet  unigen.models.UNet           vs diffusers UNet2DModel             (scale-shift ResBlocks, attention)
    ViT   unigen.models.ViT            vs transformers ViTForImageClassification
    text  unigen.models.TextTransformer vs transformers LlamaForCausalLM    (causal, tied head)

Each pair is built with the configuration mapping that the weight-ported parity tests in tests/models use, so
both sides compute the same function shape for shape (the parameter counts are printed; diffusers' DiT keeps a
copy of the noise/class embedder in every block, the only difference). Both sides use the same loss, the same
batch and, for bf16, the same `torch.autocast("cpu", bfloat16)`. Our optimizer is the one `unigen.train.fit`
builds (`make_optimizer`), the references' is `torch.optim.AdamW(model.parameters())` as in diffusers' training
examples. The references run with their library defaults (SDPA attention in all four). Gradient clipping and
EMA, which `fit` adds, are left out on both sides.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.harness import Case
from unigen.config import TrainConfig
from unigen.models import DiT, TextTransformer, UNet, ViT, dit_config, unet_config, vit_config
from unigen.models.text import TextTransformerConfig, text_config
from unigen.models.unet import _attn_resolutions
from unigen.train.optim import make_optimizer

BATCH = 64
VOCAB = 512          # a small BPE vocabulary (the bundled text data's scale)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ pairs
# Each builder returns (ours, ref, batch, fwd_ours, fwd_ref): fwd_*(model, batch) -> scalar loss.

def dit_pair(size: str, batch: int):
    import diffusers
    if size == "tiny":   # MNIST: 28x28x1, patch 4 -> 49 tokens
        cfg = dit_config("tiny", image_size=28, channels=1, patch=4, num_classes=10)
    else:                # DiT-S/4 on 32x32x4 latents -> 64 tokens
        cfg = dit_config("S", image_size=32, channels=4, patch=4, num_classes=10)
    ours = DiT(cfg)
    ref = diffusers.DiTTransformer2DModel(
        num_attention_heads=cfg.heads, attention_head_dim=cfg.dim // cfg.heads, in_channels=cfg.channels,
        out_channels=cfg.channels, num_layers=cfg.depth, sample_size=cfg.image_size, patch_size=cfg.patch,
        num_embeds_ada_norm=cfg.num_classes, norm_eps=1e-6)
    g = torch.Generator().manual_seed(0)
    S, C = cfg.image_size, cfg.channels
    data = dict(x=torch.randn(batch, C, S, S, generator=g), c=torch.rand(batch, generator=g) * 999,
                y=torch.randint(0, 10, (batch,), generator=g), target=torch.randn(batch, C, S, S, generator=g))
    return (ours, ref, data, lambda m, b: F.mse_loss(m(b["x"], b["c"], b["y"]), b["target"]),
            lambda m, b: F.mse_loss(m(b["x"], timestep=b["c"], class_labels=b["y"]).sample, b["target"]))


def unet_pair(size: str, batch: int):
    import diffusers
    if size == "tiny":   # MNIST 28x28x1, widths (32, 64, 64), 1 block per level
        cfg = unet_config("tiny", channels=1, image_size=28, num_classes=10)
    else:                # CIFAR 32x32x3, widths (64, 128, 128), 2 blocks per level, attention at 16 and 8
        cfg = unet_config("small", channels=3, image_size=32, num_classes=10)
    ours = UNet(cfg)
    attn_at = _attn_resolutions(cfg)
    sides = [cfg.image_size // 2 ** i for i in range(len(cfg.mults))]
    ref = diffusers.UNet2DModel(
        sample_size=cfg.image_size, in_channels=cfg.channels, out_channels=cfg.channels,
        down_block_types=tuple("AttnDownBlock2D" if s in attn_at else "DownBlock2D" for s in sides),
        up_block_types=tuple("AttnUpBlock2D" if s in attn_at else "UpBlock2D" for s in reversed(sides)),
        block_out_channels=tuple(cfg.base_width * m for m in cfg.mults), layers_per_block=cfg.num_res_blocks,
        attention_head_dim=cfg.head_dim, norm_num_groups=cfg.norm_groups, attn_norm_num_groups=cfg.norm_groups,
        resnet_time_scale_shift="scale_shift", num_class_embeds=cfg.num_classes + 1, flip_sin_to_cos=True,
        freq_shift=0)
    g = torch.Generator().manual_seed(0)
    S, C = cfg.image_size, cfg.channels
    data = dict(x=torch.randn(batch, C, S, S, generator=g), c=torch.rand(batch, generator=g) * 999,
                y=torch.randint(0, 11, (batch,), generator=g), target=torch.randn(batch, C, S, S, generator=g))
    return (ours, ref, data, lambda m, b: F.mse_loss(m(b["x"], b["c"], b["y"]), b["target"]),
            lambda m, b: F.mse_loss(m(b["x"], b["c"], class_labels=b["y"]).sample, b["target"]))


def vit_pair(size: str, batch: int):
    import transformers
    if size == "tiny":   # MNIST 28x28x1, patch 4 -> 49 patches + CLS
        cfg = vit_config("tiny", image_size=28, channels=1, patch=4, num_classes=10, norm_eps=1e-12)
    else:                # ViT-S/4 on CIFAR 32x32x3 -> 64 patches + CLS
        cfg = vit_config("S", image_size=32, channels=3, patch=4, num_classes=10, norm_eps=1e-12)
    ours = ViT(cfg)
    ref = transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=cfg.image_size, patch_size=cfg.patch, num_channels=cfg.channels, hidden_size=cfg.dim,
        num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads, intermediate_size=int(cfg.mlp_ratio * cfg.dim),
        hidden_act="gelu", layer_norm_eps=cfg.norm_eps, qkv_bias=True, num_labels=cfg.num_classes))
    g = torch.Generator().manual_seed(0)
    S, C = cfg.image_size, cfg.channels
    data = dict(x=torch.randn(batch, C, S, S, generator=g), y=torch.randint(0, 10, (batch,), generator=g))
    return (ours, ref, data, lambda m, b: F.cross_entropy(m(b["x"]), b["y"]),
            lambda m, b: F.cross_entropy(m(pixel_values=b["x"]).logits, b["y"]))


def text_pair(size: str, batch: int):
    import transformers
    if size == "tiny":   # the "tiny" preset: width 128, 2 blocks, 2 heads of 64; 128 tokens
        cfg, seq_len = text_config("tiny", VOCAB, causal=True, norm_eps=1e-5), 128
    else:                # DiT-S-like: width 384, 12 blocks, 6 heads of 64; 64 tokens (a step is seconds here)
        cfg = TextTransformerConfig(vocab_size=VOCAB, dim=384, depth=12, n_heads=6, causal=True, norm_eps=1e-5)
        seq_len = 64
    ours = TextTransformer(cfg)
    ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.hidden(), num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads, rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_base, tie_word_embeddings=True, max_position_embeddings=seq_len,
        attention_bias=False, mlp_bias=False))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (batch, seq_len + 1), generator=g)
    data = dict(x=ids[:, :-1], y=ids[:, 1:])

    def ce(logits, y):
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    return (ours, ref, data, lambda m, b: ce(m(b["x"]), b["y"]),
            lambda m, b: ce(m(input_ids=b["x"], use_cache=False).logits, b["y"]))


PAIRS = {"dit": dit_pair, "unet": unet_pair, "vit": vit_pair, "text": text_pair}


# ------------------------------------------------------------------------------------------------ steps
def train_step(model: torch.nn.Module, fwd, batch: dict, bf16: bool, optimizer=None):
    """One closure: forward (under bf16 autocast if asked) + backward + optimizer step (default: torch's AdamW)."""
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def train_case(kind: str, size: str, bf16: bool, batch: int = BATCH, repeats: int | None = None) -> Case:
    info: dict = {}

    def setup():
        torch.manual_seed(0)
        ours, ref, data, f_ours, f_ref = PAIRS[kind](size, batch)
        info["params"] = f"{n_params(ours) / 1e6:.2f}M / {n_params(ref) / 1e6:.2f}M"
        info["batch"] = batch
        return (train_step(ours, f_ours, data, bf16, make_optimizer(ours, TrainConfig(lr=1e-4))),
                train_step(ref, f_ref, data, bf16))

    return Case("train", f"{kind} {size} {'bf16' if bf16 else 'fp32'}", setup, items=batch, info=info,
                flops=True, dtype="bf16" if bf16 else "fp32", repeats=repeats)


def cases(quick: bool = False) -> list[Case]:
    """Tiny configs with the runner's repeats; the DiT-S-like configs with 3 (a step takes seconds here)."""
    if quick:
        return [train_case("dit", "tiny", False, batch=8)]
    out = []
    for kind in PAIRS:
        for size in ("tiny", "small"):
            for bf16 in (False, True):
                out.append(train_case(kind, size, bf16, repeats=None if size == "tiny" else 3))
    return out
