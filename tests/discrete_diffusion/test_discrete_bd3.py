"""BD3-LM: the attention mask against the paper's definition, the MDLM and AR limits, and KV-cached sampling against
the uncached reference, with the real TextTransformer (tiny, random init)."""
import pytest
import torch

from unigen.families.discrete_diffusion import bd3 as BD
from unigen.families.discrete_diffusion import masked as M
from unigen.errors import UserError
from unigen.models.text import TextTransformer, TextTransformerConfig
from unigen.nn.attention import causal_mask, peeking

V, MASK = 10, 10


def tiny(time_cond=False, seed=0):
    torch.manual_seed(seed)
    cfg = TextTransformerConfig(vocab_size=V + 1, dim=32, depth=2, n_heads=2, time_cond=time_cond, max_len=64)
    model = TextTransformer(cfg).eval()
    with torch.no_grad():  # larger weights than the LM init so that outputs depend strongly on context (and on t:
        for name, p in model.named_parameters():  # adaLN-Zero would otherwise start as the identity)
            if "norm" not in name:
                p.normal_(0.0, 0.1)
    return model


def definition_mask(n, bs):
    """Case by case from BD3-LM: x_t block b sees x_t block b (M_BD) and x_0 blocks < b (M_OBC); x_0 block b sees
    x_0 blocks <= b (M_BC); x_0 never sees x_t."""
    m = torch.zeros(2 * n, 2 * n, dtype=torch.bool)
    for q in range(2 * n):
        for k in range(2 * n):
            bq, bk = (q % n) // bs, (k % n) // bs
            if q < n and k < n:
                m[q, k] = bq == bk
            elif q < n <= k:
                m[q, k] = bk < bq
            elif q >= n and k >= n:
                m[q, k] = bk <= bq
    return m


@pytest.mark.parametrize("n,bs", [(8, 2), (6, 3), (5, 1), (4, 4), (12, 4)])
def test_block_diffusion_mask_matches_the_definition(n, bs):
    assert torch.equal(BD.bd3_attention_mask(n, bs), definition_mask(n, bs))
    assert torch.equal(BD.bd3_positions(n), torch.cat([torch.arange(n), torch.arange(n)]))
    with pytest.raises(UserError):
        BD.bd3_attention_mask(n, n + 1)


@pytest.mark.parametrize("n,bs", [(8, 2), (7, 3), (5, 1), (4, 4)])
def test_block_causal_mask_matches_double_loop(n, bs):
    """M_BC: query i sees key j iff block(j) <= block(i) (a shorter last block included); block size 1 is causal."""
    want = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            want[i, j] = (j // bs) <= (i // bs)
    assert torch.equal(BD.block_causal(n, bs), want)
    if bs == 1:
        assert torch.equal(BD.block_causal(n, bs), causal_mask(n))
    with pytest.raises(UserError):
        BD.block_causal(4, 0)


def test_one_block_spanning_the_sequence_is_mdlm():
    model = tiny(time_cond=True)
    B, L = 3, 8
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, V, (B, L), generator=g)
    t = torch.tensor([0.3, 0.6, 0.9])
    x_t = M.q_xt(x0, t[:, None], MASK, generator=g)
    bd3 = BD.bd3_loss(model, x0, block_size=L, mask_id=MASK, time_cond=True, t=t[:, None], x_t=x_t)
    mdlm = M.mdlm_loss(lambda x, level: model(x, level), x0, MASK, t=t, x_t=x_t)  # log-linear: weight 1/t too
    torch.testing.assert_close(bd3, mdlm)


@torch.no_grad()
def test_block_size_one_at_t_one_is_the_autoregressive_nll():
    model = tiny()
    B, L = 2, 7
    x0 = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(2))
    nll = BD.bd3_token_nll(model, x0, torch.ones(B, L), block_size=1, mask_id=MASK)  # every block fully masked
    # AR by brute force: p(x_i | x_<i) = the model on [x_0 .. x_{i-1}, MASK] under a causal mask, last position
    brute = torch.zeros(B, L)
    for i in range(L):
        ids = torch.cat([x0[:, :i], torch.full((B, 1), MASK)], 1)
        logits = model(ids, mask=BD.block_causal(i + 1, 1), positions=torch.arange(i + 1))[:, -1]
        logits[:, MASK] = float("-inf")
        brute[:, i] = -torch.log_softmax(logits, -1).gather(-1, x0[:, i:i + 1])[:, 0]
    torch.testing.assert_close(nll, brute)
    loss = BD.bd3_loss(model, x0, block_size=1, mask_id=MASK, beta=1.0, omega=1.0)
    torch.testing.assert_close(loss, brute.mean())


