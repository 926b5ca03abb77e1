"""Benchmarks: the runner's quick mode runs end to end, and the timing/report helpers and the matmul attention
path that the benchmarks led to (unigen.nn.attention.attention_matmul) agree with independent references."""
import statistics
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds `benchmarks/`

from benchmarks.harness import Case, interleave, peak_rss_mib, quartiles, run_case  # noqa: E402
from benchmarks.report import markdown  # noqa: E402
from unigen.nn.attention import Attention, attention_matmul  # noqa: E402


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
    q, k, v = (t.requires_grad_() for t in _qkv(B=2, H=3, Hkv=3, T=5, S=5, D=8))
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


# ---- the matmul attention kernel (bf16 CPU training) against SDPA and an explicit per-head loop ----
def _qkv(B=2, H=4, Hkv=2, T=5, S=7, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, D, generator=g), torch.randn(B, Hkv, S, D, generator=g),
            torch.randn(B, Hkv, S, D, generator=g))


def test_attention_matmul_matches_sdpa_with_gqa_mask_and_bias():
    q, k, v = _qkv()
    mask = torch.rand(2, 1, 5, 7, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[..., 0] = True  # every row keeps a key (SDPA's NaN-free regime)
    bias = torch.randn(4, 5, 7)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.where(mask, bias, float("-inf")),
                                          enable_gqa=True)
    torch.testing.assert_close(attention_matmul(q, k, v, mask, bias), want, atol=1e-5, rtol=1e-5)


def test_attention_matmul_per_head_loop_and_empty_rows():
    q, k, v = _qkv(H=2, Hkv=1)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[2] = False  # query 2 may attend to nothing: zeros out, zero gradients, no NaN
    q.requires_grad_(True)
    out = attention_matmul(q, k, v, mask)
    for b in range(2):
        for h in range(2):
            s = q[b, h] @ k[b, 0].T / 8 ** 0.5
            p = torch.softmax(s.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0)
            torch.testing.assert_close(out[b, h], p @ v[b, 0], atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.equal(q.grad[:, :, 2], torch.zeros_like(q.grad[:, :, 2]))


def test_attention_module_bf16_training_path_is_as_accurate_as_the_fused_kernel(monkeypatch):
    """Under bf16 autocast with gradients, Attention takes the matmul path. Against the float32 truth, its output
    and weight gradient are within twice the error of torch's fused kernel run the same way (forced by
    MATMUL_ATTN_MAX_KEYS = 0)."""
    import unigen.nn.attention as A
    torch.manual_seed(0)
    attn = Attention(64, 4, 2)
    x = torch.randn(3, 20, 64)
    calls = []
    monkeypatch.setattr(A, "attention_matmul", lambda *a, **k: calls.append(1) or attention_matmul(*a, **k))

    def run(bf16: bool):
        attn.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = attn(x, is_causal=True)
        y.float().square().sum().backward()
        return y.float().detach(), attn.qkv.weight.grad.clone()

    y_true, g_true = run(False)
    assert calls == []  # float32 stays on the fused kernel
    y_mm, g_mm = run(True)
    assert calls == [1]
    monkeypatch.setattr(A, "MATMUL_ATTN_MAX_KEYS", 0)
    y_fused, g_fused = run(True)
    assert calls == [1]
    for mm, fused, true in ((y_mm, y_fused, y_true), (g_mm, g_fused, g_true)):
        err_mm, err_fused = (mm - true).abs().max(), (fused - true).abs().max()
        assert 0 < err_mm <= 2 * err_fused
