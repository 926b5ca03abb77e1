"""LLaDA generation as its users run it (llada.py): batched prompts of different lengths with left padding and an
attention mask, EOS suppression in logits and in confidence, and classifier-free guidance inside the likelihood
estimate; against transcriptions of the reference functions on identical inputs and noise."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unigen.config import apply_overrides
from unigen.errors import UserError
from unigen.families.discrete_diffusion import llada as LL
from unigen.families.discrete_diffusion.likelihood import elbo_stratified
from unigen.models.text import TextTransformer, text_config
from unigen.registry import get_preset
from unigen.run import sample, train

V, MASK, PAD, EOS, EOT = 12, 12, 0, 1, 2


def tiny_net(seed: int = 0) -> TextTransformer:
    torch.manual_seed(seed)
    net = TextTransformer(text_config("tiny", V + 1)).double().eval()
    with torch.no_grad():
        net.tok_emb.weight.mul_(3)  # the context then moves the predictions (at init it barely does)
    return net


def logits_fn(net):
    def fn(x, t, mask=None):
        out = net(x, mask=mask)
        # the mask is never predicted; finite, as a real model's logit (-inf - -inf in the reference's CFG is nan)
        return out.index_fill(-1, torch.tensor([MASK]), -1e4)
    return fn


# ------------------------------------------------------------------------------------------ transcribed for comparison
# Transcribed from ML-GSAI/LLaDA generate.py (`generate`, `get_num_transfer_tokens`, `add_gumbel_noise`) at commit
# b7e6c3565f194352da44b38dd12b6970597309f3. Changes: the hard-coded ids 126081 (EOS) / 126348 (EoT) are parameters,
# `model.device` is dropped, and the model returns an object with `.logits` as in HF.
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


@torch.no_grad()
def ref_generate(model, prompt, attention_mask=None, steps=128, gen_length=128, block_length=128, temperature=0.,
                 cfg_scale=0., remasking='low_confidence', mask_id=126336, logits_eos_inf=False,
                 confidence_eos_eot_inf=False, eos_id=126081, eot_id=126348):
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, :prompt.shape[1]] = prompt.clone()
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones((prompt.shape[0], gen_length),
                                                               dtype=attention_mask.dtype)], dim=-1)
    prompt_index = (x != mask_id)
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    for num_block in range(num_blocks):
        block_mask_index = (x[:, prompt.shape[1] + num_block * block_length: prompt.shape[1] + (num_block + 1)
                              * block_length:] == mask_id)
        num_transfer_tokens = ref_get_num_transfer_tokens(block_mask_index, steps)
        for i in range(steps):
            mask_index = (x == mask_id)
            if cfg_scale > 0.:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                x_ = torch.cat([x, un_x], dim=0)
                if attention_mask is not None:
                    attention_mask_ = torch.cat([attention_mask, attention_mask], dim=0)
                logits = model(x_, attention_mask=attention_mask_).logits
                logits, un_logits = torch.chunk(logits, 2, dim=0)
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            else:
                logits = model(x, attention_mask=attention_mask).logits
            if logits_eos_inf:
                logits[:, :, eos_id] = -torch.inf
            logits_with_noise = ref_add_gumbel_noise(logits, temperature=temperature)
            x0 = torch.argmax(logits_with_noise, dim=-1)
            if confidence_eos_eot_inf:
                logits_with_noise[:, :, eos_id] = logits[:, :, eot_id] = -torch.inf
            if remasking == 'low_confidence':
                p = F.softmax(logits, dim=-1)
                x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
            else:
                raise NotImplementedError(remasking)
            x0_p[:, prompt.shape[1] + (num_block + 1) * block_length:] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -np.inf)
            transfer_index = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(confidence.shape[0]):
                _, select_index = torch.topk(confidence[j], k=num_transfer_tokens[j, i])
                transfer_index[j, select_index] = True
            x[transfer_index] = x0[transfer_index]
    return x


# Transcribed from ML-GSAI/LLaDA get_log_likelihood.py (`get_logits`) at the same commit; `model(input).logits`
# is our logits function.
def ref_get_logits(model, batch, prompt_index, cfg_scale, mask_id):
    if cfg_scale > 0.:
        assert len(prompt_index) == batch.shape[1]
        prompt_index = prompt_index.unsqueeze(0).repeat(batch.shape[0], 1)
        un_batch = batch.clone()
        un_batch[prompt_index] = mask_id
        batch = torch.cat([batch, un_batch])
    logits = model(batch)
    if cfg_scale > 0.:
        logits, un_logits = torch.chunk(logits, 2, dim=0)
        logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
    return logits
# --------------------------------------------------------------------------------------------------- end transcribed


class HFModel:
    """The reference's view of our network: model(x, attention_mask=...).logits."""
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x, attention_mask=None):
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        return SimpleNamespace(logits=self.fn(x, None, mask=mask))


