"""Normalizing flows with exact likelihood: NICE (Dinh et al. 2015), RealNVP (Dinh et al. 2017), Glow (Kingma &
Dhariwal 2018). Every layer has `forward(x) -> (z, log|det dz/dx|)` and an exact `inverse(z)`.

    layers.py      ActNorm (data-dependent init, saved), InvConv1x1 (plain or LU), Squeeze, Flatten,
                   DiagonalScaling (NICE), Shift, LogitTransform (RealNVP pre-processing)
    coupling.py    Coupling (additive / tanh affine / Glow's sigmoid affine; alternate, checkerboard, channel
                   partitions), the MLP and conv networks, ZeroConv2d
    priors.py      StandardPrior (Gaussian, logistic), LearnedPrior, SplitPrior; temperature sampling
    model.py       FlowModel: the multi-scale container (factor-out), log_prob, sample, first_nonfinite
    dequantize.py  reduce_bits, dequantize, quantize, bits_per_dim
"""
