"""`unigen sample RUN --watch`: show a text generation unmasking step by step in the terminal.

A `Watch` is the `callback` of a discrete sampler: it is called with the canvas (B, L) after every step and renders
its first row, each still-masked token as a placeholder glyph. On a terminal (a TTY) it redraws the same lines in
place with ANSI escape codes; anywhere else (a pipe, a log file, a test) it prints only a few evenly spaced
snapshots when closed, so logs stay short.
"""
from __future__ import annotations

import math
import shutil
import sys
import time
from typing import TextIO

from torch import Tensor

MASK_GLYPH = "░"       # one per masked token on a UTF-8 terminal
ASCII_GLYPH = "_"      # the same where the stream cannot encode it
UP_AND_CLEAR = "\x1b[{n}F\x1b[J"   # cursor to the start of the line n lines up, then clear to the end of the screen


def render(ids: list[int], decode, mask_id: int, glyph: str = MASK_GLYPH) -> str:
    """Text of one canvas row: runs of real tokens decoded together (so multi-byte pieces join up), each mask id
    shown as `glyph`."""
    out, run = [], []
    for i in ids:
        if i == mask_id:
            if run:
                out.append(decode(run))
                run = []
            out.append(glyph)
        else:
            run.append(i)
    if run:
        out.append(decode(run))
    return "".join(out)


def screen_lines(text: str, columns: int) -> int:
    """How many terminal rows `text` occupies when printed followed by a newline on a screen `columns` wide."""
    columns = max(columns, 1)
    return sum(max(1, math.ceil(len(line) / columns)) for line in text.split("\n"))


class Watch:
    """Sampler callback that renders row 0 of each canvas; `close()` prints the final state (or the snapshots).

    tty: redraw in place (default: whether `stream` is a terminal). snapshots: how many states a non-TTY stream
    gets, evenly spaced, the last one always included. frame_s: on a TTY, the least time each frame stays on
    screen, so a fast sampler can still be followed. `seconds` is the time spent here (drawing and waiting), which
    callers subtract when they measure the sampler's speed.
    """

    def __init__(self, decode, mask_id: int, *, stream: TextIO | None = None, tty: bool | None = None,
                 snapshots: int = 4, frame_s: float = 0.03, title: str = ""):
        self.decode, self.mask_id = decode, mask_id
        self.stream = sys.stdout if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.snapshots, self.frame_s, self.title = max(snapshots, 1), frame_s, title
        self.glyph = MASK_GLYPH if _can_encode(self.stream, MASK_GLYPH) else ASCII_GLYPH
        self.states: list[list[int]] = []
        self.seconds = 0.0
        self._drawn = 0        # terminal rows of the last frame (TTY)

    def __call__(self, x: Tensor) -> None:
        t0 = time.perf_counter()
        row = x[0].tolist()
        if not self.states or row != self.states[-1]:
            self.states.append(row)
            if self.tty:
                self._draw(row)
                time.sleep(self.frame_s)
        self.seconds += time.perf_counter() - t0

    def _draw(self, row: list[int]) -> None:
        masked = sum(i == self.mask_id for i in row)
        head = f"{self.title} step {len(self.states)}: {masked}/{len(row)} masked"
        text = f"{head}\n{render(row, self.decode, self.mask_id, self.glyph)}"
        if self._drawn:
            self.stream.write(UP_AND_CLEAR.format(n=self._drawn))
        self.stream.write(text + "\n")
        self.stream.flush()
        self._drawn = screen_lines(text, shutil.get_terminal_size().columns)

    def close(self) -> None:
        """Non-TTY: print the snapshots; TTY: the last frame is already on screen."""
        t0 = time.perf_counter()
        if not self.tty and self.states:
            n = len(self.states)
            picks = sorted({round(k * (n - 1) / max(self.snapshots - 1, 1)) for k in range(self.snapshots)})
            for k in picks:
                row = self.states[k]
                masked = sum(i == self.mask_id for i in row)
                self.stream.write(f"--- {self.title} step {k + 1}/{n}: {masked}/{len(row)} masked ---\n"
                                  f"{render(row, self.decode, self.mask_id, self.glyph)}\n")
            self.stream.flush()
        self.seconds += time.perf_counter() - t0


def _can_encode(stream: TextIO, s: str) -> bool:
    try:
        s.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
