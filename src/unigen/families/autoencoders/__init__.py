"""Compress, then generate: autoencoders whose latents other families build on.

    blocks.py      the LDM / VQGAN conv Encoder and Decoder (ResnetBlocks, mid attention, resamplers)
    gaussian.py    the VAE's math: diagonal Gaussian posterior, closed-form KL, reparameterisation, discretised
                   logistic and Bernoulli likelihoods, ELBO, IWAE bound, bits/dim
    losses.py      per-image reconstruction, the KL autoencoder's objective, log p(x|z)
    network.py     AutoencoderConfig and the stable API: build_autoencoder(model_cfg, data_info) -> module with
                   encode(x) -> z, decode(z) -> x, latent_shape(image_shape)
"""
