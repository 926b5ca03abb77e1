"""torch.compile (inductor, CPU) of our training step against our own eager step, with the compile time apart.

Not in the default run: compiling takes minutes on this machine. The "ref" column is our eager step, so the ratio
is the speed-up that compiling buys; `compile s` (in the notes) is the wall time of the first, compiling call.
"""
from __future__ import annotations

import copy
import time

import torch

from benchmarks.harness import Case
from benchmarks.train import BATCH, PAIRS, train_step


def compile_case(kind: str, size: str, bf16: bool, batch: int = BATCH) -> Case:
    info: dict = {}

    def setup():
        torch.manual_seed(0)
        ours, _, data, fwd, _ = PAIRS[kind](size, batch)
        compiled = torch.compile(copy.deepcopy(ours))
        step_c = train_step(compiled, fwd, data, bf16)
        t0 = time.perf_counter()
        step_c()
        info["compile s"] = f"{time.perf_counter() - t0:.0f}"
        return step_c, train_step(ours, fwd, data, bf16)

    return Case("compile", f"{kind} {size} {'bf16' if bf16 else 'fp32'} compiled", setup, items=batch, info=info,
                flops=True, dtype="bf16" if bf16 else "fp32")


def cases(quick: bool = False) -> list[Case]:
    return [compile_case("dit", "tiny", bf16) for bf16 in (False, True)]
