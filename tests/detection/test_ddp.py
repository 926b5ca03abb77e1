"""DETR's box normalisation across processes: 2 processes (torchrun, gloo) with unequal numbers of boxes give, after
gradient averaging, the gradient of 1 process on the whole batch (N_boxes = all-reduced count / world size)."""
import os
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("ddp_boxes_worker.py")


def run(out: Path, processes: int) -> torch.Tensor:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, str(WORKER), str(out)] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
         str(WORKER), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return torch.load(out)


def test_two_processes_give_the_global_batch_gradient(tmp_path):
    one, two = run(tmp_path / "one.pt", 1), run(tmp_path / "two.pt", 2)
    assert one.abs().sum() > 0 and torch.allclose(one, two, atol=1e-7)
