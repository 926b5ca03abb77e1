"""Exact resume after a kill at any moment, checkpoints that cannot be corrupted, and the non-finite guard.

Oracle: the uninterrupted run. A run killed anywhere (SIGKILL of a real `python -m unigen train` process, or the
disk state captured just before any file-system operation of a run) and resumed with `--resume`, possibly several
times, must end with the same bytes in model.safetensors, ema.safetensors and the final checkpoint's optimizer and
RNG files, and the same losses in metrics.jsonl. The runs draw training noise from the checkpointed RNG (dropout in
the classifier; noise levels and noise in the diffusion loss) and carry EMA and AdamW state, so every part of the
training state must come back.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unigen import cli
from unigen.errors import NonFiniteError, UserError
from unigen.registry import PRESETS
from unigen.train import checkpoint as ckpt

PRESET = "mlp-digits"
TINY = ["--train.steps=24", "--train.ckpt_every=4", "--train.keep_last=2", "--train.log_every=2",
        "--train.ema_decay=0.9", "--model.dropout=0.1", "--model.hidden=32", "--train.batch_size=32",
        "--train.progress=false"]
FINAL_FILES = ("model.safetensors", "ema.safetensors")
# a diffusion preset too (if registered): its loss draws noise levels and noise from the checkpointed RNG
DIFFUSION = "toy2d-edm"
TINY_DIFFUSION = ["--train.steps=24", "--train.ckpt_every=4", "--train.keep_last=2", "--train.log_every=2",
                  "--train.batch_size=64", "--train.ema_decay=0.9", "--train.progress=false"]


def final_state(run: Path) -> dict[str, bytes]:
    """Everything that must match bit for bit: weights, EMA, and the last checkpoint's optimizer and RNG."""
    last = ckpt.latest_checkpoint(run)
    out = {name: (run / name).read_bytes() for name in FINAL_FILES}
    out.update({f"ckpt/{p.name}": p.read_bytes() for p in sorted(last.glob("*.safetensors"))})
    out["ckpt_step"] = last.name.encode()
    return out


def losses(run: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(d["step"], d["loss"]) for d in lines if "loss" in d]


def assert_same_run(ref: Path, run: Path) -> None:
    a, b = final_state(ref), final_state(run)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], f"{k} differs from the uninterrupted run"
    assert losses(ref) == losses(run)
    leftovers = list((run / "checkpoints").glob(".*")) + list(run.glob(".*"))
    assert not leftovers, f"hidden leftovers of killed saves were not cleaned: {leftovers}"


def cli_run(argv: list[str]) -> None:
    assert cli.run(argv) == 0


# --- kill just before every file-system operation (in process: the disk state at that instant) ------------

class DiskCapture:
    """Counts the file-system operations of a run (writes, fsyncs, renames, deletions) and copies the run
    directory just before the chosen ones: that copy is exactly what a SIGKILL at that instant leaves on disk.
    fsync itself is skipped: a process kill does not lose page-cache data, and it makes the run 3x faster."""

    def __init__(self, monkeypatch, run: Path, dest: Path, at: set[int] | None):
        self.run, self.dest, self.at, self.n, self.busy = run, dest, at, 0, False
        for mod, name in ((os, "replace"), (os, "rename"), (shutil, "rmtree"), (ckpt, "save_file")):
            monkeypatch.setattr(mod, name, self.wrap(getattr(mod, name)))
        monkeypatch.setattr(os, "fsync", self.wrap(lambda fd: None))

    def wrap(self, fn):
        def op(*a, **kw):
            if not self.busy:
                self.n += 1
                if self.at is None or self.n in self.at:
                    self.busy, snap = True, self.dest / f"op{self.n:04d}"
                    if self.run.exists():
                        shutil.copytree(self.run, snap, copy_function=_copy_or_link)
                    else:
                        snap.mkdir(parents=True)
                    self.busy = False
            return fn(*a, **kw)
        return op