PROMPTS = [[5, 6, 7, 8, 9], [7, 3], [4, 10, 11]]


@pytest.mark.parametrize("kw", [dict(temperature=0.0), dict(temperature=0.8, cfg_scale=0.5),
                                dict(temperature=0.0, logits_eos_inf=True, block_length=4),
                                dict(temperature=0.7, confidence_eos_eot_inf=True, block_length=4)])
def test_left_padded_generation_matches_llada_generate(kw):
    fn = logits_fn(tiny_net())
    canvas, keep = LL.left_pad(PROMPTS, 8, pad_id=PAD, mask_id=MASK)
    P = canvas.shape[1] - 8
    ref_kw = dict(kw, eos_id=EOS, eot_id=EOT)
    torch.manual_seed(3)
    ref = ref_generate(HFModel(fn), canvas[:, :P], keep[:, :P].long(), steps=8, gen_length=8, mask_id=MASK,
                       block_length=kw.get("block_length", 8), **{k: v for k, v in ref_kw.items()
                                                                  if k != "block_length"})
    # the reference applies confidence_eos_eot_inf to EoT only (its EOS half writes a tensor it no longer reads)
    ids = (EOT,) if kw.get("confidence_eos_eot_inf") else (EOS,)
    torch.manual_seed(3)  # our sampler draws the same float64 uniforms from the global RNG when generator=None
    ours, stats = LL.sample_llada(fn, canvas, steps=8, mask_id=MASK, attention_mask=keep, eos_ids=ids,
                                  **{k: v for k, v in kw.items()})
    assert torch.equal(ours, ref) and stats["nfe"] == 8
    if kw.get("logits_eos_inf"):
        assert not (ours[:, P:] == EOS).any()


def test_batched_left_padding_equals_each_prompt_alone():
    fn = logits_fn(tiny_net(1))
    canvas, keep = LL.left_pad(PROMPTS, 6, pad_id=PAD, mask_id=MASK)
    batch, _ = LL.sample_llada(fn, canvas, steps=6, mask_id=MASK, attention_mask=keep, block_length=3)
    for row, p in zip(batch, PROMPTS):
        alone, _ = LL.sample_llada(fn, torch.tensor([p + [MASK] * 6]), steps=6, mask_id=MASK, block_length=3)
        assert row[-len(p) - 6:].tolist() == alone[0].tolist()
    unmasked, _ = LL.sample_llada(fn, canvas, steps=6, mask_id=MASK, block_length=3)  # padding attended to
    assert not torch.equal(unmasked, batch)


