"""Continuous diffusion and flow matching math in EDM's variables (Karras et al. 2022).

Everything speaks one language: x = s(t) (x0 + sigma(t) eps) with a denoiser D(x, sigma) -> x0_hat.

    schedules.py   sigma(t), s(t), t(sigma), c_noise(sigma) for DDPM (linear, cosine, scaled-linear), VP, sub-VP,
                   VE, EDM, flow
    grids.py       noise-level grids: karras, vp/subvp/ve/logsnr/polyexponential/flow_sigmas, ddpm_sigmas (with
                   diffusers' spacings, steps_offset, set_alpha_to_one); flow grids may start at t = 1
    precond.py     make_denoiser(net, "eps"|"x0"|"v"|"score"|"flow"|"edm", schedule) -> D
    losses.py      edm_loss, ddpm_loss (eps/x0/v, min-SNR), flow_matching_loss, dsm_loss, drop_labels
    samplers.py    SAMPLERS[name](D, x, sigmas, generator=..., **options), nfe(name, n_steps), invert_ddim;
                   each entry also knows its NFE, default steps and kind (ode | sde | ddpm | flow); the
                   k-diffusion family in samplers_multistage.py, samplers_sde.py, samplers_dpm.py; UniPC in
                   samplers_unipc.py; sampling.py helpers
    noise.py       noise sources for stochastic steps: gaussian (a generator), brownian (torchsde's Brownian tree)
    likelihood.py  ode_nll (exact or Hutchinson trace, RK4 by default), nll_report, native_nll, bits_per_dim,
                   dequantize
    vlb.py         DDPM's variational bound (Ho et al. 2020, Eq. 5) with the discretised Gaussian decoder:
                   ddpm_vlb, vlb_terms, q_posterior, discretized_gaussian_log_likelihood, normal_kl
    guidance.py    guided(D, y, null_id, scale): classifier-free guidance
    analytic.py    Gaussian / GaussianMixture with exact denoisers (test oracles)
"""
from unigen.families.continuous_diffusion.analytic import Gaussian, GaussianMixture
from unigen.families.continuous_diffusion.grids import (ddpm_sigmas, ddpm_timesteps, default_sigmas, flow_sigmas, karras_sigmas,
                                    logsnr_sigmas, polyexponential_sigmas, subvp_sigmas, ve_sigmas, vp_sigmas)
from unigen.families.continuous_diffusion.guidance import cfg_combine, guided
from unigen.families.continuous_diffusion.likelihood import bits_per_dim, dequantize, native_nll, nll_report, ode_nll
from unigen.families.continuous_diffusion.noise import brownian_noise, gaussian_noise
from unigen.families.continuous_diffusion.vlb import (ddpm_vlb, discretized_gaussian_log_likelihood, normal_kl, q_posterior,
                                                      vlb_terms)
from unigen.families.continuous_diffusion.losses import (ddpm_loss, drop_labels, dsm_loss, edm_loss, edm_weight, flow_matching_loss,
                                     min_snr_weight)
from unigen.families.continuous_diffusion.precond import PARAMETERIZATIONS, append_dims, c_in, c_out, c_skip, make_denoiser
from unigen.families.continuous_diffusion.samplers import SAMPLERS, Sampler, get_sampler, invert_ddim, nfe
from unigen.families.continuous_diffusion.schedules import (EDM, SCHEDULES, VE, ContinuousVP, DiscreteVP, Flow, Schedule, SubVP,
                                        ddpm_cosine, ddpm_linear, ddpm_scaled_linear, get_schedule)

__all__ = [
    "Gaussian", "GaussianMixture",
    "ddpm_sigmas", "ddpm_timesteps", "default_sigmas", "flow_sigmas", "karras_sigmas", "logsnr_sigmas",
    "polyexponential_sigmas", "subvp_sigmas", "ve_sigmas", "vp_sigmas",
    "cfg_combine", "guided",
    "bits_per_dim", "dequantize", "native_nll", "nll_report", "ode_nll", "brownian_noise", "gaussian_noise",
    "ddpm_vlb", "discretized_gaussian_log_likelihood", "normal_kl", "q_posterior", "vlb_terms",
    "ddpm_loss", "drop_labels", "dsm_loss", "edm_loss", "edm_weight", "flow_matching_loss", "min_snr_weight",
    "PARAMETERIZATIONS", "append_dims", "c_in", "c_out", "c_skip", "make_denoiser",
    "SAMPLERS", "Sampler", "get_sampler", "invert_ddim", "nfe",
    "EDM", "SCHEDULES", "VE", "ContinuousVP", "DiscreteVP", "Flow", "Schedule", "SubVP", "ddpm_cosine", "ddpm_linear",
    "ddpm_scaled_linear", "get_schedule",
]
