"""Kernel choices behind unigen's speed decisions, each measured against the alternative it replaced or declined.

    attention  `unigen.nn.attention.attention_matmul` (two matmuls and a softmax) vs torch's fused
               `scaled_dot_product_attention`, forward + backward, at the shapes our backbones train with and
               longer; this table is why bf16 CPU training with <= 256 keys takes the matmul path.
    adamw      torch's fused AdamW (`fused=True`) vs the default for-loop AdamW, one step over DiT-S/4's 32.5M
               parameters with random gradients (an option for `unigen.train.optim.make_optimizer`).
    groupnorm  GroupNorm forward + backward on channels_last vs contiguous activations (why the UNet stays
               channels-first by default: bf16 channels_last GroupNorm is several times slower here).
    precision  bf16 autocast vs fp32 for a matmul, a convolution and one training step of the mnist-fm UNet: why
               the presets say train.precision=auto (bf16 only where the CPU has bf16 units, train/precision.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.harness import Case
from unigen.nn.attention import attention_matmul

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def attention_case(B: int, H: int, T: int, D: int, dtype: str, causal: bool) -> Case:
    def setup():
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(B, T, H, D, generator=g).to(DTYPES[dtype]).transpose(1, 2).requires_grad_()
                   for _ in range(3))  # (B, H, T, D) views of (B, T, H, D), as Attention makes them
        grad = torch.randn(B, H, T, D, generator=g).to(DTYPES[dtype])
        mask = torch.ones(T, T, dtype=torch.bool).tril() if causal else None
        return (lambda: attention_matmul(q, k, v, mask).backward(grad),
                lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal).backward(grad))

    name = f"attention B{B} H{H} T{T} D{D} {dtype}{' causal' if causal else ''}"
    return Case("kernels", name, setup, unit="call", info={"ours": "matmul", "ref": "fused SDPA"})


def adamw_case() -> Case:
    def setup():
        from unigen.models import DiT, dit_config
        model = DiT(dit_config("S", image_size=32, channels=4, patch=4, num_classes=10))
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        fused = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        loop = torch.optim.AdamW(model.parameters(), lr=1e-4)
        return fused.step, loop.step

    return Case("kernels", "AdamW step, DiT-S/4 (32.5M)", setup, unit="call", info={"ours": "fused=True", "ref": "default"})


def groupnorm_case(shape: tuple[int, ...], groups: int, dtype: str) -> Case:
    def setup():
        g = torch.Generator().manual_seed(0)
        w, b = torch.ones(shape[1], requires_grad=True), torch.zeros(shape[1], requires_grad=True)
        x = torch.randn(shape, generator=g).to(DTYPES[dtype])
        grad = torch.randn(shape, generator=g).to(DTYPES[dtype])
        cl = torch.channels_last
        x_cl, grad_cl = x.contiguous(memory_format=cl).requires_grad_(), grad.contiguous(memory_format=cl)
        x = x.requires_grad_()
        return (lambda: F.group_norm(x_cl, groups, w, b).backward(grad_cl),
                lambda: F.group_norm(x, groups, w, b).backward(grad))

    return Case("kernels", f"GroupNorm {'x'.join(map(str, shape))} {dtype}", setup, unit="call",
                info={"ours": "channels_last", "ref": "contiguous"})


def precision_case(what: str) -> Case:
    """bf16 autocast ("ours") against fp32 ("ref") on the same inputs: the ratio is what train.precision=bf16 costs
    or saves on this machine (native_bf16 says whether it has bf16 matrix units)."""
    from unigen.train.precision import native_bf16

    def setup():
        g = torch.Generator().manual_seed(0)
        if what == "matmul":
            a, b = torch.randn(512, 512, generator=g), torch.randn(512, 512, generator=g)
            step = lambda: a @ b  # noqa: E731
        elif what == "conv":
            x, w = torch.randn(16, 32, 28, 28, generator=g), torch.randn(32, 32, 3, 3, generator=g)
            step = lambda: F.conv2d(x, w, padding=1)  # noqa: E731
        else:  # one optimisation step of the mnist-fm preset's UNet on a batch of 64
            from unigen.families.continuous_diffusion.task import TASK
            from unigen.registry import get_preset
            net = TASK.build(get_preset("mnist-fm"), {"shape": (1, 28, 28)})
            opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
            batch = {"x": torch.randn(64, 1, 28, 28, generator=g)}

            def step():
                opt.zero_grad()
                TASK.loss(net, batch).backward()
                opt.step()
        return (lambda: _autocast_bf16(step), step)

    return Case("kernels", f"bf16 autocast vs fp32: {what}", setup, unit="call",
                info={"ours": "bf16", "ref": "fp32", "native_bf16": native_bf16("cpu")})


def _autocast_bf16(step):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return step()


def cases(quick: bool = False) -> list[Case]:
    if quick:
        return [attention_case(2, 2, 16, 32, "bf16", False), precision_case("matmul")]
    out = [attention_case(64, 6, 64, 64, dt, False) for dt in DTYPES]          # DiT-S/4
    out += [attention_case(64, 2, 49, 32, dt, False) for dt in DTYPES]         # DiT/ViT tiny on MNIST
    out += [attention_case(64, 6, 128, 64, dt, True) for dt in DTYPES]         # text, 128 tokens
    out += [attention_case(16, 6, 256, 64, "bf16", True), attention_case(4, 6, 1024, 64, "bf16", True)]
    out += [adamw_case()]
    out += [groupnorm_case((64, 128, 16, 16), 32, dt) for dt in DTYPES]
    out += [precision_case(w) for w in ("matmul", "conv", "mnist-fm step")]
    return out
