"""unigen: faithful, tested, fast generative models in one system.

    import unigen
    model = unigen.load("runs/mnist-edm")          # a trained run directory -> model ready for sampling

Importing unigen before torch sets OMP_WAIT_POLICY=PASSIVE unless the user set it. OpenMP reads it once, when
torch loads it: a program that imports torch first keeps OpenMP's default spin-waiting, which on a CPU shared with
other processes made training several times slower here (benchmarks/contention.md).
"""
import os

# Threads that finish a parallel region sleep instead of spinning for ~300k iterations: on a busy machine the
# spinning threads steal the cores the other threads of the same matmul need. Set before anything loads torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from unigen.errors import UserError  # noqa: E402
from unigen.run import evaluate, load, sample, train  # noqa: E402

__version__ = "0.1.0"
__all__ = ["load", "train", "sample", "evaluate", "UserError", "__version__"]
