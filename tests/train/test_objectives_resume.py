"""Exact resume of a two-optimizer run (a 2-D GAN with an EMA of its generator, dropout and latents drawn from the
checkpointed RNG): after an exception in process, and after real SIGKILLs of a training process.

Oracle: the uninterrupted run. The resumed run must end with the same bytes in model.safetensors, ema.safetensors
and every file of the last checkpoint (both optimizers, RNG), and log the same losses."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unigen.train import fit
from unigen.train import checkpoint as ckpt

sys.path.insert(0, str(Path(__file__).parent))
from gan_toy import Blobs, config, disc_loss, make_model, objectives  # noqa: E402

TOY = Path(__file__).with_name("gan_toy.py")


def final_state(run: Path) -> dict[str, bytes]:
    last = ckpt.latest_checkpoint(run)
    out = {name: (run / name).read_bytes() for name in ("model.safetensors", "ema.safetensors")}
    out.update({f"ckpt/{p.name}": p.read_bytes() for p in sorted(last.glob("*.safetensors"))})
    out["ckpt_step"] = last.name.encode()
    return out


def losses(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in d.items() if k.startswith(("step", "loss"))} for d in lines]


def assert_same_run(ref: Path, run: Path) -> None:
    a, b = final_state(ref), final_state(run)
    assert a.keys() == b.keys() and {"ckpt/optimizer_gen.safetensors", "ckpt/optimizer_disc.safetensors"} <= set(a)
    for k in a:
        assert a[k] == b[k], f"{k} differs from the uninterrupted run"
    assert losses(ref) == losses(run)


def test_exception_then_resume_is_bit_exact(tmp_path):
    cfg = config(steps=12, ckpt_every=3, ema_decay=0.9)
    fit(make_model(dropout=0.1), objectives(), Blobs(with_z=False), cfg, tmp_path / "ref",
        ema_of=lambda m: m.generator)
    calls = {"n": 0}

    class Crash(Exception):
        pass

    def crashing(model, batch):  # the discriminator (steps 3, 5, ..., 11) fails in step 11; last checkpoint: 9
        calls["n"] += 1
        if calls["n"] == 9:
            raise Crash
        return disc_loss(model, batch)

    with pytest.raises(Crash):
        fit(make_model(dropout=0.1), objectives(disc=crashing), Blobs(with_z=False), cfg, tmp_path / "run",
            ema_of=lambda m: m.generator)
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step_0000009"
    # step 10 does not run the discriminator: its metric line must repeat the latest values, saved in step 9
    fit(make_model(seed=7, dropout=0.1), objectives(), Blobs(with_z=False), cfg, tmp_path / "run", resume=True,
        ema_of=lambda m: m.generator)
    assert_same_run(tmp_path / "ref", tmp_path / "run")


def _launch(run: Path, resume: bool, log) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return subprocess.Popen([sys.executable, str(TOY), str(run), *(["--resume"] if resume else [])],
                            env=env, stdout=log, stderr=log)


def _wait_step(proc: subprocess.Popen, metrics: Path, step: int, timeout: float = 300) -> bool:
    """Until metrics.jsonl logs `step` (log_every=1) or the process ended; True if it still runs."""
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if lines and lines[-1].endswith("}") and json.loads(lines[-1])["step"] >= step:
            return True
        time.sleep(0.002)
    return proc.poll() is None


def test_sigkill_mid_run_resumes_bit_exact(tmp_path):
    """Three SIGKILLs of `gan_toy.py` (30 steps, a checkpoint every 3): before the first checkpoint, then at
    later logged steps plus up to 10 ms, which often lands inside a checkpoint save; each time --resume."""
    ref, run = tmp_path / "ref", tmp_path / "killed"
    rng = random.Random(0)
    with open(tmp_path / "log.txt", "ab") as log:
        reference = _launch(ref, False, log)  # runs beside the killed ones
        killed = 0
        for i, target in enumerate((1, 12, 23)):
            proc = _launch(run, i > 0, log)
            if _wait_step(proc, run / "metrics.jsonl", target):
                time.sleep(rng.uniform(0, 0.01) if i else 0)
                proc.send_signal(signal.SIGKILL)
            killed += proc.wait(timeout=300) == -signal.SIGKILL
            if i == 0:
                assert not ckpt.checkpoint_dirs(run), "the first kill came after a checkpoint"
        assert _launch(run, True, log).wait(timeout=300) == 0, (tmp_path / "log.txt").read_text()[-3000:]
        assert reference.wait(timeout=300) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    assert killed == 3
    assert_same_run(ref, run)
