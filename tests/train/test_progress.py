"""Progress output: a tqdm bar in a terminal, a bounded number of plain lines in a log file."""
from __future__ import annotations

import io

import torch
from torch import nn

from unigen.config import TrainConfig
from unigen.train import fit
from unigen.train.progress import Progress, work_progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    """A fake clock; `drive` moves it `dt` seconds per step."""

    def __init__(self, dt: float):
        self.t, self.dt = 0.0, dt

    def __call__(self):
        return self.t


def drive(progress: Progress, clock: Clock, start: int, total: int, loss_every: int = 10) -> None:
    for done in range(start + 1, total + 1):
        clock.t += clock.dt
        if done % loss_every == 0:
            progress.set_loss(1.0 / done)
        progress.update(done)
    progress.close()


def test_log_file_gets_a_line_every_5_percent():
    out, clock = io.StringIO(), Clock(0.1)
    drive(Progress(1000, stream=out, clock=clock), clock, 0, 1000)
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 20 and len(text) < 1500
    assert lines[0] == "train step 50/1000 (5%) loss 0.02 10 it/s ETA 1m35s"
    assert lines[-1] == "train step 1000/1000 (100%) loss 0.001 10 it/s"


def test_log_file_gets_a_line_every_30_seconds_when_steps_are_slow():
    out, clock = io.StringIO(), Clock(7.0)
    drive(Progress(1000, 400, stream=out, clock=clock), clock, 400, 430)
    steps = [int(line.split()[2].split("/")[0]) for line in out.getvalue().splitlines()]
    assert steps == [405, 410, 415, 420, 425, 430]  # 35 s apart; a resumed run counts from its first step
    assert out.getvalue().splitlines()[-1].endswith("0.143 it/s ETA 1h06m")  # 570 steps left at 1/7 it/s


def test_work_progress_logs_every_10_seconds_and_nothing_for_short_work():
    out, clock = io.StringIO(), Clock(0.5)                          # 100 calls of 0.5 s: 50 s, a line per 10 s
    drive(work_progress(100, "sample", "call", stream=out, clock=clock), clock, 0, 100, loss_every=10 ** 9)
    lines = out.getvalue().splitlines()
    assert lines[0] == "sample call 20/100 (20%) 2 it/s ETA 40s"
    assert [int(x.split()[2].split("/")[0]) for x in lines] == [20, 40, 60, 80, 100]
    short, clock = io.StringIO(), Clock(0.01)                       # 1 s of work in all: silent in a log
    drive(work_progress(100, "eval", "batch", stream=short, clock=clock), clock, 0, 100, loss_every=10 ** 9)
    assert short.getvalue() == ""
    tty = Terminal()
    drive(work_progress(100, "eval", "batch", stream=tty, clock=clock), clock, 0, 100, loss_every=10 ** 9)
    assert "\r" in tty.getvalue() and "eval" in tty.getvalue()      # a bar in a terminal, however short


def test_terminal_gets_the_bar_and_disabled_gets_nothing():
    tty, clock = Terminal(), Clock(0.1)
    drive(Progress(100, stream=tty, clock=clock), clock, 0, 100)
    assert "\r" in tty.getvalue() and "train" in tty.getvalue() and "train step" not in tty.getvalue()
    quiet = io.StringIO()
    drive(Progress(100, stream=quiet, enabled=False, clock=clock), clock, 0, 100)
    assert quiet.getvalue() == ""


def test_fit_in_a_log_file_stays_small(capsys):
    """1000 steps of fit() with progress on and stderr captured (not a terminal): about 20 lines, under 2 KB."""
    data = {"x": torch.randn(64, 4)}

    class Data:
        def __len__(self):
            return 64

        def batch(self, idx):
            return {"x": data["x"][idx]}

    fit(nn.Linear(4, 1), lambda m, b: m(b["x"]).pow(2).mean(), Data(),
        TrainConfig(steps=1000, batch_size=8, ema_decay=0, log_every=100, progress=True))
    err = capsys.readouterr().err
    assert "\r" not in err and 20 <= err.count("\n") <= 21 and len(err) < 2048, err
    assert err.splitlines()[-1].startswith("train step 1000/1000 (100%) loss ")
