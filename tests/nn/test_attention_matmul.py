"""The matmul attention path (unigen.nn.attention.attention_matmul, taken for bf16 CPU training, see BENCHMARKS.md)
against torch's fused SDPA and an explicit per-head loop."""
import torch
import torch.nn.functional as F

from unigen.nn.attention import Attention, attention_matmul


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


def test_attention_module_matmul_path_applies_the_bias_and_the_mask(monkeypatch):
    """bf16 training takes the matmul path: there the bias and the mask act as on the float32 fused path (a
    relative-position bias that did not reach the scores would leave the output within bf16 rounding of the unbiased
    one, so the biased and unbiased outputs are checked against each other too)."""
    import unigen.nn.attention as A
    torch.manual_seed(0)
    attn = Attention(32, 4, 2)
    x = torch.randn(2, 6, 32)
    bias = 2 * torch.randn(1, 4, 6, 6)
    pad = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    pad[1, ..., 4:] = False
    calls = []
    monkeypatch.setattr(A, "attention_matmul", lambda *a, **k: calls.append(1) or attention_matmul(*a, **k))
    want = attn(x, attn_bias=bias, mask=pad, is_causal=True).detach()       # float32: the fused kernel
    plain = attn(x, is_causal=True).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attn(x, attn_bias=bias, mask=pad, is_causal=True).float().detach()
    assert calls == [1]
    err = (got - want).abs().max()
    assert err < 0.05 and err < (plain - want).abs().max() / 10


def _no_resid_dropout(attn):
    attn.resid_dropout = torch.nn.Identity()      # what is left to randomise the output is the attention dropout
    return attn.train()


def test_attention_dropout_acts_on_both_paths_and_is_unbiased():
    """Dropout on the attention probabilities (as torch's SDPA dropout_p): in training each example draws its own
    mask, in eval there is none, and the mean over draws is the eval output (inverted dropout rescales by
    1 / (1 - p)); on the fused path (float32) and on the matmul path (bf16 with gradients) alike."""
    torch.manual_seed(0)
    attn = _no_resid_dropout(Attention(16, 2, dropout=0.3))
    x = torch.randn(1, 5, 16).expand(2000, 5, 16)                     # 2000 independent draws of one example
    for bf16 in (False, True):
        xs = x.clone().requires_grad_(bf16)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            ref = attn.eval()(xs[:1]).float().detach()
            draws = attn.train()(xs).float().detach()
        assert not torch.equal(draws[0], draws[1])
        se = draws.std(0) / len(draws) ** 0.5
        rounding = 0.01 * ref.abs() if bf16 else 1e-6
        assert ((draws.mean(0) - ref[0]).abs() < 5 * se + rounding).all(), bf16
