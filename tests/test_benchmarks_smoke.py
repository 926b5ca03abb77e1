"""Benchmarks: the runner's quick mode runs end to end, and the timing/report helpers agree with independent
references."""
import statistics
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds `benchmarks/`

from benchmarks.harness import Case, interleave, peak_rss_mib, quartiles, run_case  # noqa: E402
from benchmarks.report import markdown  # noqa: E402


def test_quartiles_match_statistics_and_interleave_alternates():
    xs = [5.0, 1.0, 4.0, 2.0, 3.0]
    q1, med, q3 = quartiles(xs)
    assert med == statistics.median(xs) and (q1, q3) == (2.0, 4.0)
    calls = []
    t_ours, t_ref = interleave(lambda: calls.append("o"), lambda: calls.append("r"), repeats=3, warmup=1)
    assert calls == ["o", "r"] * 4 and len(t_ours) == len(t_ref) == 3


def test_peak_rss_sees_a_large_allocation():
    n = 64 * 2**20 // 4  # 64 MiB of float32, touched
    assert peak_rss_mib(lambda: torch.ones(n).sum()) > 48
    assert peak_rss_mib(lambda: None) < 16


def test_run_case_and_report_without_a_reference():
    case = Case("overhead", "toy", lambda: (lambda: torch.ones(64, 64) @ torch.ones(64, 64), None),
                info={"params": "1 / 1"})
    res = run_case(case, repeats=2)
    assert res.ref == [] and len(res.ours) == 2 and res.ours_mib is not None
    text = markdown([res], {}, "## header")
    assert "| toy |" in text and "params 1 / 1" in text


@pytest.mark.slow  # FlopCounterMode's first use costs several seconds of imports
def test_run_case_counts_matmul_flops_and_times_a_matmul_alongside():
    case = Case("train", "toy", lambda: (lambda: torch.ones(64, 64) @ torch.ones(64, 64), None), flops=True)
    res = run_case(case, repeats=2)
    assert res.ours_flops == 2 * 64 ** 3 and len(res.matmul) == 2 and min(res.matmul) > 0
    assert "matmul GFLOP/s alongside" in markdown([res], {"fp32": 1e9}, "## header")
    # attention, forward + backward: 2 products forward and 4 backward of 2 B H T S D FLOPs each, whichever kernel
    from benchmarks.harness import count_flops
    from unigen.nn.attention import attention_matmul
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g, requires_grad=True) for _ in range(3))
    want = 6 * 2 * 2 * 3 * 5 * 5 * 8
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()) == want
    assert count_flops(lambda: attention_matmul(q, k, v).sum().backward()) == want


def test_quick_runner_runs_one_tiny_benchmark(capsys):
    from benchmarks.__main__ import main
    text = main(["overhead", "--quick", "--repeats", "1", "--threads", "1", "--no-memory"])
    assert "euler 10 steps" in text and "ref/ours" in text
    with pytest.raises(SystemExit):
        main(["no-such-group"])


@pytest.mark.slow
def test_quick_runner_all_default_groups():
    from benchmarks.__main__ import main
    text = main(["--quick", "--repeats", "1", "--threads", "1"])
    for title in ("Training step", "Sampler overhead", "End-to-end", "Text generation"):
        assert title in text
