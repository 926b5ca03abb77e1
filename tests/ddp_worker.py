"""Run by tests/test_distributed.py under torchrun (and once without): `ddp_worker.py OUT_DIR BATCH`.

Rank 0 writes to OUT_DIR:
    regression.safetensors   weights after fit() with one loss
    gan.safetensors          weights after fit() with two objectives (tests/train/gan_toy.py: latents from the data,
                             grad_accum=2, a parameter that gets no gradient)
    clip_grads.safetensors   parameter gradients of a CLIP-style symmetric InfoNCE on gathered features
                             (`all_gather_with_grad`), after the loop's averaging; clip_local_grads: the same loss
                             without gathering (it must differ, or the check is vacuous)
    clip.safetensors         weights after fit() with that loss
    unused.json              `average_gradients` with a gradient on rank 0 only, and on no rank
"""
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unigen.config import TrainConfig
from unigen.train import all_gather_with_grad, fit
from unigen.train.checkpoint import atomic_save_safetensors
from unigen.train.distributed import average_gradients, close_process_group, exit_now, rank_and_world

sys.path.insert(0, str(Path(__file__).with_name("train")))
import gan_toy  # noqa: E402


class Regression:
    def __init__(self, n=512, d=8):
        g = torch.Generator().manual_seed(0)
        self.tensors = {"x": torch.randn(n, d, generator=g)}
        self.tensors["y"] = torch.sin(self.tensors["x"] @ torch.randn(d, 1, generator=g))

    def __len__(self):
        return 512

    def batch(self, idx):
        return {k: v[idx] for k, v in self.tensors.items()}


def loss(model, batch):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean()


class Pairs:
    """Paired "images" (6-D) and "captions" (5-D), related by a fixed linear map plus noise."""

    def __init__(self, n=256):
        g = torch.Generator().manual_seed(1)
        img = torch.randn(n, 6, generator=g)
        self.tensors = {"img": img, "txt": img @ torch.randn(6, 5, generator=g) + 0.3 * torch.randn(n, 5, generator=g)}

    def __len__(self):
        return len(self.tensors["img"])

    def batch(self, idx):
        return {k: v[idx] for k, v in self.tensors.items()}


class ToyCLIP(nn.Module):
    def __init__(self):
        super().__init__()
        self.img, self.txt = nn.Linear(6, 8), nn.Linear(5, 8)
        self.logit_scale = nn.Parameter(torch.tensor(2.3))


def clip_loss(model, batch, gather=True):
    """Symmetric InfoNCE, normalised as unigen.train.distributed.all_gather_with_grad documents: my B rows
    against all world*B candidates, mean over my rows."""
    img, txt = F.normalize(model.img(batch["img"]), dim=-1), F.normalize(model.txt(batch["txt"]), dim=-1)  # (B, 8)
    rank, _ = rank_and_world()
    img_all, txt_all = (all_gather_with_grad(img), all_gather_with_grad(txt)) if gather else (img, txt)
    target = torch.arange(len(img)) + (rank * len(img) if gather else 0)
    scale = model.logit_scale.exp()
    return (F.cross_entropy(scale * img @ txt_all.T, target) + F.cross_entropy(scale * txt @ img_all.T, target)) / 2


def clip_grads(b: int, gather: bool) -> dict[str, torch.Tensor]:
    rank, _ = rank_and_world()
    torch.manual_seed(0)
    model = ToyCLIP()
    clip_loss(model, Pairs().batch(torch.arange(rank * b, rank * b + b)), gather).backward()
    average_gradients(list(model.parameters()))
    return {k: p.grad for k, p in model.named_parameters()}


def unused_grads() -> dict:
    rank, world = rank_and_world()
    p, q = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    if rank == 0:
        p.grad = torch.ones(3)
    average_gradients([p, q])
    same = True
    if world > 1:
        seen = [torch.empty(3) for _ in range(world)]
        torch.distributed.all_gather(seen, p.grad)
        same = all(torch.equal(s, p.grad) for s in seen)
    return {"p": p.grad.tolist(), "same_on_every_rank": same, "q_is_none": q.grad is None}


def main(out: Path, b: int) -> None:
    results = {}
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
    fit(model, loss, Regression(), TrainConfig(steps=15, batch_size=b, lr=3e-2, ema_decay=0, grad_clip=0.5,
                                               progress=False))
    results["regression"] = model.state_dict()
    gan = gan_toy.make_model()
    fit(gan, gan_toy.objectives(), gan_toy.Blobs(), gan_toy.config(batch_size=b // 2))  # grad_accum=2
    results["gan"] = gan.state_dict()
    results["clip_grads"], results["clip_local_grads"] = clip_grads(b, True), clip_grads(b, False)
    torch.manual_seed(0)
    clip = ToyCLIP()
    fit(clip, clip_loss, Pairs(), TrainConfig(steps=10, batch_size=b, lr=1e-2, ema_decay=0, progress=False))
    results["clip"] = clip.state_dict()
    unused = unused_grads()
    if int(os.environ.get("RANK", "0")) == 0:
        for name, tensors in results.items():
            atomic_save_safetensors(tensors, out / f"{name}.safetensors")
        (out / "unused.json").write_text(json.dumps(unused))
    close_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
    exit_now(0)          # as the unigen CLI does after a distributed run: no interpreter teardown
