"""Fast-dLLM's approximate KV cache (cache.py): refreshed every step it is LLaDA's sampler token for token; a cache
just refreshed gives the full forward's logits; and the prefix / dual cache loops and threshold selection equal
transcriptions of Fast-dLLM's generate functions run on our network."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unigen.errors import UserError
from unigen.families.discrete_diffusion import cache as C
from unigen.families.discrete_diffusion import llada as LL
from unigen.families.discrete_diffusion.network import DiscreteLM, DiscreteLMConfig
from unigen.families.discrete_diffusion.samplers import SAMPLERS, MaskedDenoiser
from unigen.models.text import TextTransformer, text_config
from unigen.nn.attention import KVCache

V, MASK, PAD = 12, 12, 0


class NoMaskLM(DiscreteLM):
    """Never predicts the mask; a finite logit, as a real model's (Fast-dLLM's code does not exclude it)."""
    def forward(self, ids, t=None, **kw):
        return super().forward(ids, t, **kw).index_fill(-1, torch.tensor([MASK]), -1e4)


def tiny_lm(seed: int = 0) -> DiscreteLM:
    torch.manual_seed(seed)
    net = TextTransformer(text_config("tiny", V + 1))
    with torch.no_grad():
        net.tok_emb.weight.mul_(3)  # the context then moves the predictions (at init it barely does)
    return NoMaskLM(net, "mdlm", DiscreteLMConfig(), mask_id=MASK, bos_id=0).double().eval()


PROMPTS = [[5, 6, 7, 8, 9], [7, 3], [4, 10, 11]]


@pytest.mark.parametrize("mode", C.MODES)
@pytest.mark.parametrize("kw", [dict(threshold=0.3, temperature=0.0), dict(threshold=None, steps=8, temperature=0.7),
                                dict(threshold=0.2, temperature=1.0)])
def test_refreshed_every_step_equals_uncached(mode, kw):
    lm = tiny_lm()
    canvas, keep = LL.left_pad(PROMPTS, 8, pad_id=PAD, mask_id=MASK)
    kw = dict(kw)
    steps = kw.pop("steps", 0)
    ref, rs = LL.sample_llada(lm, canvas, steps=steps, mask_id=MASK, block_length=4, attention_mask=keep,
                              generator=torch.Generator().manual_seed(1), **kw)
    got, gs = C.sample_fast_dllm(lm, canvas, steps=steps, mask_id=MASK, mode=mode, block_length=4, refresh=1,
                                 attention_mask=keep, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(got, ref) and gs["nfe"] == rs["nfe"] and gs["positions"] == gs["nfe"] * canvas.shape[1]
    cached, cs = C.sample_fast_dllm(lm, canvas, steps=steps, mask_id=MASK, mode=mode, block_length=4,
                                    attention_mask=keep, generator=torch.Generator().manual_seed(1), **kw)
    assert not (cached == MASK).any() and cs["positions"] < gs["positions"] * cs["nfe"] / gs["nfe"]


@pytest.mark.parametrize("mode", C.MODES)
def test_a_fresh_cache_gives_the_full_forward(mode):
    lm = tiny_lm(1)
    canvas, keep = LL.left_pad(PROMPTS, 12, pad_id=PAD, mask_id=MASK)  # (3, 17): generated columns 5..16
    canvas[:, 7] = 4  # some generated tokens already in place
    lo, hi = 9, 13
    full = lm(canvas, mask=keep[:, None, None, :])  # (B, L, V+1)
    logits, cache, order = C.refresh_call(lm, canvas, None, lo, hi, mode, keep)
    assert torch.allclose(logits, full, atol=1e-12)
    part, c0 = C.cached_call(lm, canvas, None, lo, hi, mode, cache, order, keep)
    assert c0 == lo and torch.allclose(part, full[:, lo:lo + part.shape[1]], atol=1e-12)
    assert part.shape[1] == (canvas.shape[1] - lo if mode == "prefix" else hi - lo)
    moved = canvas.clone()
    moved[:, hi + 1] = 3  # a suffix token changes: only the prefix cache sees it
    part2, _ = C.cached_call(lm, moved, None, lo, hi, mode, cache, order, keep)
    same = torch.allclose(part2[:, :hi - lo], part[:, :hi - lo], atol=1e-12)
    assert same == (mode == "dual")


# ------------------------------------------------------------------------------------------ transcribed for comparison
# Transcribed from NVlabs/Fast-dLLM llada/generate.py (`get_transfer_index`, `generate_with_prefix_cache`,
# `generate_with_dual_cache`, `get_num_transfer_tokens`, `add_gumbel_noise`) at commit
# 24cc59e75f20a6384bae8c905965bb090b96388e. Changes: `model.device` dropped; `generate_*` keep their loops as
# written. Their model is HF's LLaDA with past_key_values; `RefModel` below plays it with our network.
def ref_add_gumbel_noise(logits, temperature):
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand_like(logits, dtype=torch.float64)
    gumbel_noise = (- torch.log(noise)) ** temperature
    return logits.exp() / gumbel_noise


def ref_get_num_transfer_tokens(mask_index, steps):
    mask_num = mask_index.sum(dim=1, keepdim=True)
    base = mask_num // steps
    remainder = mask_num % steps
    num_transfer_tokens = torch.zeros(mask_num.size(0), steps, dtype=torch.int64) + base
    for i in range(mask_num.size(0)):
        num_transfer_tokens[i, :remainder[i]] += 1
    return num_transfer_tokens


def ref_get_transfer_index(logits, temperature, remasking, mask_index, x, num_transfer_tokens, threshold=None):
    logits_with_noise = ref_add_gumbel_noise(logits, temperature=temperature)
    x0 = torch.argmax(logits_with_noise, dim=-1)
    if remasking == 'low_confidence':
        p = F.softmax(logits.to(torch.float64), dim=-1)
        x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
    else:
        raise NotImplementedError(remasking)
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, -np.inf)
    transfer_index = torch.zeros_like(x0, dtype=torch.bool)
    if threshold is not None:
        num_transfer_tokens = mask_index.sum(dim=1, keepdim=True)
    for j in range(confidence.shape[0]):
        _, select_index = torch.topk(confidence[j], k=num_transfer_tokens[j])
        transfer_index[j, select_index] = True
        if threshold is not None:
            for k in range(1, num_transfer_tokens[j]):
                if confidence[j, select_index[k]] < threshold:
                    transfer_index[j, select_index[k]] = False
    return x0, transfer_index


@torch.no_grad()
def ref_generate_with_prefix_cache(model, prompt, steps=128, gen_length=128, block_length=128, temperature=0.,
                                   remasking='low_confidence', mask_id=126336, threshold=None):
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, :prompt.shape[1]] = prompt.clone()
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    nfe = 0
    for num_block in range(num_blocks):
        current_block_start = prompt.shape[1] + num_block * block_length
        current_block_end = current_block_start + block_length
        block_mask_index = (x[:, current_block_start:current_block_end] == mask_id)
        num_transfer_tokens = ref_get_num_transfer_tokens(block_mask_index, steps)
        output = model(x, use_cache=True)
        past_key_values = output.past_key_values
        mask_index = (x == mask_id)
        mask_index[:, current_block_end:] = 0
        x0, transfer_index = ref_get_transfer_index(output.logits, temperature, remasking, mask_index, x,
                                                    num_transfer_tokens[:, 0] if threshold is None else None,
                                                    threshold)
        x[transfer_index] = x0[transfer_index]
        new_past_key_values = []
        for i in range(len(past_key_values)):
            new_past_key_values.append(())
            for j in range(len(past_key_values[i])):
                new_past_key_values[i] += (past_key_values[i][j][:, :, :current_block_start],)
        past_key_values = new_past_key_values
        nfe += 1
        i = 1
        while True:
            nfe += 1
            mask_index = (x[:, current_block_start:] == mask_id)
            mask_index[:, block_length:] = 0
            logits = model(x[:, current_block_start:], past_key_values=past_key_values, use_cache=True).logits
            x0, transfer_index = ref_get_transfer_index(logits, temperature, remasking, mask_index,
                                                        x[:, current_block_start:],
                                                        num_transfer_tokens[:, i] if threshold is None else None,
                                                        threshold)
            x[:, current_block_start:][transfer_index] = x0[transfer_index]
            if (x[:, current_block_start:current_block_end] == mask_id).sum() == 0:
                break
            i += 1
    return x, nfe


@torch.no_grad()
def ref_generate_with_dual_cache(model, prompt, steps=128, gen_length=128, block_length=128, temperature=0.,
                                 remasking='low_confidence', mask_id=126336, threshold=None):
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, :prompt.shape[1]] = prompt.clone()
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    nfe = 0
    for num_block in range(num_blocks):
        current_block_start = prompt.shape[1] + num_block * block_length
        current_block_end = current_block_start + block_length
        block_mask_index = (x[:, current_block_start:current_block_end] == mask_id)
        num_transfer_tokens = ref_get_num_transfer_tokens(block_mask_index, steps)
        output = model(x, use_cache=True)
        past_key_values = output.past_key_values
        mask_index = (x == mask_id)
        mask_index[:, current_block_end:] = 0
        x0, transfer_index = ref_get_transfer_index(output.logits, temperature, remasking, mask_index, x,
                                                    num_transfer_tokens[:, 0] if threshold is None else None,
                                                    threshold)
        x[transfer_index] = x0[transfer_index]
        nfe += 1
        i = 1
        replace_position = torch.zeros_like(x, dtype=torch.bool)
        replace_position[:, current_block_start:current_block_end] = 1
        while True:
            nfe += 1
            mask_index = (x[:, current_block_start:current_block_end] == mask_id)
            logits = model(x[:, current_block_start:current_block_end], past_key_values=past_key_values,
                           use_cache=True, replace_position=replace_position).logits
            x0, transfer_index = ref_get_transfer_index(logits, temperature, remasking, mask_index,
                                                        x[:, current_block_start:current_block_end],
                                                        num_transfer_tokens[:, i] if threshold is None else None,
                                                        threshold)
            x[:, current_block_start:current_block_end][transfer_index] = x0[transfer_index]
            if (x[:, current_block_start:current_block_end] == mask_id).sum() == 0:
                break
            i += 1
    return x, nfe
# --------------------------------------------------------------------------------------------------- end transcribed


class RefModel:
    """Fast-dLLM's LLaDA model played by our network: past_key_values are (k, v) per layer after RoPE; with
    replace_position the call's tokens stand in for those columns of the cache (their keys are recomputed)."""
    def __init__(self, lm):
        self.lm = lm

    def __call__(self, x, past_key_values=None, use_cache=False, replace_position=None):
        B, T = x.shape
        if past_key_values is None:
            cache = self.lm.new_cache(B, T)
            logits = self.lm(x, cache=cache)
            return SimpleNamespace(logits=logits, past_key_values=[(c.k[:, :, :T], c.v[:, :, :T]) for c in cache])
        P = past_key_values[0][0].shape[2]
        if replace_position is None:
            keep, pos = torch.ones(P, dtype=torch.bool), torch.arange(P, P + T)
        else:
            keep, pos = ~replace_position[0], replace_position[0].nonzero()[:, 0]
        cache = [KVCache(B, P + T) for _ in past_key_values]
        for c, (k, v) in zip(cache, past_key_values):
            c.update(k[:, :, keep], v[:, :, keep])
        return SimpleNamespace(logits=self.lm(x, positions=pos, cache=cache))


