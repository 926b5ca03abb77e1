"""Masked-diffusion samplers: invariants (no mask left, prompt untouched), Gumbel in float64, transfer schedules,
threshold decoding, classifier-free guidance, logits reuse; the masked samplers of the registry on a tiny network
(every registered sampler is also run by test_sampler_contract.py)."""
import pytest
import torch

from unigen.families.discrete_diffusion import categorical as C
from unigen.families.discrete_diffusion import llada as S
from unigen.families.discrete_diffusion import masked as M
from unigen.families.discrete_diffusion.samplers import SAMPLERS, MaskedDenoiser
from unigen.errors import UserError

V, MASK = 11, 11


class TinyDenoiser(torch.nn.Module):
    """A random bidirectional net: logits depend on every token (mean-pooled context) and the position."""

    def __init__(self, seed=0, L=16):
        super().__init__()
        torch.manual_seed(seed)
        self.emb, self.pos = torch.nn.Embedding(V + 1, 16), torch.nn.Embedding(L, 16)
        self.head = torch.nn.Linear(32, V + 1)
        self.calls = []

    def forward(self, x, t):
        self.calls.append(x.clone())
        h = self.emb(x) + self.pos(torch.arange(x.shape[1]))  # (B, L, 16)
        ctx = h.mean(1, keepdim=True).expand_as(h)  # (B, L, 16)
        return 3 * self.head(torch.cat([h, ctx], -1))  # (B, L, V+1)


def canvas(B=4, L=16, prompt=5, seed=0):
    x = torch.full((B, L), MASK)
    x[:, :prompt] = torch.randint(0, V, (B, prompt), generator=torch.Generator().manual_seed(seed))
    return x


def test_gumbel_noise_is_float64_and_matches_llada_formula():
    logits = torch.randn(6, 9, V + 1)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    noisy = C.add_gumbel_noise(logits, 0.7, g1)
    assert noisy.dtype == torch.float64
    u = torch.rand(logits.shape, generator=g2, dtype=torch.float64)
    llada = logits.double().exp() / (-torch.log(u)) ** 0.7  # LLaDA's add_gumbel_noise, same uniforms
    assert torch.equal(noisy.argmax(-1), llada.argmax(-1))
    assert C.add_gumbel_noise(logits, 0.0) is logits


def test_gumbel_max_frequencies_follow_softmax_over_temperature():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0])
    n, T = 40000, 0.5
    draws = C.sample_logits(logits.expand(n, 4), temperature=T, generator=torch.Generator().manual_seed(1))
    p = torch.softmax(logits.double() / T, 0)
    freq = torch.bincount(draws, minlength=4).double() / n
    assert ((freq - p).abs() < 5 * (p * (1 - p) / n).sqrt()).all()
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    draws = C.sample_categorical(probs.expand(n, 4), torch.Generator().manual_seed(2))
    freq = torch.bincount(draws, minlength=4).double() / n
    p = probs.double()
    assert freq[1] == 0 and ((freq - p).abs() < 5 * (p * (1 - p) / n).sqrt() + 1e-12).all()


def test_top_k_only_draws_the_k_largest():
    logits = torch.randn(500, V)
    draws = C.sample_logits(logits, temperature=2.0, top_k=3, generator=torch.Generator().manual_seed(3))
    top = logits.topk(3, -1).indices
    assert (top == draws[:, None]).any(-1).all()


def test_num_transfer_tokens_is_linear_and_complete():
    masked = torch.rand(50, 37, generator=torch.Generator().manual_seed(4)) < 0.6
    for steps in (1, 4, 7, 40):
        k = S.num_transfer_tokens(masked, steps)
        assert torch.equal(k.sum(1), masked.sum(1))
        assert (k.max(1).values - k.min(1).values <= 1).all()
        assert (k[:, 1:] <= k[:, :-1]).all()  # remainder goes to the first steps, like LLaDA


@pytest.mark.parametrize("name,kw", [
    ("mdlm", dict(steps=8)),
    ("llada", dict(steps=11, temperature=0.0)),
    ("llada", dict(steps=11, temperature=0.0, block_length=1)),
    ("llada-random", dict(steps=11, temperature=1.0)),
    ("fast-dllm", dict(steps=0, temperature=1.0)),
    ("llada", dict(steps=6, guidance=2.5, temperature=0.5)),
])
def test_masked_samplers_fill_every_mask_and_keep_the_prompt(name, kw):
    x = canvas()
    d = MaskedDenoiser(TinyDenoiser(), MASK, time_cond=False)
    out, stats = SAMPLERS[name](d, x, generator=torch.Generator().manual_seed(5), **kw)
    assert out.shape == x.shape and not (out == MASK).any()
    assert torch.equal(out[:, :5], x[:, :5])
    assert stats["nfe"] >= 1