def test_loss_reads_only_the_noisy_half_and_conditions_per_block():
    model = tiny(time_cond=True)
    seen = []

    def wrapped(ids, t, **kw):
        seen.append(t)
        out = model(ids, t, **kw)
        n = ids.shape[1] // 2
        return torch.cat([out[:, :n], out[:, n:] + 100 * torch.randn_like(out[:, n:])], 1)  # junk on x_0 half

    x0 = torch.randint(0, V, (2, 8), generator=torch.Generator().manual_seed(3))
    t = torch.tensor([[0.2, 0.9], [0.5, 1.0]])
    torch.manual_seed(4)
    a = BD.bd3_loss(wrapped, x0, block_size=4, mask_id=MASK, time_cond=True, t=t)
    torch.manual_seed(4)
    b = BD.bd3_loss(model, x0, block_size=4, mask_id=MASK, time_cond=True, t=t)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(seen[0], torch.cat([t.repeat_interleave(4, 1), torch.zeros(2, 8)], 1))


def test_clipped_training_times_and_nelbo():
    model = tiny()
    x0 = torch.randint(0, V, (4, 8), generator=torch.Generator().manual_seed(5))
    torch.manual_seed(6)
    loss = BD.bd3_loss(model, x0, block_size=2, mask_id=MASK, beta=0.3, omega=0.8)
    assert torch.isfinite(loss) and loss > 0
    out = BD.bd3_nelbo(model, x0, block_size=2, mask_id=MASK, n_samples=3, generator=torch.Generator().manual_seed(7))
    assert out["nll"].shape == (4,) and torch.isfinite(out["nll"]).all()
    assert abs(out["nats_per_token"] - float(out["nll"].sum()) / x0.numel()) < 1e-9


@pytest.mark.parametrize("time_cond", [False, True])
@pytest.mark.parametrize("prompt", [3, 8])
def test_cached_sampling_equals_uncached_token_for_token(time_cond, prompt):
    model = tiny(time_cond=time_cond, seed=8)
    x = torch.full((3, 16), MASK)
    x[:, :prompt] = torch.randint(0, V, (3, prompt), generator=torch.Generator().manual_seed(9))
    kw = dict(steps=3, mask_id=MASK, block_size=4, time_cond=time_cond)
    a, sa = BD.sample_bd3(model, x, use_cache=True, generator=torch.Generator().manual_seed(10), **kw)
    b, sb = BD.sample_bd3(model, x, use_cache=False, generator=torch.Generator().manual_seed(10), **kw)
    assert torch.equal(a, b)
    assert sa["nfe"] == sb["nfe"] == sa["model_calls"] == sb["model_calls"]  # the cache costs no extra call
    assert not (a == MASK).any() and torch.equal(a[:, :prompt], x[:, :prompt])


def test_cached_sampling_equals_uncached_with_one_token_blocks():
    # block size 1 after a one-token prompt: the first block call carries exactly one pending clean token
    model = tiny(seed=21)
    x = torch.full((16, 6), MASK)
    x[:, 0] = torch.arange(16) % V
    kw = dict(steps=1, mask_id=MASK, block_size=1)
    a, _ = BD.sample_bd3(model, x, use_cache=True, generator=torch.Generator().manual_seed(22), **kw)
    b, _ = BD.sample_bd3(model, x, use_cache=False, generator=torch.Generator().manual_seed(22), **kw)
    assert torch.equal(a, b) and torch.equal(a[:, 0], x[:, 0]) and not (a == MASK).any()


