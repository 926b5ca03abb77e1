"""Recurrent networks measured (benchmarks/rnn.md): text LMs at equal parameters and equal CPU time, the adding
problem and the copy task at growing lengths, and torch's fused kernel against the written-out cells.

    python -m benchmarks.rnn text  --out /tmp/rnn --budget 150      # bits/byte of transformer / LSTM / GRU / RNN
    python -m benchmarks.rnn adding --steps 1500 --lengths 25,50,100,200
    python -m benchmarks.rnn copy   --steps 1500 --lengths 5,10,20,40
    python -m benchmarks.rnn speed

Every process runs on one torch thread (the machine is shared); time budgets are CPU seconds of this process
(time.process_time), which other jobs on the machine inflate far less than wall time.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unigen.config import apply_overrides
from unigen.data import load as load_data
from unigen.families.discrete_diffusion.network import unwrap
from unigen.models.rnn import RecurrentState
from unigen.nn.recurrent import make_recurrent
from unigen.registry import get_preset
from unigen.run import evaluate, load, train

TEXT_MODELS = {  # row key: (preset, overrides); every recurrent width is matched to text-ar's parameter count
    "transformer": ("text-ar", []),
    "lstm": ("text-lstm", []),
    "lstm-carry": ("text-lstm", ["model.carry_state=true"]),
    "gru": ("text-lstm", ["model.backbone=gru"]),
    "rnn_tanh": ("text-lstm", ["model.backbone=rnn_tanh"]),
}
QUIET = ["train.progress=false", "train.ckpt_every=1000000", "train.log_every=50"]


# ------------------------------------------------------------------------------------------------ text LMs
def _cpu_seconds_of_training(preset: str, extra: list[str], steps: int, out: Path) -> float:
    cfg = apply_overrides(get_preset(preset), QUIET + extra + [f"train.steps={steps}"])
    t0 = time.process_time()
    train(cfg, out, overwrite=True)
    return time.process_time() - t0


def calibrate(preset: str, extra: list[str], out: Path) -> float:
    """CPU seconds per training step: (time of 20 steps - time of 5 steps) / 15, fixed costs cancelling."""
    short = _cpu_seconds_of_training(preset, extra, 5, out / "cal")
    long = _cpu_seconds_of_training(preset, extra, 20, out / "cal")
    return max(long - short, 1e-3) / 15


@torch.no_grad()
def stream_bits_per_byte(run: Path) -> float:
    """A recurrent LM reading the whole test split as one stream from BOS, its state carried from window to window
    (how RNN LMs are usually scored): bits per byte."""
    lm = unwrap(load(run))
    cfg = apply_overrides(get_preset("text-lstm"), [])
    cfg.data = type(cfg.data)(**json.loads((run / "config.json").read_text())["data"])
    data = load_data(cfg.data, "test")
    ids = data.batch(torch.arange(len(data)))["ids"]  # (S, T)
    cache, nats, prev = RecurrentState(1), 0.0, torch.tensor([[lm.bos_id]])
    for row in ids:
        x = torch.cat([prev, row[None]], dim=1)  # (1, T + 1)
        logits = lm(x[:, :-1], cache=cache).double()
        logits[..., lm.mask_id] = float("-inf")
        nats -= torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None]).sum().item()
        prev = row[None, -1:]
    n_bytes = sum(len(data.tokenizer.decode(r).encode("utf-8")) for r in ids.tolist())
    return nats / n_bytes / math.log(2)


def unigram_bits_per_byte() -> float:
    """The trivial baseline: byte frequencies of the training split, scored on the test split."""
    cfg = get_preset("text-lstm")
    tr, te = (load_data(cfg.data, s).batch(torch.arange(len(load_data(cfg.data, s))))["ids"].flatten()
              for s in ("train", "test"))
    counts = Counter(tr.tolist())
    n = len(tr)
    return -sum(math.log2((counts[b] + 1) / (n + 256)) for b in te.tolist()) / len(te)


def text(out: Path, budget: float, only: list[str]) -> list[dict]:
    rows = []
    for name, (preset, extra) in TEXT_MODELS.items():
        if only and name not in only:
            continue
        per_step = calibrate(preset, extra, out)
        steps = max(60, round(budget / per_step))
        run = out / name
        cpu = _cpu_seconds_of_training(preset, extra, steps, run)
        m = evaluate(run)
        lm = unwrap(load(run))
        row = {"model": name, "params": sum(p.numel() for p in lm.parameters() if p.requires_grad),
               "width": lm.net.cfg.dim if hasattr(lm.net.cfg, "dim") else lm.net.cfg.hidden, "steps": steps,
               "cpu_s_per_step": per_step,
               "train_cpu_s": cpu, "bits_per_byte": m["bits_per_byte"], "se_nats": m["se"],
               "stream_bits_per_byte": stream_bits_per_byte(run) if preset == "text-lstm" else None}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------- adding problem, copy task
class Readout(nn.Module):
    """A one-layer recurrent network and a linear readout of its outputs."""

    def __init__(self, cell: str, n_in: int, hidden: int, n_out: int):
        super().__init__()
        self.rnn = make_recurrent(cell, n_in, hidden, 1, batch_first=True,
                                  forget_bias=1.0 if cell == "lstm" else None)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.out(self.rnn(x)[0])  # (B, T, n_out)


def adding_batch(B: int, T: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Hochreiter & Schmidhuber 1997 (exp. 4) as Le et al. 2015 state it: values U[0, 1], one marker in each
    half; the target is the sum of the two marked values. Predicting 1 gives MSE Var(u1 + u2) = 1/6."""
    v = torch.rand(B, T, generator=g)
    m = torch.zeros(B, T)
    half = T // 2
    m[torch.arange(B), torch.randint(0, half, (B,), generator=g)] = 1
    m[torch.arange(B), torch.randint(half, T, (B,), generator=g)] = 1
    return torch.stack([v, m], dim=-1), (v * m).sum(1)  # (B, T, 2), (B,)