def test_mdlm_on_sigma_without_logit_reuse_fills_every_mask_and_keeps_the_prompt():
    x = canvas()
    out, stats = M.sample_mdlm(TinyDenoiser(), x, steps=8, mask_id=MASK, reuse_logits=False, cond="sigma",
                               generator=torch.Generator().manual_seed(5))
    assert out.shape == x.shape and not (out == MASK).any()
    assert torch.equal(out[:, :5], x[:, :5])
    assert stats["nfe"] >= 1


def test_semi_autoregressive_blocks_fill_left_to_right():
    net = TinyDenoiser()
    x = canvas(L=16, prompt=4)
    out, stats = S.sample_llada(net, x, steps=6, mask_id=MASK, block_length=4,
                                generator=torch.Generator().manual_seed(6))
    assert not (out == MASK).any() and stats["nfe"] == 6
    for call in net.calls:  # while block b is decoded, every later block is still fully masked
        masked = call == MASK
        first_open = int(masked.any(0).nonzero()[0]) // 4 * 4
        assert masked[:, first_open + 4:].all()
    with pytest.raises(UserError):
        S.sample_llada(net, x, steps=5, mask_id=MASK, block_length=4)  # 5 steps over 3 blocks
    with pytest.raises(UserError):
        S.sample_llada(net, x, steps=6, mask_id=MASK, block_length=5)  # 12 tokens in blocks of 5


def test_threshold_one_degenerates_to_one_token_per_step():
    net = TinyDenoiser()
    x = canvas(B=3, L=12, prompt=3)
    out, stats = S.sample_llada(net, x, steps=0, mask_id=MASK, threshold=1.0, block_length=3,
                                generator=torch.Generator().manual_seed(7))
    assert stats["nfe"] == 9 and not (out == MASK).any()
    counts = [int((c == MASK).sum(1)[0]) for c in net.calls]
    assert counts == list(range(9, 0, -1))
    # a low threshold decodes many tokens per step
    net2 = TinyDenoiser()
    _, stats2 = S.sample_llada(net2, x, steps=0, mask_id=MASK, threshold=1e-12,
                               generator=torch.Generator().manual_seed(7))
    assert stats2["nfe"] == 1


def test_low_confidence_remasking_keeps_the_most_confident():
    net = TinyDenoiser()
    x = canvas(B=2, L=10, prompt=2)
    out, _ = S.sample_llada(net, x, steps=8, mask_id=MASK, generator=torch.Generator().manual_seed(8))
    # replay the first step: the single kept token is the argmax of max-probability over masked positions
    first = TinyDenoiser()(x, None)
    first[..., MASK] = float("-inf")
    conf = torch.softmax(first.double(), -1).max(-1).values
    conf[:, :2] = -1
    pos = conf.argmax(1)
    step1 = net.calls[1]
    assert all(step1[b, pos[b]] != MASK and (step1[b, 2:] != MASK).sum() == 1 for b in range(2))


def test_guidance_combines_conditional_and_prompt_masked_passes():
    net = TinyDenoiser()
    x = canvas(B=2, L=8, prompt=3)
    prompt = x != MASK
    t = torch.ones(2)
    got = S.guided_logits(net, x, t, prompt, MASK, cfg_scale=2.0)
    cond = net(x, t)
    uncond_x = x.clone()
    uncond_x[:, :3] = MASK
    uncond = net(uncond_x, t)
    torch.testing.assert_close(got, uncond + 3.0 * (cond - uncond))
    assert torch.equal(net.calls[0][2:], uncond_x)  # the batched call's second half has the prompt masked
    torch.testing.assert_close(S.guided_logits(net, x, t, prompt, MASK, 0.0), cond)


def test_mdlm_logit_reuse_is_exact_for_a_time_agnostic_model():
    x = canvas(B=2, L=16, prompt=2)
    a, sa = M.sample_mdlm(TinyDenoiser(), x, steps=64, mask_id=MASK, generator=torch.Generator().manual_seed(9))
    b, sb = M.sample_mdlm(TinyDenoiser(), x, steps=64, mask_id=MASK, reuse_logits=False,
                          generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert sa["nfe"] < sb["nfe"]
    # a call is made only when x changed since the previous one
    net = TinyDenoiser()
    M.sample_mdlm(net, x, steps=64, mask_id=MASK, generator=torch.Generator().manual_seed(9))
    assert all(not torch.equal(p, q) for p, q in zip(net.calls, net.calls[1:]))


def test_sampler_input_checks():
    with pytest.raises(UserError):
        M.sample_mdlm(TinyDenoiser(), canvas(), steps=0, mask_id=MASK)
    with pytest.raises(UserError):
        S.sample_llada(TinyDenoiser(), canvas(), steps=4, mask_id=MASK, remasking="entropy")
    with pytest.raises(UserError):
        M.sample_mdlm(TinyDenoiser(), canvas().float(), steps=4, mask_id=MASK)
    full = torch.randint(0, V, (2, 5))
    assert torch.equal(S.sample_llada(TinyDenoiser(), full, steps=4, mask_id=MASK)[0], full)
