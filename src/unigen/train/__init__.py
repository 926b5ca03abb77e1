"""The generic training machinery: `fit()` and the checkpoint format."""
from unigen.train.loop import FitResult, fit, lr_at

__all__ = ["fit", "FitResult", "lr_at"]
