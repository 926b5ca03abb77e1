"""Discrete diffusion language-model math: pure functions of tensors over a denoiser callable.

    noise.py        schedules sigma(t) (log-linear, geometric), NELBO weight, antithetic / clipped time sampling
    categorical.py  float64 Gumbel-max sampling (LLaDA's add_gumbel_noise), temperature, top-k
    masked.py       MDLM / LLaDA: absorbing forward process, SUBS parameterisation, NELBO and SFT losses
    samplers.py     MDLM ancestral, LLaDA (low-confidence / random remasking, blocks, CFG), Fast-dLLM threshold;
                    the registry SAMPLERS
    likelihood.py   Monte-Carlo ELBOs (LLaDA stratified, MDLM continuous-time) -> nats/token, perplexity
    sedd.py         SEDD: absorbing / uniform graphs, score entropy, Euler and Tweedie samplers
    bd3.py          BD3-LM: block masks, block NELBO, KV-cached semi-autoregressive sampler
    ar.py           autoregressive baseline: loss, exact NLL, KV-cached decoding

Convention: the tokenizer's ids are 0..V-1 (PAD/EOS/BOS included); the mask token is `mask_id` = V, so a
denoiser outputs V + 1 logits. A denoiser is `logits_fn(x_t, t) -> logits (B, L, V+1)`.
"""
from unigen.families.discrete_diffusion.ar import ar_loss, ar_nll, ar_token_nll, sample_ar
from unigen.families.discrete_diffusion.bd3 import (bd3_attention_mask, bd3_loss, bd3_nelbo, bd3_positions, bd3_token_nll,
                                 block_causal, sample_bd3)
from unigen.families.discrete_diffusion.categorical import add_gumbel_noise, sample_categorical, sample_logits
from unigen.families.discrete_diffusion.likelihood import elbo_stratified, nelbo_mdlm, summarize
from unigen.families.discrete_diffusion.masked import (mdlm_loss, mdlm_token_nll, noise_level, posterior_probs, q_xt, sft_loss,
                                    subs_log_probs)
from unigen.families.discrete_diffusion.noise import (SCHEDULES, alpha, esigm1, geometric, loglinear, move_chance, nelbo_weight,
                                   sample_clipped_t, sample_t)
from unigen.families.discrete_diffusion.samplers import SAMPLERS, guided_logits, num_transfer_tokens, sample_llada, sample_mdlm
from unigen.families.discrete_diffusion.sedd import (perturb, reverse_rate, sample_sedd_analytic, sample_sedd_euler, score_entropy,
                                  sedd_loss, staggered_score, subs_to_log_score, transp_transition,
                                  tweedie_probs)

__all__ = [
    "ar_loss", "ar_nll", "ar_token_nll", "sample_ar",
    "bd3_attention_mask", "bd3_loss", "bd3_nelbo", "bd3_positions", "bd3_token_nll", "block_causal", "sample_bd3",
    "add_gumbel_noise", "sample_categorical", "sample_logits",
    "elbo_stratified", "nelbo_mdlm", "summarize",
    "mdlm_loss", "mdlm_token_nll", "noise_level", "posterior_probs", "q_xt", "sft_loss", "subs_log_probs",
    "SCHEDULES", "alpha", "esigm1", "geometric", "loglinear", "move_chance", "nelbo_weight", "sample_clipped_t",
    "sample_t",
    "SAMPLERS", "guided_logits", "num_transfer_tokens", "sample_llada", "sample_mdlm",
    "perturb", "reverse_rate", "sample_sedd_analytic", "sample_sedd_euler", "score_entropy", "sedd_loss",
    "staggered_score", "subs_to_log_score", "transp_transition", "tweedie_probs",
]
