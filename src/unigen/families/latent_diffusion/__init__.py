"""Latent diffusion with text prompts (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models"): Stable Diffusion in miniature, composed of a trained KL autoencoder run (the autoencoders family) and the
continuous-diffusion math, with a text encoder and a cross-attention UNet trained jointly on the shapes captions.

    conditioning.py  drop_captions (10% caption dropout), text_guided (classifier-free guidance with a text
                     context), std_scale_factor (LDM's scale_by_std)
    network.py       LatentDiffusionConfig, LatentDiffusionNet (frozen autoencoder + text encoder + UNet), the
                     autoencoder-run loader, generate (prompt -> latents -> images)
    task.py          the Task: build, loss, sample (--prompt, --guidance), evaluate
    evaluate.py      the attribute classifier, prompt adherence and Frechet distance on its features
    presets.py       shapes-ldm
"""
USES = ("continuous_diffusion", "autoencoders")
