"""unigen: faithful, tested, fast generative models in one system.

    import unigen
    model = unigen.load("runs/mnist-edm")          # a trained run directory -> model ready for sampling
"""
from unigen.errors import UserError
from unigen.run import evaluate, load, sample, train

__version__ = "0.1.0"
__all__ = ["load", "train", "sample", "evaluate", "UserError", "__version__"]
