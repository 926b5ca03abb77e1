"""2 processes (torchrun, gloo on CPU) give the same weights as 1 process at the doubled batch: one loss, two
objectives (a GAN whose steps leave parameters without gradients), and a CLIP loss over the global batch.

One worker run per process count computes every case (tests/ddp_worker.py); the tests compare its outputs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unigen.train import all_gather_with_grad
from unigen.train.checkpoint import load_safetensors
from unigen.train.distributed import rank_and_world

WORKER = Path(__file__).with_name("ddp_worker.py")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """(outputs of 1 process at batch 32, outputs of 2 processes at batch 16 each), both run at once."""
    one, two = (tmp_path_factory.mktemp(name) for name in ("one", "two"))
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(one), "32"], env=_env()),
             subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               str(WORKER), str(two), "16"], env=_env())]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    return one, two


def _load(runs, name):
    return [load_safetensors(d / f"{name}.safetensors") for d in runs]


def test_two_processes_equal_one_at_double_batch(runs):
    a, b = _load(runs, "regression")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # and training did move the weights (the check is not vacuous)
    torch.manual_seed(0)
    init = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1)).state_dict()
    assert not torch.allclose(init["0.weight"], a["0.weight"])


def test_two_objectives_two_processes_equal_one(runs):
    """The GAN's generator step back-propagates into the discriminator, its discriminator step leaves the
    generator without gradients, and `spare` never gets one: plain DDP would raise or hang."""
    a, b = _load(runs, "gan")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    sys.path.insert(0, str(Path(__file__).with_name("train")))
    from gan_toy import make_model
    init = make_model().state_dict()
    moved = {k for k in init if not torch.equal(init[k], a[k])}
    assert moved == {k for k in init if not k.startswith("spare.")}


def test_clip_gradients_over_the_global_batch(runs):
    """all_gather_with_grad with the documented normalisation: 2 x 16 gives the gradients of 1 x 32."""
    a, b = _load(runs, "clip_grads")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7, msg=k)
    local = _load(runs, "clip_local_grads")[1]  # without gathering: each process sees only its 16 negatives
    assert not torch.allclose(local["img.weight"], a["img.weight"], rtol=1e-3, atol=1e-5)
    a, b = _load(runs, "clip")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_average_gradients_with_missing_gradients(runs):
    """A gradient on rank 0 only is averaged with zeros (the same on every rank); none anywhere stays None."""
    one, two = (json.loads((d / "unused.json").read_text()) for d in runs)
    assert one == {"p": [1.0] * 3, "same_on_every_rank": True, "q_is_none": True}
    assert two == {"p": [0.5] * 3, "same_on_every_rank": True, "q_is_none": True}


def test_one_process_needs_no_process_group():
    x = torch.randn(4, 3, requires_grad=True)
    assert rank_and_world() == (0, 1) and all_gather_with_grad(x) is x