def capture(root: Path, preset: str, flags: list[str]) -> tuple[Path, list[Path]]:
    """One uninterrupted run with the disk state captured before each of its file-system operations."""
    mp = pytest.MonkeyPatch()
    try:
        DiskCapture(mp, root / "ref", root / "snaps", None)
        cli_run(["train", preset, "--out", str(root / "ref"), *flags])
    finally:
        mp.undo()
    return root / "ref", sorted((root / "snaps").iterdir())


def _copy_or_link(src: str, dst: str) -> None:
    """safetensors files are never changed after their rename into place (new versions are new files), so a hard
    link is a faithful snapshot and saves gigabytes of copies; everything else (metrics.jsonl grows) is copied."""
    if src.endswith(".safetensors"):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    return capture(tmp_path_factory.mktemp("capture"), PRESET, TINY)


@pytest.fixture(scope="module")
def captured_diffusion(tmp_path_factory):
    if DIFFUSION not in PRESETS:
        pytest.skip(f"{DIFFUSION} is not registered")
    return capture(tmp_path_factory.mktemp("capture_diffusion"), DIFFUSION, TINY_DIFFUSION)


def resume_snapshot(snap: Path, monkeypatch, preset: str = PRESET, flags: list[str] = TINY) -> None:
    """What a user does after the kill: `--resume` if the run directory got its config.json, else start again."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    if (snap / "config.json").exists():
        cli_run(["train", preset, "--out", str(snap), "--resume"])  # the saved config, no overrides
    else:
        cli_run(["train", preset, "--out", str(snap), *flags])


def test_capture_covers_every_phase(captured):
    ref, snaps = captured
    has = [((s / "config.json").exists(), len(ckpt.checkpoint_dirs(s)), any((s / "checkpoints").glob(".tmp-*")))
           for s in snaps]
    assert len(snaps) > 100
    assert any(not c for c, _, _ in has), "no kill point before config.json"
    assert any(c and n == 0 for c, n, _ in has), "no kill point between config.json and the first checkpoint"
    assert sum(t for _, _, t in has) > 20, "few kill points in the middle of a checkpoint save"


@pytest.mark.parametrize("frac", [0.0, 0.01, 0.03, 0.05, 0.12, 0.25, 0.37, 0.5, 0.63, 0.77, 0.9, 0.97, 1.0])
def test_kill_before_fs_operation_resumes_exactly(captured, frac, monkeypatch):
    ref, snaps = captured
    snap = snaps[round(frac * (len(snaps) - 1))]
    resume_snapshot(snap, monkeypatch)
    assert_same_run(ref, snap)
    shutil.rmtree(snap)


@pytest.mark.parametrize("frac", [0.02, 0.31, 0.58, 0.86, 1.0])
def test_diffusion_kill_before_fs_operation_resumes_exactly(captured_diffusion, frac, monkeypatch):
    ref, snaps = captured_diffusion
    snap = snaps[round(frac * (len(snaps) - 1))]
    resume_snapshot(snap, monkeypatch, DIFFUSION, TINY_DIFFUSION)
    assert_same_run(ref, snap)
    shutil.rmtree(snap)


@pytest.mark.slow
def test_kill_before_every_fs_operation_resumes_exactly(captured, captured_diffusion, monkeypatch):
    for (ref, snaps), preset, flags in ((captured, PRESET, TINY), (captured_diffusion, DIFFUSION, TINY_DIFFUSION)):
        for snap in snaps:
            if snap.exists():  # not already resumed by the fast test
                resume_snapshot(snap, monkeypatch, preset, flags)
                assert_same_run(ref, snap)
                shutil.rmtree(snap)


# --- real SIGKILLs of `python -m unigen train` ---------------------------------------------------------

# the diffusion preset starts faster (no scikit-learn import); saves follow every 3rd step, logs every step
_LONG = ["--train.steps=30", "--train.ckpt_every=3", "--train.keep_last=2", "--train.log_every=1",
         "--train.ema_decay=0.9", "--train.progress=false"]
if DIFFUSION in PRESETS:
    KILL_PRESET, LONG = DIFFUSION, _LONG + ["--model.size=tiny", "--train.batch_size=64"]
else:
    KILL_PRESET, LONG = PRESET, _LONG + ["--model.hidden=64", "--model.dropout=0.1"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _launch(out: Path, extra: list[str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "unigen", "train", KILL_PRESET, "--out", str(out), *extra],
                            env=_env(), stdout=log, stderr=log)


def _wait_training(proc: subprocess.Popen, metrics: Path, since: float, timeout: float = 300) -> bool:
    """Until fit() has started (it creates or rewrites metrics.jsonl) or the process ended; True if it runs."""
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if metrics.exists() and metrics.stat().st_mtime > since:
            return True
        time.sleep(0.002)
    return proc.poll() is None


def _wait_step(proc: subprocess.Popen, metrics: Path, step: int, timeout: float = 300) -> bool:
    """Until metrics.jsonl logs `step` (log_every=1) or the process ended; True if it still runs."""
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        lines = metrics.read_text().splitlines()
        if lines and lines[-1].endswith("}") and json.loads(lines[-1])["step"] >= step:
            return True
        time.sleep(0.002)
    return proc.poll() is None


def kill_and_resume(tmp_path: Path, n_kills: int, seed: int) -> dict:
    """An uninterrupted reference run, and the same run killed `n_kills` times and resumed each time: first as
    soon as training starts (before any checkpoint), then at a random step of what is left plus a random delay
    of up to 20 ms, which lands in a checkpoint save about a third of the time (saves follow every 3rd step).
    Kill points are chosen by the progress the run logs, not by wall time, so a loaded machine changes nothing."""
    steps = int(LONG[0].split("=")[1])
    rng = random.Random(seed)
    ref, run = tmp_path / "ref", tmp_path / "killed"
    log = open(tmp_path / "log.txt", "ab")
    reference = _launch(ref, LONG, log)  # runs beside the killed ones
    report = {"killed": 0, "before_first_ckpt": 0, "mid_save": 0}
    extra = LONG
    for i in range(n_kills):
        latest = ckpt.latest_checkpoint(run) if run.exists() else None
        done = int(latest.name.split("_")[1]) if latest else 0
        started = time.time()
        proc = _launch(run, extra, log)
        target = rng.randint(min(done + 1, steps - 1), steps - 1) if i else 0
        if _wait_training(proc, run / "metrics.jsonl", started - 1e-3) and (
                i == 0 or _wait_step(proc, run / "metrics.jsonl", target)):
            time.sleep(rng.uniform(0, 0.02) if i else 0)
            proc.send_signal(signal.SIGKILL)
        if proc.wait(timeout=300) == -signal.SIGKILL:
            report["killed"] += 1
            report["before_first_ckpt"] += not ckpt.checkpoint_dirs(run)
            report["mid_save"] += any((run / "checkpoints").glob(".tmp-*"))
        extra = ["--resume"] + (LONG if i % 2 else [])  # resume with the saved config, or repeating the flags
    proc = _launch(run, ["--resume"], log)
    assert proc.wait(timeout=300) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    assert reference.wait(timeout=300) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    log.close()
    assert_same_run(ref, run)
    return report


def test_sigkill_three_times_resumes_bit_exact(tmp_path):
    report = kill_and_resume(tmp_path, n_kills=3, seed=0)
    assert report["killed"] == 3 and report["before_first_ckpt"] == 1, report


@pytest.mark.slow
def test_sigkill_twenty_times_resumes_bit_exact(tmp_path):
    report = kill_and_resume(tmp_path, n_kills=20, seed=1)
    print(report)
    assert report["killed"] == 20 and report["mid_save"] >= 1, report


# --- saves that fail midway, damaged and foreign checkpoints -------------------------------------------

def test_failure_inside_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    ref, run = tmp_path / "ref", tmp_path / "run"
    cli_run(["train", PRESET, "--out", str(ref), *TINY])
    real, calls = ckpt.save_file, {"n": 0}

    def failing(tensors, path, **kw):  # the disk fills up in the middle of the 3rd checkpoint (6 files each)
        calls["n"] += 1
        if calls["n"] == 15:
            raise OSError(28, "No space left on device", path)
        return real(tensors, path, **kw)

    monkeypatch.setattr(ckpt, "save_file", failing)
    with pytest.raises(OSError):
        cli_run(["train", PRESET, "--out", str(run), *TINY])
    monkeypatch.setattr(ckpt, "save_file", real)
    # the temp folder of the failed save is gone, the previous checkpoints are intact
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000004", "step_0000008"]
    state, files = ckpt.read_checkpoint(ckpt.latest_checkpoint(run))
    assert state["step"] == 8 and {"model", "ema", "optimizer", "rng"} <= set(files)
    cli_run(["train", PRESET, "--out", str(run), "--resume"])
    assert_same_run(ref, run)


def test_damaged_newest_checkpoint_falls_back_with_warning(tmp_path, capsys):
    """Decision: resume warns, names the damaged checkpoint and the problem, renames it to damaged-step_*, and
    continues from the newest intact one; an exact resume from there reproduces the uninterrupted run."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    cli_run(["train", PRESET, "--out", str(ref), *TINY, "--train.keep_last=3"])
    shutil.copytree(ref, run)
    victim = run / "checkpoints" / "step_0000024" / "optimizer.safetensors"
    victim.write_bytes(victim.read_bytes()[:-100])  # e.g. a disk error after the save
    (run / "model.safetensors").unlink()
    capsys.readouterr()
    cli_run(["train", PRESET, "--out", str(run), "--resume"])
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "step_0000024" in err and "truncated or altered" in err
    assert "resuming from step_0000020" in err
    assert (run / "checkpoints" / "damaged-step_0000024").is_dir()
    assert [d.name for d in ckpt.checkpoint_dirs(run)] == ["step_0000016", "step_0000020", "step_0000024"]
    assert_same_run(ref, run)


