"""Compress, then generate: autoencoders whose latents other families build on.

    blocks.py      the LDM / VQGAN conv Encoder and Decoder (ResnetBlocks, mid attention, resamplers)
    gaussian.py    the VAE's math: diagonal Gaussian posterior, closed-form KL, reparameterisation, discretised
                   logistic and Bernoulli likelihoods, ELBO, IWAE bound, bits/dim
    losses.py      per-image reconstruction, the KL autoencoder's objective, log p(x|z)
    quantize.py    vector quantisation: nearest code, straight-through, codebook / commitment losses, EMA codebook,
                   perplexity, the VectorQuantizer module (codebook, EMA statistics, dead-code restarts)
    adversarial.py VQGAN's patch discriminator, hinge losses, adaptive weight, disc_start gate, perceptual distance
    network.py     AutoencoderConfig and the stable API: build_autoencoder(model_cfg, data_info) -> module with
                   encode(x) -> z, decode(z) -> x, latent_shape(image_shape); PriorConfig and CodePrior (a
                   transformer over a VQ run's code grid)

The code prior reuses discrete_diffusion's AR and masked-diffusion math (losses, samplers), hence USES.
"""

USES = ("discrete_diffusion",)
