"""How models are measured, shared by every family: classification (cross-entropy, accuracy), sample quality
(sliced Wasserstein, MMD, Frechet distance), and the MNIST feature network behind the Frechet distance."""
