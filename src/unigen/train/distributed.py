"""Data parallelism for `fit()`: process setup, gradient averaging, and global-batch losses.

`fit()` does not wrap the model in DistributedDataParallel. Every process runs the loss on its own slice of the
global batch; then, per objective, `average_gradients` all-reduces that objective's gradients (one flat buffer per
dtype and bucket), which is what DDP does, but it also holds when an objective's backward leaves some parameters
without a gradient (a discriminator's during the generator step, a branch used only by some batches), when a loss
calls submodules rather than the model's forward, or runs a network several times (D(real), D(fake)).
Buffers (BatchNorm statistics) follow rank 0: `broadcast_from_rank0` before every loss call, as DDP's
`broadcast_buffers` does before every forward.

Global-batch losses (CLIP's InfoNCE, SigLIP) need every process's features: `all_gather_with_grad` below.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

BUCKET_NUMEL = 1 << 24  # elements per all-reduce (64 MB of fp32): bounds the extra memory of the flat buffer


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every process's `x` (B, ...) concatenated in rank order: (world * B, ...), rows rank*B .. rank*B + B - 1
    are this process's own; `x` itself when not distributed. Differentiable (torch.distributed.nn.functional
    .all_gather): the gradient reaching this process's `x` is the sum, over all processes, of the gradients of
    their losses with respect to these rows. Every process must call it with the same B.

    How to normalise the loss so that data parallelism gives the global-batch gradient. `fit()` averages
    parameter gradients over processes (as DDP does), so the averaged gradient is d(sum_r L_r)/d(theta) / world.
    That equals dL/d(theta) for the loss L of one process at the global batch world*B exactly when
    sum_r L_r = world * L. For a loss that is a mean over rows (CLIP's symmetric InfoNCE: each row is a query
    scored against every gathered candidate), write per process what one process would write for its own rows:

        img_all, txt_all = all_gather_with_grad(img), all_gather_with_grad(txt)        # (world*B, D)
        logits = scale * img @ txt_all.T                                               # (B, world*B)
        target = rank * B + arange(B)                                                  # my rows' positives
        L_r = (cross_entropy(logits, target) + cross_entropy(scale * txt @ img_all.T, target)) / 2   # mean over B

    Then sum_r L_r = (1/B) * sum over all world*B rows = world * L: the gradients match those of one process at
    batch world*B. (Computing the whole (world*B)^2 loss on every process also gives sum_r L_r = world * L, at
    world times the cost.) Do not divide by world yourself, and do not average over world*B rows per process:
    either would scale the gradients by 1/world.
    """
    _, world = rank_and_world()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(x), dim=0)


def mean_across(t: torch.Tensor) -> torch.Tensor:
    """The mean of `t` over processes (a copy); `t` itself when not distributed."""
    _, world = rank_and_world()
    if world == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / world


def average_gradients(params: list[nn.Parameter]) -> None:
    """Replace each `p.grad` by its mean over processes (DDP's gradient: sum over processes of grad / world).

    A parameter without a gradient on any process keeps `grad=None` (AdamW skips it, as it does in one process);
    one with a gradient on some processes only counts as zeros on the others, so every process takes the same step.
    """
    _, world = rank_and_world()
    if world == 1 or not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
    dist.all_reduce(has)  # (P,) how many processes hold a gradient for each parameter
    live = [p for p, n in zip(params, has.tolist()) if n > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets([p.grad for p in live]):
        flat = _flatten_dense_tensors(bucket).div_(world)
        dist.all_reduce(flat)
        for g, avg in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            g.copy_(avg)


def broadcast_from_rank0(tensors: Iterable[torch.Tensor]) -> None:
    """Overwrite `tensors` in place with rank 0's values (parameters at start, buffers before each loss call)."""
    _, world = rank_and_world()
    if world == 1:
        return
    with torch.no_grad():
        for bucket in _buckets([t for t in tensors if t.numel()]):
            flat = _flatten_dense_tensors(bucket)
            dist.broadcast(flat, src=0)
            for t, v in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                t.copy_(v)


def _buckets(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Tensors grouped by (dtype, device) into runs of at most BUCKET_NUMEL elements (one oversized tensor alone)."""
    out, open_buckets = [], {}  # (dtype, device) -> (tensors, numel)
    for t in tensors:
        key = (t.dtype, t.device)
        bucket, n = open_buckets.get(key, ([], 0))
        if bucket and n + t.numel() > BUCKET_NUMEL:
            out.append(bucket)
            bucket, n = [], 0
        bucket.append(t)
        open_buckets[key] = (bucket, n + t.numel())
    return out + [bucket for bucket, _ in open_buckets.values()]


def close_process_group(wait_for_others: bool = True) -> bool:
    """Destroy the process group, if one is up; True if there was one. `wait_for_others` first waits at a barrier so
    no rank tears down while another still talks to it; pass False after an error, when the other ranks may never
    arrive. A process that had a group should then leave with `exit_now`: even after this, a gloo rank aborted at
    interpreter teardown ("terminate called without an active exception", SIGABRT) in about 1 run in 12 here, after
    all its work was done, and torchrun then failed the whole job (pytorch/pytorch#179291 describes the teardown race)."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    if wait_for_others:
        dist.barrier()
    dist.destroy_process_group()
    return True


def exit_now(code: int) -> None:
    """Leave without interpreter teardown (see `close_process_group`): flush the standard streams, then os._exit.
    Every file unigen writes is already closed and fsynced by then (unigen.io's atomic writes, the loop's logger)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def make_accelerator():
    """An Accelerator for this process (it initialises the process group under torchrun: gloo on CPU, NCCL on
    GPU). On CPU it must be told `cpu=True`, or under torchrun every rank would train alone without gradient sync
    and without an error; we check that trap explicitly."""
    from accelerate import Accelerator
    acc = Accelerator(cpu=not torch.cuda.is_available())
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    if world_env != acc.num_processes:
        raise RuntimeError(f"WORLD_SIZE={world_env} but Accelerate sees {acc.num_processes} process(es): "
                           "gradients would not be synchronised")
    return acc