def test_no_intact_checkpoint_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    cli_run(["train", PRESET, "--out", str(run), *TINY, "--train.steps=8"])
    for d in ckpt.checkpoint_dirs(run):
        (d / "model.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(UserError, match=r"no intact checkpoint .*truncated or altered.*--overwrite"):
        cli.run(["train", PRESET, "--out", str(run), "--resume"])
    assert len(ckpt.checkpoint_dirs(run)) == 2  # nothing renamed or deleted


def test_foreign_and_malformed_checkpoints_are_detected(tmp_path):
    d = tmp_path / "step_0000001"
    d.mkdir()
    with pytest.raises(UserError, match="no state.json"):
        ckpt.read_checkpoint(d)
    (d / "state.json").write_text('{"format": "lightning-v2", "step": 1}')
    with pytest.raises(UserError, match="not a unigen checkpoint"):
        ckpt.read_checkpoint(d)
    (d / "state.json").write_text(json.dumps({"format": ckpt.FORMAT, "step": 1, "files": {"../x.safetensors": 3}}))
    with pytest.raises(UserError, match="malformed"):
        ckpt.read_checkpoint(d)
    (d / "state.json").write_bytes(b"\x80\x04\x95 not json")
    with pytest.raises(UserError, match="not valid JSON"):
        ckpt.read_checkpoint(d)
    (d / "state.json").write_text(json.dumps({"format": ckpt.FORMAT, "step": 1,
                                              "files": {"model.safetensors": {"bytes": 1, "sha256": "0" * 64}}}))
    with pytest.raises(UserError, match="model.safetensors is missing"):
        ckpt.read_checkpoint(d)


def test_checkpoint_of_another_model_is_refused_on_resume(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    cli_run(["train", PRESET, "--out", str(run), *TINY, "--train.steps=4"])
    cli_run(["train", PRESET, "--out", str(other), *TINY, "--train.steps=4", "--model.hidden=16"])
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(other / "checkpoints", run / "checkpoints")
    with pytest.raises(UserError, match="does not match this model"):
        cli.run(["train", PRESET, "--out", str(run), "--resume"])
    with pytest.raises(UserError, match=r"cannot resume .* with model.hidden=16: the run was trained with 32"):
        cli.run(["train", PRESET, "--out", str(run), "--resume", "--model.hidden=16"])


def test_keep_last_and_atomic_pruning(tmp_path):
    run = tmp_path / "run"
    cli_run(["train", PRESET, "--out", str(run), *TINY, "--train.keep_last=3"])
    assert [d.name for d in ckpt.checkpoint_dirs(run)] == ["step_0000016", "step_0000020", "step_0000024"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [d.name for d in ckpt.checkpoint_dirs(run)]


# --- the non-finite guard ------------------------------------------------------------------------------

def _poison(monkeypatch, at_call: int, value: float):
    from unigen.families.classify.task import TASK
    real, calls = TASK.loss, {"n": 0}

    def loss(model, batch):
        calls["n"] += 1
        out, logs = real(model, batch)
        return (out * value if calls["n"] == at_call else out), logs

    monkeypatch.setattr(TASK, "loss", loss)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_stop_through_cli(tmp_path, monkeypatch, capsys, value):
    run = tmp_path / "run"
    _poison(monkeypatch, at_call=11, value=value)
    with pytest.raises(SystemExit) as e:
        cli.main(["train", PRESET, "--out", str(run), *TINY])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: non-finite loss at step 11")
    assert "Traceback" not in err and str(run / "checkpoints") in err
    state, _ = ckpt.read_checkpoint(ckpt.latest_checkpoint(run))
    assert state["step"] == 8
    weights = ckpt.load_safetensors(run / "model.safetensors")
    saved = ckpt.read_checkpoint(ckpt.latest_checkpoint(run))[1]["model"]
    assert all(torch.equal(weights[k], v) for k, v in saved.items())
    # the fault was transient: resuming from the last good checkpoint gives the run that never saw it
    monkeypatch.undo()
    cli_run(["train", PRESET, "--out", str(run), "--resume"])
    cli_run(["train", PRESET, "--out", str(tmp_path / "clean"), *TINY])
    assert_same_run(tmp_path / "clean", run)


class _InfGrad(torch.autograd.Function):
    """A term whose value is 0 and whose gradient is +inf everywhere."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.sum() * 0

    @staticmethod
    def backward(ctx, g):
        return torch.full(ctx.shape, float("inf"))


def test_nonfinite_gradient_is_caught(tmp_path, monkeypatch):
    from unigen.families.classify.task import TASK
    real, calls = TASK.loss, {"n": 0}

    def loss(model, batch):  # the loss stays finite, the gradient does not
        calls["n"] += 1
        out, logs = real(model, batch)
        return (out + _InfGrad.apply(next(model.parameters())) if calls["n"] == 3 else out), logs

    monkeypatch.setattr(TASK, "loss", loss)
    with pytest.raises(NonFiniteError, match="non-finite gradient at step 3"):
        cli.run(["train", PRESET, "--out", str(tmp_path / "run"), *TINY])


def test_nonfinite_skip_through_cli(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _poison(monkeypatch, at_call=5, value=float("nan"))
    cli_run(["train", PRESET, "--out", str(run), *TINY, "--train.nonfinite=skip"])
    err = capsys.readouterr().err
    assert "warning: step 5: non-finite loss, step skipped" in err
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["step"] == 24 and last["skipped"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt.load_safetensors(run / "model.safetensors").values())


def test_metric_line_cut_by_a_kill_is_dropped(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    cli_run(["train", PRESET, "--out", str(ref), *TINY])
    shutil.copytree(ref, run)
    shutil.rmtree(ckpt.latest_checkpoint(run))  # the kill came during step 23, after the checkpoint of step 20
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:17])  # half a line, no newline
    cli_run(["train", PRESET, "--out", str(run), "--resume"])
    assert (run / "metrics.jsonl").read_text().count("\n") == len(lines)
    assert_same_run(ref, run)
