"""Timing, memory and FLOP measurement shared by every benchmark group.

A `Case` is one comparison: `ours()` and `ref()` each perform one unit of work (a training step, one sampling
run, ...). `run_case` calls them interleaved in one process (warm-up, then ours, ref, ours, ref, ...), so a load
spike from other processes on this shared machine hits both sides alike, and reports the median and the
inter-quartile range of each side and the ratio ref_median / our_median (> 1: unigen is faster).

Peak memory: Linux's VmHWM (the resident-set high-water mark in /proc/self/status) is reset through
/proc/self/clear_refs after glibc has returned freed heap to the kernel (malloc_trim), so "peak MiB" is the
largest growth of the resident set above what was resident before the measured work began. Where clear_refs is
not writable, a psutil sampling thread (1 ms) stands in.
"""
from __future__ import annotations

import ctypes
import gc
import os
import shlex
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

Fn = Callable[[], object]


@dataclass
class Case:
    """One side-by-side comparison. `setup()` returns (ours, ref) callables; ref may be None (no reference)."""

    group: str
    name: str
    setup: Callable[[], tuple[Fn, Fn | None]]
    items: int = 1                  # work items per call (images, tokens) for per-item numbers
    unit: str = "step"              # what one call is
    info: dict = field(default_factory=dict)   # extra columns (parameter counts, NFE, ...)
    flops: bool = False             # count FLOPs of one call of each side, and time a matmul alongside
    dtype: str = "fp32"             # the matmul precision of the work (fp32 | bf16), for the alongside matmul
    repeats: int | None = None      # overrides the runner's --repeats (e.g. few repeats for a slow config)


@dataclass
class Result:
    case: Case
    ours: list[float]
    ref: list[float]
    ours_flops: int | None = None
    ref_flops: int | None = None
    ours_mib: float | None = None
    ref_mib: float | None = None
    setup_s: float = 0.0
    matmul: list[float] = field(default_factory=list)  # FLOP/s of the alongside matmul, one per repeat


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3) by linear interpolation (numpy's default); a single value gives it three times."""
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[1], q[2]


def _timed(fn: Fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleave(ours: Fn, ref: Fn | None, repeats: int, warmup: int = 1,
               between: Fn | None = None) -> tuple[list[float], list[float]]:
    """Warm up both, then time ours, ref, ours, ref, ... `repeats` times each (calling `between()` after each
    pair, untimed here). Returns the two lists of seconds."""
    for _ in range(warmup):
        ours()
        if ref is not None:
            ref()
    t_ours, t_ref = [], []
    for _ in range(repeats):
        t_ours.append(_timed(ours))
        if ref is not None:
            t_ref.append(_timed(ref))
        if between is not None:
            between()
    return t_ours, t_ref


def _cpu_attention_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(q_shape, k_shape, v_shape)  # Q K^T and P V


def _cpu_attention_backward_flops(g_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    # the four product gradients; the fused kernel's recomputation of Q K^T is work, not model FLOPs, so the
    # fused and the matmul attention count the same
    return flop_counter.sdpa_backward_flop_count(g_shape, q_shape, k_shape, v_shape) - \
        flop_counter.bmm_flop((q_shape[0] * q_shape[1], q_shape[2], q_shape[3]),
                              (q_shape[0] * q_shape[1], q_shape[3], k_shape[2]))


# torch's FlopCounterMode knows the CUDA attention kernels but not the CPU one: without these the CPU fused
# attention would count as zero FLOPs
_CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flops,
}


def count_flops(fn: Fn) -> int:
    """Model FLOPs of one call as torch's FlopCounterMode counts them (matmuls, convolutions, attention)."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        fn()
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------------------ memory
_libc = None


def _trim() -> None:
    """Collect garbage and hand freed heap pages back to the kernel so that RSS growth means new memory."""
    global _libc
    gc.collect()
    try:
        _libc = _libc or ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
    except OSError:
        pass


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _can_reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


def peak_rss_mib(fn: Fn) -> float:
    """Peak growth of the resident set (MiB) while `fn()` runs, above the resident set just before it."""
    _trim()
    if _can_reset_hwm():  # VmHWM is now the current RSS
        base = _status_kib("VmRSS")
        fn()
        return max(_status_kib("VmHWM") - base, 0) / 1024
    import psutil  # fallback: sample the RSS from a thread
    proc, peak, done = psutil.Process(), [0], threading.Event()
    base = proc.memory_info().rss

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.001)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    try:
        fn()
    finally:
        done.set()
        th.join()
    return max(peak[0] - base, 0) / 2**20


# ------------------------------------------------------------------------------------------------ peak
def matmul_rate(dtype: torch.dtype, n: int = 2048) -> Callable[[], float]:
    """A function that runs one n x n x n matmul in `dtype` and returns its FLOP/s (2 n^3 / seconds)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return lambda: 2 * n ** 3 / _timed(lambda: a @ b)


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best achieved FLOP/s of an n x n x n matmul in `dtype`, after two warm-up calls."""
    rate = matmul_rate(dtype, n)
    for _ in range(2):
        rate()
    return max(rate() for _ in range(repeats))


def run_case(case: Case, repeats: int, warmup: int = 1, memory: bool = True) -> Result:
    """Set the case up, measure peak memory and FLOPs of one call per side (these double as the warm-up: `warmup`
    counts them), then time `repeats` interleaved calls per side; FLOP-counted cases also time a 2048^3 matmul
    after each pair, so that "% of peak" compares against the matmul rate under the same load."""
    t0 = time.perf_counter()
    ours, ref = case.setup()
    setup_s = time.perf_counter() - t0
    res = Result(case, [], [], setup_s=setup_s)
    if memory:
        res.ours_mib = peak_rss_mib(ours)
        res.ref_mib = peak_rss_mib(ref) if ref is not None else None
    if case.flops:
        res.ours_flops = count_flops(ours)
        res.ref_flops = count_flops(ref) if ref is not None else None
    done = int(memory) + int(case.flops)  # calls already made per side: they were the warm-up
    between = None
    if case.flops:  # the machine's matmul rate under the same load, measured between the timed pairs
        rate = matmul_rate(torch.bfloat16 if case.dtype == "bf16" else torch.float32)
        rate()
        between = lambda: res.matmul.append(rate())  # noqa: E731
    res.ours, res.ref = interleave(ours, ref, case.repeats or repeats, max(warmup - done, 0), between)
    return res


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (what `lscpu` prints as "Model name")."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def machine() -> str:
    """One line: CPU model, logical CPUs, torch threads, torch version, and the load average now (other jobs on
    the machine inflate absolute times)."""
    return (f"{cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")


def log(msg: str) -> None:
    """A timestamped progress line on stderr (the benchmark scripts' stdout stays clean)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start(prog: str, out: str, threads: int, argv: list[str] | None) -> tuple[Path, str]:
    """What every benchmark script does first: set its torch thread count, make its output folder, and return that
    folder with the command line that produced the results (quoted as a user would retype it)."""
    torch.set_num_threads(threads)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    args = sys.argv[1:] if argv is None else argv
    return folder, f"python -m {prog} " + " ".join(shlex.quote(a) for a in args)


def subset(parser, text: str, known, what: str) -> list[str]:
    """A comma-separated subset of `known` (e.g. `--phases encode,lm`); anything else is a parser error naming them."""
    picked = [s for s in text.split(",") if s]
    if bad := [s for s in picked if s not in known]:
        parser.error(f"unknown {what} {', '.join(bad)}; choose from {', '.join(known)}")
    return picked
