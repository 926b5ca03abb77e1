"""unigen: faithful, tested, fast generative models in one system.

    import unigen
    model = unigen.load("runs/mnist-edm")          # a trained run directory -> model ready for sampling

Importing unigen before torch sets GOMP_SPINCOUNT=10000 unless the user set it or OMP_WAIT_POLICY. OpenMP reads it
once, when torch loads it: a program that imports torch first keeps OpenMP's default spin-waiting, which on a CPU
shared with other processes made training several times slower here (benchmarks/contention.md).
"""
import os

# A thread that finishes a parallel region spins GOMP_SPINCOUNT iterations (libgomp, torch's OpenMP) before it sleeps.
# libgomp's default, 300000 (~3 ms), steals the cores other programs need: 5-7x slower training beside one busy
# process. OMP_WAIT_POLICY=PASSIVE (0) pays a wake-up per parallel region: 1.5x slower on an idle machine. 10000
# (~0.1 ms) was as fast as the default when idle and 1.1-1.3x passive's time beside a busy process. Set before
# anything loads torch; a user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from unigen.errors import UserError  # noqa: E402
from unigen.run import evaluate, load, sample, train  # noqa: E402

__version__ = "0.1.0"
__all__ = ["load", "train", "sample", "evaluate", "UserError", "__version__"]
