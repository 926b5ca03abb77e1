"""Model families, one folder each: pure-math modules, one `task.py` (the glue: a `unigen.task.Task`) and one
`presets.py` (small functions returning a `Config`), registered in `unigen.registry`.

    classify               image classifiers (ViT, MLP)
    continuous_diffusion   DDPM, DDIM, score SDEs, EDM, flow matching, rectified flow, guidance (EDM variables)
    discrete_diffusion     MDLM / LLaDA, SEDD, BD3-LM and the autoregressive baseline over token ids

A family that builds on another (latent diffusion = an autoencoder + the diffusion math) declares it in its
`__init__.py` as `USES = ("continuous_diffusion", ...)`; families import no other family. ARCHITECTURE.md has the
rules (a test enforces them) and a worked example of adding a family.
"""
