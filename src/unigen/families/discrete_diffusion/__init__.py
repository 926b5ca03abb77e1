"""Discrete diffusion language-model math: pure functions of tensors over a denoiser callable.

    noise.py        schedules sigma(t) (log-linear, geometric), NELBO weight, antithetic / clipped time sampling
    categorical.py  float64 Gumbel-max sampling (LLaDA's add_gumbel_noise), temperature, top-k
    masked.py       MDLM / LLaDA: absorbing forward process, SUBS, NELBO and SFT losses, first-hitting, nucleus
    llada.py        LLaDA (low-confidence / random remasking, blocks, CFG, left padding, EOS), Fast-dLLM threshold
    cache.py        Fast-dLLM's approximate KV cache (prefix / dual) for bidirectional masked LMs
    genppl.py       generative perplexity under a judge AR model, with the samples' unigram entropy
    samplers.py     the one sampler signature, the denoisers each method's network is adapted to, SAMPLERS
    likelihood.py   Monte-Carlo ELBOs (LLaDA stratified, MDLM continuous-time) -> nats/token, perplexity
    sedd.py         SEDD: absorbing / uniform graphs, score entropy, Euler and Tweedie samplers
    bd3.py          BD3-LM: block masks, block NELBO (bd3lms' resampling), KV-cached semi-autoregressive sampler
    clipsearch.py   BD3-LM's data-driven clipped schedule: bd3lms' grid, block-loss variance, argmin
    ar.py           autoregressive baseline: loss, exact NLL, KV-cached decoding

Convention: the tokenizer's ids are 0..V-1 (PAD/EOS/BOS included); the mask token is `mask_id` = V, so a
denoiser outputs V + 1 logits. A denoiser is `logits_fn(x_t, t) -> logits (B, L, V+1)`.

The glue (network.py: the network wrapper; task.py: the Task and the method table; evaluate.py: held-out bounds;
presets.py) is not imported here, so the math imports nothing of unigen but `unigen.errors`.
"""
from unigen.families.discrete_diffusion.ar import ar_loss, ar_nll, ar_token_nll, sample_ar
from unigen.families.discrete_diffusion.bd3 import (bd3_attention_mask, bd3_loss, bd3_nelbo, bd3_positions, bd3_token_nll,
                                 block_causal, sample_bd3)
from unigen.families.discrete_diffusion.cache import sample_fast_dllm
from unigen.families.discrete_diffusion.clipsearch import batch_variance, block_losses, choose, clip_grid
from unigen.families.discrete_diffusion.categorical import add_gumbel_noise, sample_categorical, sample_logits
from unigen.families.discrete_diffusion.genppl import generative_perplexity, unigram_entropy
from unigen.families.discrete_diffusion.likelihood import elbo_stratified, nelbo_mdlm, summarize
from unigen.families.discrete_diffusion.masked import (mdlm_loss, mdlm_token_nll, noise_level, posterior_probs, q_xt,
                                                       nucleus, sample_first_hitting, sample_mdlm, sft_loss,
                                                       subs_log_probs)
from unigen.families.discrete_diffusion.noise import (SCHEDULES, alpha, esigm1, geometric, loglinear, move_chance, nelbo_weight,
                                   sample_clipped_t, sample_t)
from unigen.families.discrete_diffusion.llada import guided_logits, left_pad, num_transfer_tokens, sample_llada
from unigen.families.discrete_diffusion.samplers import (SAMPLERS, BlockDenoiser, CausalDenoiser, MaskedDenoiser,
                                                         ScoreDenoiser, options)
from unigen.families.discrete_diffusion.sedd import (perturb, reverse_rate, sample_sedd_analytic, sample_sedd_euler, score_entropy,
                                  sedd_loss, sedd_token_loss, staggered_score, subs_to_log_score, transp_transition,
                                  tweedie_probs)

__all__ = [
    "ar_loss", "ar_nll", "ar_token_nll", "sample_ar",
    "bd3_attention_mask", "bd3_loss", "bd3_nelbo", "bd3_positions", "bd3_token_nll", "block_causal", "sample_bd3",
    "batch_variance", "block_losses", "choose", "clip_grid",
    "sample_fast_dllm", "generative_perplexity", "unigram_entropy", "left_pad", "nucleus", "sample_first_hitting",
    "add_gumbel_noise", "sample_categorical", "sample_logits",
    "elbo_stratified", "nelbo_mdlm", "summarize",
    "mdlm_loss", "mdlm_token_nll", "noise_level", "posterior_probs", "q_xt", "sft_loss", "subs_log_probs",
    "SCHEDULES", "alpha", "esigm1", "geometric", "loglinear", "move_chance", "nelbo_weight", "sample_clipped_t",
    "sample_t",
    "guided_logits", "num_transfer_tokens", "sample_llada", "sample_mdlm",
    "SAMPLERS", "BlockDenoiser", "CausalDenoiser", "MaskedDenoiser", "ScoreDenoiser", "options",
    "perturb", "reverse_rate", "sample_sedd_analytic", "sample_sedd_euler", "score_entropy", "sedd_loss",
    "sedd_token_loss",
    "staggered_score", "subs_to_log_score", "transp_transition", "tweedie_probs",
]