@torch.no_grad()
def test_cached_peek_leaves_the_cache_and_matches_a_full_forward():
    # the peek call attends to cached prefix + block exactly like a full forward with the block-causal mask
    model = tiny(time_cond=True, seed=11)
    ids = torch.randint(0, V + 1, (2, 12), generator=torch.Generator().manual_seed(12))
    t = torch.rand(2, 12, generator=torch.Generator().manual_seed(13))
    full = model(ids, t, mask=BD.block_causal(12, 4), positions=torch.arange(12))
    cache = model.new_cache(2, 12)
    model(ids[:, :8], t[:, :8], mask=BD.block_causal(8, 4), positions=torch.arange(8), cache=cache)
    with peeking(cache):
        peek = model(ids[:, 8:], t[:, 8:], mask=torch.ones(4, 12, dtype=torch.bool), positions=torch.arange(8, 12),
                     cache=cache)
    assert all(layer.length == 8 for layer in cache)
    torch.testing.assert_close(peek, full[:, 8:])


@torch.no_grad()
@pytest.mark.parametrize("time_cond", [False, True])
def test_first_block_call_commits_the_pending_clean_tokens(time_cond):
    # one call runs 8 pending clean tokens (two blocks) with a noisy block: its logits, the cache it leaves, and a
    # later peek all match full forwards with the block-causal mask
    model = tiny(time_cond=time_cond, seed=16)
    ids = torch.randint(0, V + 1, (2, 12), generator=torch.Generator().manual_seed(17))
    t = torch.rand(2, generator=torch.Generator().manual_seed(18))
    level = torch.cat([torch.zeros(2, 8), t[:, None].expand(2, 4)], dim=1) if time_cond else None
    full = model(ids, level, mask=BD.block_causal(12, 4), positions=torch.arange(12))
    cache = model.new_cache(2, 12)
    fn = BD._CachedBlock(model, cache, ids[:, :8], time_cond=time_cond, block_size=4)
    torch.testing.assert_close(fn(ids[:, 8:], t), full[:, 8:])
    assert all(layer.length == 8 for layer in cache) and fn.pending.shape == (2, 0)
    torch.testing.assert_close(fn(ids[:, 8:], t), full[:, 8:])  # now a peek
    assert all(layer.length == 8 for layer in cache)


def test_cached_sampling_with_a_given_block_equals_uncached():
    # a later block with no mask makes no call: its tokens wait and are committed with the next block's first call
    model = tiny(seed=19)
    x = torch.full((2, 20), MASK)
    x[:, :2] = 1
    x[:, 8:12] = torch.tensor([2, 3, 4, 5])
    kw = dict(steps=2, mask_id=MASK, block_size=4)
    a, sa = BD.sample_bd3(model, x, use_cache=True, generator=torch.Generator().manual_seed(20), **kw)
    b, sb = BD.sample_bd3(model, x, use_cache=False, generator=torch.Generator().manual_seed(20), **kw)
    assert torch.equal(a, b) and sa["model_calls"] == sb["model_calls"]
    assert torch.equal(a[:, 8:12], x[:, 8:12]) and not (a == MASK).any()


def test_eos_stops_generation_after_the_block():
    model = tiny(seed=14)
    EOS = 3

    class EosLover(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.new_cache, self.peek = model.new_cache, model.peek

        def forward(self, ids, t, **kw):
            out = model(ids, t, **kw).clone()
            out[..., EOS] += 50.0
            return out

    x = torch.full((2, 16), MASK)
    x[:, :2] = 1
    for use_cache in (True, False):
        out, stats = BD.sample_bd3(EosLover(), x, steps=2, mask_id=MASK, block_size=4, eos_id=EOS,
                                   use_cache=use_cache, generator=torch.Generator().manual_seed(15))
        assert out.shape == (2, 4) and (out[:, 2:] == EOS).all()
        assert torch.equal(stats["lengths"], torch.tensor([3, 3]))


def test_sampler_input_checks():
    with pytest.raises(UserError):
        BD.sample_bd3(tiny(), torch.full((1, 10), MASK), steps=2, mask_id=MASK, block_size=4)
    with pytest.raises(UserError):
        BD.sample_bd3(tiny(), torch.full((1, 8), MASK), steps=0, mask_id=MASK, block_size=4)
