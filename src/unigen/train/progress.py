"""Progress of a training run on stderr: a tqdm bar in a terminal, a few plain lines in a log file.

A bar redraws itself with carriage returns many times a second: right in a terminal, but in a file (a batch job's
log, `2> log.txt`) a long run leaves hundreds of KB of frames. When the stream is not a terminal, `Progress`
prints one line every ~5% of the steps or every 30 s, whichever comes first, and one at the last step:

    train step 150/1000 (15%) loss 0.0831 12.3 it/s ETA 1m09s

A logged run adds about 20 lines, plus at most 2 a minute when it is long (~60 bytes each: 1.3 KB for a run of
ten minutes, 7 KB per hour), where a bar redrawn every 0.1 s writes 2 MB an hour.

`work_progress(total, desc, unit)` is the same for sampling and evaluation (network calls, batches): a bar in a
terminal, and in a log one line every 10 s only, so that work that ends within seconds prints nothing there.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable, TextIO


class Progress:
    """`update(done)` after each step (`done` = steps finished), `set_loss(x)` when a loss is logged, `close()`."""

    def __init__(self, total: int, initial: int = 0, *, enabled: bool = True, stream: TextIO | None = None,
                 every_frac: float = 0.05, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 desc: str = "train", unit: str = "step", last_line: bool = True):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.initial, self.clock = total, initial, clock
        self.every_steps, self.every_s = max(1, math.ceil(total * every_frac)), every_s
        self.desc, self.unit, self.last_line, self.lines = desc, unit, last_line, 0
        self.loss: float | None = None
        self.bar, self.plain = None, False
        if enabled and _isatty(self.stream):
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, desc=desc, unit=unit,
                            leave=False, file=self.stream)
        else:
            self.plain = enabled
        self.t0 = self.t_line = clock()
        self.done = self.line_step = initial

    def set_loss(self, loss: float) -> None:
        self.loss = loss
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}")

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        if not self.plain:
            return
        now = self.clock()
        if (done - self.line_step >= self.every_steps or now - self.t_line >= self.every_s
                or (done >= self.total and (self.last_line or self.lines))):
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()
            self.t_line, self.line_step, self.lines = now, done, self.lines + 1

    def line(self, now: float) -> str:
        rate = (self.done - self.initial) / max(now - self.t0, 1e-9)
        parts = [f"{self.desc} {self.unit} {self.done}/{self.total} ({100 * self.done // max(self.total, 1)}%)"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        parts.append(f"{rate:.3g} it/s")
        if self.done < self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        return " ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def work_progress(total: int, desc: str, unit: str, *, stream: TextIO | None = None,
                  clock: Callable[[], float] = time.monotonic) -> Progress:
    """Progress of sampling or evaluation: `total` units (network calls, batches); in a log a line every 10 s and
    none for work that ends sooner."""
    return Progress(total, stream=stream, clock=clock, every_frac=2.0, every_s=10.0, desc=desc, unit=unit,
                    last_line=False)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _duration(seconds: float) -> str:
    """12s, 3m07s, 2h05m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
