"""Autoregressive baseline with the real causal TextTransformer: exact NLL against a brute-force product of
conditionals, and KV-cached decoding against full recomputation."""
import math

import pytest
import torch

from unigen.families.discrete_diffusion import ar as AR
from unigen.errors import UserError
from unigen.models.text import TextTransformer, TextTransformerConfig

V, MASK = 12, 12


def tiny(seed=0, vocab=V + 1):
    torch.manual_seed(seed)
    model = TextTransformer(TextTransformerConfig(vocab_size=vocab, dim=32, depth=2, n_heads=2, causal=True,
                                                  max_len=64)).eval()
    with torch.no_grad():  # larger weights than the LM init: context-dependent, moderately peaked predictions
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.1)
    return model


@torch.no_grad()
def test_exact_nll_is_the_sum_of_prefix_log_probs():
    model = tiny()
    x = torch.randint(0, V, (3, 9), generator=torch.Generator().manual_seed(1))
    out = AR.ar_nll(model, x, mask_id=MASK)
    brute = torch.zeros(3, dtype=torch.float64)
    for i in range(1, 9):  # each conditional from its own forward pass on the prefix alone
        logits = model(x[:, :i])[:, -1].double()
        logits[:, MASK] = float("-inf")
        brute -= torch.log_softmax(logits, -1).gather(-1, x[:, i:i + 1])[:, 0]
    torch.testing.assert_close(out["nll"], brute, rtol=1e-5, atol=1e-5)
    assert math.isclose(out["nats_per_token"], float(brute.sum()) / (3 * 8), rel_tol=1e-5)
    assert math.isclose(out["ppl"], math.exp(out["nats_per_token"]))
    torch.testing.assert_close(AR.ar_loss(model, x, mask_id=MASK).double(), brute.sum() / 24, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(temperature=0.0), dict(temperature=1.0), dict(temperature=0.8, top_k=4)])
def test_cached_decoding_equals_full_recompute(kw):
    model = tiny(seed=2)
    x = torch.full((4, 14), MASK)
    x[:, :3] = torch.randint(0, V, (4, 3), generator=torch.Generator().manual_seed(3))
    x[:, 9] = 5  # a constraint inside the generated span is kept and fed back
    a, sa = AR.sample_ar(model, x, mask_id=MASK, use_cache=True, generator=torch.Generator().manual_seed(4), **kw)
    b, sb = AR.sample_ar(model, x, mask_id=MASK, use_cache=False, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(a, b) and sa["nfe"] == sb["nfe"] == 11
    assert not (a == MASK).any() and torch.equal(a[:, :3], x[:, :3]) and (a[:, 9] == 5).all()


@torch.no_grad()
def test_greedy_decoding_follows_the_argmax():
    model = tiny(seed=5)
    x = torch.full((2, 6), MASK)
    x[:, 0] = 1
    out, _ = AR.sample_ar(model, x, mask_id=MASK, temperature=0.0)
    logits = model(out[:, :-1])
    logits[..., MASK] = float("-inf")
    assert torch.equal(out[:, 1:], logits.argmax(-1))


def test_mask_token_is_never_sampled_and_eos_stops():
    model = tiny(seed=6)
    EOS = 2

    class Boost(torch.nn.Module):
        def __init__(self, token):
            super().__init__()
            self.token, self.new_cache = token, model.new_cache

        def forward(self, ids, cache=None):
            out = model(ids, cache=cache).clone()
            out[..., self.token] += 50.0
            return out

    x = torch.full((3, 10), MASK)
    x[:, 0] = 1
    out, _ = AR.sample_ar(Boost(MASK), x, mask_id=MASK, generator=torch.Generator().manual_seed(7))
    assert not (out == MASK).any()
    out, stats = AR.sample_ar(Boost(EOS), x, mask_id=MASK, eos_id=EOS, generator=torch.Generator().manual_seed(8))
    assert out.shape == (3, 2) and (out[:, 1] == EOS).all()
    assert torch.equal(stats["lengths"], torch.tensor([2, 2, 2]))


def test_input_checks():
    with pytest.raises(UserError):
        AR.sample_ar(tiny(), torch.full((1, 5), MASK), mask_id=MASK)  # nothing to condition on
    with pytest.raises(UserError):
        AR.ar_nll(tiny(), torch.zeros(2, 1, dtype=torch.long))
