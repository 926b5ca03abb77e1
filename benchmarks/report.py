"""Markdown tables of benchmark results: one table per group, ratio = ref median / our median (> 1: we are faster)."""
from __future__ import annotations

from benchmarks.harness import Result, quartiles

TITLES = {
    "peak": "Matmul peak of this machine",
    "train": "Training step (forward + backward + AdamW)",
    "compile": "torch.compile of our training step (ref column = our eager step)",
    "overhead": "Sampler overhead with a trivial denoiser",
    "e2e": "End-to-end sampling, per image",
    "textgen": "Text generation throughput",
    "kernels": "Kernel choices (ours / ref = the options in the notes)",
}


def _ms(xs: list[float]) -> str:
    q1, med, q3 = quartiles(xs)
    return f"{med * 1e3:.1f} [{q1 * 1e3:.1f}, {q3 * 1e3:.1f}]"


def _rate(r: Result, xs: list[float]) -> str:
    med, c = quartiles(xs)[1], r.case
    if c.unit == "token":
        return f"{c.items / med:.0f} tok/s"
    if c.unit == "image":
        return f"{med / c.items * 1e3:.1f} ms/img"
    if c.unit == "nfe":
        return f"{med / c.items * 1e6:.0f} us/NFE"
    if c.unit == "call":
        return f"{1 / med:.1f} calls/s"
    return f"{c.items / med:.1f} samples/s"


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _flops(flops: int | None, xs: list[float], peak: float | None) -> str:
    if not flops or not xs:
        return "-"
    rate = flops / quartiles(xs)[1]
    pct = f" ({100 * rate / peak:.0f}%)" if peak else ""
    return f"{rate / 1e9:.0f}{pct}"


def table(results: list[Result], peaks: dict[str, float]) -> str:
    """One markdown table for results of one group."""
    flops = any(r.case.flops for r in results)
    head = ["benchmark", "ours ms [IQR]", "ref ms [IQR]", "ref/ours", "ours rate", "ref rate", "peak MiB ours/ref"]
    if flops:
        head += ["GFLOP/call", "matmul GFLOP/s alongside", "ours GFLOP/s (% of it)", "ref GFLOP/s (% of it)"]
    head += ["n", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        c = r.case
        ratio = f"**{quartiles(r.ref)[1] / quartiles(r.ours)[1]:.2f}**" if r.ref else "-"
        row = [c.name, _ms(r.ours), _ms(r.ref) if r.ref else "-", ratio, _rate(r, r.ours),
               _rate(r, r.ref) if r.ref else "-", f"{_mib(r.ours_mib)} / {_mib(r.ref_mib)}"]
        if flops:
            peak = quartiles(r.matmul)[1] if r.matmul else peaks.get(c.dtype)
            row += [f"{r.ours_flops / 1e9:.1f}" if r.ours_flops else "-", f"{peak / 1e9:.0f}" if peak else "-",
                    _flops(r.ours_flops, r.ours, peak), _flops(r.ref_flops, r.ref, peak)]
        row += [str(len(r.ours)), ", ".join(f"{k} {v}" for k, v in c.info.items())]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def peak_table(peaks: dict[str, float]) -> str:
    lines = ["| dtype | best GFLOP/s (2048^3 matmul) |", "|---|---|"]
    lines += [f"| {k} | {v / 1e9:.0f} |" for k, v in peaks.items()]
    return "\n".join(lines)


def markdown(results: list[Result], peaks: dict[str, float], header: str) -> str:
    """The whole report: header, the peak table, then one table per group in the order first seen."""
    out = [header]
    if peaks:
        out += [f"### {TITLES['peak']}", "", peak_table(peaks), ""]
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.case.group, []).append(r)
    for g, rs in groups.items():
        out += [f"### {TITLES.get(g, g)}", "", table(rs, peaks), ""]
    return "\n".join(out)