@pytest.mark.parametrize("mode,ref_fn", [("prefix", ref_generate_with_prefix_cache),
                                         ("dual", ref_generate_with_dual_cache)])
@pytest.mark.parametrize("threshold,steps", [(0.25, 16), (None, 16), (None, 8)])
def test_cached_generation_equals_fast_dllm(mode, ref_fn, threshold, steps):
    lm = tiny_lm(2)
    prompt = torch.tensor([[5, 6, 7, 8, 9]])
    ref, ref_nfe = ref_fn(RefModel(lm), prompt, steps=steps, gen_length=16, block_length=4, mask_id=MASK,
                          threshold=threshold)
    canvas = torch.cat([prompt, torch.full((1, 16), MASK)], dim=1)
    got, stats = C.sample_fast_dllm(lm, canvas, steps=steps, mask_id=MASK, mode=mode, block_length=4,
                                    threshold=threshold)
    assert torch.equal(got, ref)
    # Fast-dLLM's loop makes one more (idle) call in a block that its refresh step already finished
    assert stats["nfe"] <= ref_nfe and (threshold is not None or stats["nfe"] == ref_nfe)


def test_sampler_entries_and_bad_input():
    lm = tiny_lm()
    canvas = torch.cat([torch.tensor([[5, 6]]), torch.full((1, 64), MASK)], dim=1)
    out, stats = SAMPLERS["fast-dllm-dual"](MaskedDenoiser(lm, MASK), canvas, steps=0)  # blocks of 32
    assert not (out == MASK).any() and stats["positions"] < stats["nfe"] * canvas.shape[1]
    for kw, msg in ((dict(threshold=0.0), "threshold"), (dict(threshold=2.0), "threshold"),
                    (dict(block_length=5), "block_length"), (dict(mode="suffix"), "mode"),
                    (dict(refresh=-1), "refresh")):
        with pytest.raises(UserError, match=msg):
            C.sample_fast_dllm(lm, canvas, steps=8, mask_id=MASK, **{"block_length": 8, **kw})
    with pytest.raises(UserError, match="KV cache"):
        SAMPLERS["fast-dllm-prefix"](MaskedDenoiser(lambda x, t: None, MASK), canvas, steps=0)
