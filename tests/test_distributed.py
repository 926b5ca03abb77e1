"""2 processes (torchrun, gloo on CPU) give the same weights as 1 process at the doubled batch."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from unigen.train.checkpoint import load_safetensors

WORKER = Path(__file__).with_name("ddp_worker.py")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def test_two_processes_equal_one_at_double_batch(tmp_path):
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, str(WORKER), str(one), "32"], check=True, env=_env(), timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(WORKER), str(two), "16"], check=True, env=_env(), timeout=300)
    a, b = load_safetensors(one), load_safetensors(two)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # and training did move the weights (the check is not vacuous)
    torch.manual_seed(0)
    init = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1)).state_dict()
    assert not torch.allclose(init["0.weight"], a["0.weight"])
