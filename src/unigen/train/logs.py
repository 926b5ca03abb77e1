"""Metric lines of a run: RUN/metrics.jsonl (one JSON object per line) and TensorBoard (RUN/tb), and warnings."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from unigen.io import atomic_write_bytes


def warn(msg: str) -> None:
    """`warning: msg` on stderr, without breaking a progress bar."""
    from tqdm import tqdm
    tqdm.write(f"warning: {msg}", file=sys.stderr)


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines past the checkpoint so the file reads as one uninterrupted run."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    atomic_write_bytes(path, ("\n".join(keep) + "\n").encode() if keep else b"")


class MetricLogger:
    """Metric lines to RUN/metrics.jsonl and TensorBoard (RUN/tb); a no-op without a run dir."""

    def __init__(self, run_dir: Path | None):
        self.file = self.tb = None
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(run_dir / "metrics.jsonl", "a")
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard is a declared dependency; keep training if it is broken
                self.tb = None

    def log(self, line: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(line) + "\n")
            self.file.flush()
        if self.tb is not None:
            for k, v in line.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, line["step"])

    def warn(self, msg: str) -> None:
        if self.file is not None:
            warn(msg)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