def test_confidence_eos_is_unmasked_last():
    """A model that predicts EOS with certainty at some positions: with confidence_eos_eot_inf those positions are
    the last of their block to be committed; without it, the first."""
    L = 6
    eos_at = torch.tensor([False, True, False, False, True, False])

    def fn(x, t):
        logits = torch.zeros(x.shape[0], x.shape[1], V + 1, dtype=torch.float64)
        logits[..., 3] = torch.arange(x.shape[1], dtype=torch.float64)  # mild preference for token 3
        logits[:, eos_at, EOS] = 50.0
        logits[..., MASK] = float("-inf")
        return logits

    for flag, first_two in ((False, True), (True, False)):
        seen = []
        LL.sample_llada(fn, torch.full((1, L), MASK), steps=L, mask_id=MASK, eos_ids=(EOS,),
                        confidence_eos_eot_inf=flag, callback=lambda x: seen.append(x.clone()))
        committed = [int(torch.nonzero(b != a)[0, 1]) for a, b in zip([torch.full((1, L), MASK)] + seen, seen)]
        assert (set(committed[:2]) == {1, 4}) == first_two
        assert (set(committed[-2:]) == {1, 4}) == (not first_two)


def test_cfg_inside_the_likelihood_equals_llada_get_logits():
    fn = logits_fn(tiny_net(2))
    x0 = torch.tensor([[5, 6, 7, 3, 4, 9, 10, 11]]).repeat(2, 1)
    prompt = torch.zeros_like(x0, dtype=torch.bool)
    prompt[:, :3] = True
    w = 1.5
    ours = elbo_stratified(fn, x0, mask_id=MASK, n_samples=6, batch_size=4, prompt_mask=prompt, cfg_scale=w,
                           generator=torch.Generator().manual_seed(0))
    ref = elbo_stratified(lambda x, t: ref_get_logits(lambda b: fn(b, None), x, prompt[0], w, MASK), x0,
                          mask_id=MASK, n_samples=6, batch_size=4, prompt_mask=prompt,
                          generator=torch.Generator().manual_seed(0))  # the same masks: the same generator
    plain = elbo_stratified(fn, x0, mask_id=MASK, n_samples=6, batch_size=4, prompt_mask=prompt,
                            generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ours["nll"], ref["nll"], rtol=1e-12) and not torch.allclose(ours["nll"], plain["nll"])
    with pytest.raises(UserError, match="prompt_mask"):
        elbo_stratified(fn, x0, mask_id=MASK, n_samples=2, cfg_scale=w)


def test_bad_generation_input():
    fn = logits_fn(tiny_net())
    canvas, keep = LL.left_pad(PROMPTS, 4, pad_id=PAD, mask_id=MASK)
    for kw, msg in ((dict(threshold=0.0), "threshold"), (dict(threshold=1.5), "threshold"),
                    (dict(block_length=3), "block_length"), (dict(attention_mask=keep[:, 1:]), "attention_mask")):
        with pytest.raises(UserError, match=msg):
            LL.sample_llada(fn, canvas, steps=4, mask_id=MASK, **kw)
    with pytest.raises(UserError, match="mask id"):
        LL.left_pad(PROMPTS, 4, pad_id=MASK, mask_id=MASK)


def test_task_samples_a_batch_of_prompts(tmp_path):
    cfg = apply_overrides(get_preset("text-mdlm"), ["model.size=tiny", "data.seq_len=32", "train.steps=2",
                                                    "train.batch_size=4", "train.progress=false"])
    run = tmp_path / "mdlm"
    train(cfg, run)
    prompts = ["The assert", "x", "Return the value"]
    got = sample(run, sampler="llada", prompt=prompts, length=8, seed=0, temperature=0.0, logits_eos_inf=True,
                 out_dir=tmp_path / "s")
    rows = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert got["n"] == 3 and got["nfe"] == 8
    assert all(t.startswith(p) for t, p in zip(rows["texts"], prompts))
    assert [len(r) for r in rows["tokens"]] == [16 + 8] * 3  # left-padded to the longest prompt
    with pytest.raises(UserError, match="left padding"):
        sample(run, sampler="mdlm", prompt=["ab", "abc"], length=8, out_dir=tmp_path / "m")
    with pytest.raises(UserError, match="fills data.seq_len=32"):  # a prompt longer than the context
        sample(run, sampler="llada", prompt="x" * 40, out_dir=tmp_path / "c")