def copy_batch(B: int, T: int, g: torch.Generator, n_sym: int = 8, k: int = 10):
    """The copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016, sec. 4.1): k symbols from 1..n_sym,
    T - 1 blanks (0), a delimiter (n_sym + 1), k blanks; the target is blank everywhere but the last k steps,
    which repeat the symbols. Memoryless baseline: k log(n_sym) / (T + 2k) nats per step."""
    s = torch.randint(1, n_sym + 1, (B, k), generator=g)
    x = torch.zeros(B, T + 2 * k, dtype=torch.long)
    x[:, :k], x[:, k + T - 1] = s, n_sym + 1
    y = torch.zeros_like(x)
    y[:, -k:] = s
    return F.one_hot(x, n_sym + 2).float(), y


COPY = {"n_sym": 8, "k": 10}  # copy task: alphabet size and symbols to recall (Arjovsky et al.: 8 and 10)


def train_toy(task: str, cell: str, T: int, steps: int, hidden: int, seed: int = 0, lr: float = 1e-3) -> dict:
    """Adam (lr, clip 1) on fresh batches of 64; scored on 1000 fresh sequences."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n_in, n_out = (2, 1) if task == "adding" else (COPY["n_sym"] + 2, COPY["n_sym"] + 1)
    model = Readout(cell, n_in, hidden, n_out)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.process_time()
    for _ in range(steps):
        loss = _toy_loss(task, model, T, 64, g)[0]
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    with torch.no_grad():
        loss, score = _toy_loss(task, model, T, 1000, torch.Generator().manual_seed(10_000 + seed))
    return {"task": task, "cell": cell, "T": T, "steps": steps, "hidden": hidden, "lr": lr, "loss": loss.item(),
            "score": score, "cpu_s": time.process_time() - t0, **(COPY if task == "copy" else {})}


def _toy_loss(task: str, model: nn.Module, T: int, B: int, g: torch.Generator):
    if task == "adding":
        x, y = adding_batch(B, T, g)
        mse = F.mse_loss(model(x)[:, -1, 0], y)
        return mse, mse.item()
    k = COPY["k"]
    x, y = copy_batch(B, T, g, **COPY)
    logits = model(x)  # (B, T + 2k, n_sym + 1)
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    acc = (logits[:, -k:].argmax(-1) == y[:, -k:]).float().mean().item()  # the recalled symbols
    return ce, acc


# ------------------------------------------------------------------------------------------------- speed
def speed(reps: int = 5) -> list[dict]:
    """Torch's kernel against the written-out cells, forward + backward, interleaved in this process."""
    rows = []
    for cell in ("lstm", "gru", "rnn_tanh"):
        m = make_recurrent(cell, 444, 444, 2, batch_first=True)
        x = torch.randn(16, 129, 444)
        times = {"torch": [], "cells": []}
        for r in range(reps + 1):
            for impl in ("torch", "cells"):
                m.impl = impl
                t0 = time.perf_counter()
                m(x)[0].sum().backward()
                if r:  # the first round warms up
                    times[impl].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"cell": cell, "torch_s": med["torch"], "cells_s": med["cells"], "ratio": med["cells"] / med["torch"]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["text", "adding", "copy", "speed", "unigram"])
    p.add_argument("--out", default="/tmp/rnn_bench", help="run directories and results.json")
    p.add_argument("--budget", type=float, default=150.0, help="text: CPU seconds of training per model")
    p.add_argument("--only", default="", help="text: comma-separated row keys (transformer, lstm, lstm-carry, gru, "
                                              "rnn_tanh)")
    p.add_argument("--steps", type=int, default=1500, help="adding/copy: training steps per run")
    p.add_argument("--lengths", default="25,50,100,200", help="adding/copy: comma-separated T")
    p.add_argument("--cells", default="rnn_tanh,lstm,gru", help="adding/copy: cells")
    p.add_argument("--hidden", type=int, default=64, help="adding/copy: hidden units")
    p.add_argument("--lr", type=float, default=1e-3, help="adding/copy: Adam learning rate")
    p.add_argument("--copy-k", type=int, default=10, help="copy: symbols to recall")
    p.add_argument("--copy-symbols", type=int, default=8, help="copy: alphabet size")
    a = p.parse_args()
    torch.set_num_threads(1)
    COPY.update(n_sym=a.copy_symbols, k=a.copy_k)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.what == "text":
        rows = text(out, a.budget, [s for s in a.only.split(",") if s])
    elif a.what == "speed":
        rows = speed()
    elif a.what == "unigram":
        rows = [{"unigram_bits_per_byte": unigram_bits_per_byte()}]
        print(rows[0])
    else:
        rows = []
        for T in (int(t) for t in a.lengths.split(",")):
            for cell in a.cells.split(","):
                rows.append(train_toy(a.what, cell, T, a.steps, a.hidden, lr=a.lr))
                print(json.dumps(rows[-1]), flush=True)
    with open(out / f"{a.what}.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
