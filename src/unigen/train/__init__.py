"""The generic training machinery: `fit()` over one loss or several `Objective`s, the checkpoint format, and
`all_gather_with_grad` for losses over the global batch (CLIP)."""
from unigen.train.distributed import all_gather_with_grad
from unigen.train.loop import FitResult, fit
from unigen.train.objective import Objective
from unigen.train.optim import lr_at

__all__ = ["fit", "FitResult", "Objective", "lr_at", "all_gather_with_grad"]
