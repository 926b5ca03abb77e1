"""Generations as jobs: a bounded pool of workers, a bounded queue, and cancellation when the page goes away.

    scheduler = Scheduler(workers=1, max_jobs=16)
    job = scheduler.submit(params)       # Busy (HTTP 503) when max_jobs are already running or waiting
    job.frames.get()                     # {"type": "queued" | "start" | "frame" | "done" | "error", ...}
    job.cancel()                         # the client left: the worker stops at its next sampler step

Each job is a thread that waits for one of `workers` slots, then runs the family's `Task.sample` with a callback
(frames.py renders each step). Memory stays bounded: at most `max_jobs` jobs exist, each holds at most
`MAX_FRAMES` rendered frames (a slow reader makes the sampler wait, it does not pile frames up), and at most
`MAX_MODELS` loaded models are cached. A cancelled job raises `Cancelled` from inside the sampler's callback, so the
sampler stops within one step and its slot goes to the next job.
"""
from __future__ import annotations

import json
import logging
import queue
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unigen.data import load_tokenizer
from unigen.errors import UserError
from unigen.run import get_task, load, read_config
from unigen.serve.frames import ImageView, TextView, final_image
from unigen.serve.runs import takes

MAX_FRAMES = 4             # rendered frames waiting for the client, per job
MAX_MODELS = 4             # loaded models kept
log = logging.getLogger("unigen.serve")


class Cancelled(Exception):
    """The client went away (or asked to stop): the generation ends here."""


class Busy(UserError):
    """Every worker is busy and the queue is full (HTTP 503)."""


@dataclass(frozen=True)
class Params:
    """One generation, validated by the app: the run's directory and the sampler settings (0 / None: the run's
    defaults)."""
    run: str
    path: Path
    sampler: str
    steps: int = 0
    n: int = 4
    seed: int | None = None
    guidance: float | None = None
    prompt: str | None = None


class Job:
    def __init__(self, params: Params):
        self.params = params
        self.frames: queue.Queue = queue.Queue(maxsize=MAX_FRAMES)
        self.cancelled = threading.Event()
        self.finished = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled

    def emit(self, msg: dict[str, Any]) -> None:
        """Queue `msg` for the client, waiting while MAX_FRAMES are queued; Cancelled if the client leaves."""
        while True:
            self.check()
            try:
                self.frames.put(msg, timeout=0.1)
                return
            except queue.Full:
                continue


class Models:
    """The last MAX_MODELS loaded models, keyed by run directory and the weights' modification times (a run
    trained further is loaded again)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.cache: OrderedDict[tuple, nn.Module] = OrderedDict()

    def get(self, path: Path) -> nn.Module:
        stamp = tuple(p.stat().st_mtime_ns if p.exists() else 0
                      for p in (path / "model.safetensors", path / "ema.safetensors"))
        key = (str(path), stamp)
        with self.lock:
            if key not in self.cache:
                self.cache[key] = load(path)
                while len(self.cache) > MAX_MODELS:
                    self.cache.popitem(last=False)
            self.cache.move_to_end(key)
            return self.cache[key]


class Stream:
    """The callback given to `Task.sample`: renders each report (frames.py) and queues it; the time spent here
    is kept so tokens/s is the sampler's own."""

    def __init__(self, job: Job, path: Path):
        self.job, self.path = job, path
        self.view: ImageView | TextView | None = None
        self.mask_id: int | None = None
        self.t0, self.paused = time.perf_counter(), 0.0

    def __call__(self, report: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        self.job.check()
        if self.view is None:
            if "canvas" in report:
                self.view, self.mask_id = TextView(load_tokenizer(self.path).decode, self.t0), report["mask_id"]
            else:
                self.view = ImageView()
        if isinstance(self.view, TextView):
            self.view.paused = self.paused
        self.job.emit(self.view(report))
        self.paused += time.perf_counter() - t0


def generate(job: Job, models: Models) -> None:
    """Run one generation, queueing "start", a "frame" per sampler step, and "done" with the final picture or
    texts and the sampler's counts (model calls, NFE, tokens/s without the time spent streaming)."""
    p = job.params
    cfg = read_config(p.path)
    task = get_task(cfg.task)
    model = models.get(p.path)
    kw = {k: v for k, v in (("guidance", p.guidance), ("prompt", p.prompt)) if v is not None}
    job.emit({"type": "start", "run": p.run, "preset": cfg.preset, "sampler": p.sampler, "n": p.n})
    stream = Stream(job, p.path)
    if takes(task, "callback"):
        kw["callback"] = stream
    with tempfile.TemporaryDirectory(prefix="unigen-serve-") as tmp, torch.no_grad():
        summary = task.sample(model, cfg, run_dir=p.path, out_dir=Path(tmp), n=p.n, sampler=p.sampler,
                              steps=p.steps, seed=cfg.sample.seed if p.seed is None else p.seed, **kw)
        done = finish(summary, stream)
    job.emit(done)


def finish(summary: dict[str, Any], stream: Stream) -> dict[str, Any]:
    """The "done" message: the summary's numbers, the final image (a PNG the task wrote) or the final texts."""
    done: dict[str, Any] = {"type": "done", "summary": {k: v for k, v in summary.items()
                                                         if isinstance(v, (int, float, str)) and k not in
                                                         ("samples", "image", "json", "text", "out_dir")}}
    png = next((v for k, v in summary.items() if isinstance(v, str) and v.endswith(".png")), None)
    if png:
        done["image"] = final_image(png)
    if isinstance(stream.view, TextView) and "json" in summary:
        record = json.loads(Path(summary["json"]).read_text(encoding="utf-8"))
        done["rows"] = stream.view.final(record["tokens"], stream.mask_id)
        seconds = summary["seconds"] - stream.paused       # the sampler's time, without rendering and sending
        if seconds > 0:
            done["summary"]["tokens_per_s"] = round(summary["n"] * summary["length"] / seconds, 1)
    return done


class Scheduler:
    """At most `workers` generations run at once; up to `max_jobs` run or wait; more is `Busy`."""

    def __init__(self, workers: int = 1, max_jobs: int = 16):
        if workers < 1 or max_jobs < workers:
            raise UserError(f"need workers >= 1 and max_jobs >= workers, got {workers} and {max_jobs}")
        self.workers, self.max_jobs = workers, max_jobs
        self.slots = threading.Semaphore(workers)
        self.lock = threading.Lock()
        self.jobs: list[Job] = []
        self.running: set[Job] = set()
        self.models = Models()

    def submit(self, params: Params) -> Job:
        job = Job(params)
        with self.lock:
            if len(self.jobs) >= self.max_jobs:
                raise Busy(f"server busy: {len(self.jobs)} generations running or queued; try again shortly")
            self.jobs.append(job)
        threading.Thread(target=self._run, args=(job,), name=f"unigen-serve {params.run}", daemon=True).start()
        return job

    def close(self) -> None:
        """Cancel every job (the server is stopping); each worker stops at its next sampler step."""
        with self.lock:
            for job in self.jobs:
                job.cancel()

    def status(self) -> dict[str, int]:
        with self.lock:
            return {"running": len(self.running), "queued": len(self.jobs) - len(self.running),
                    "workers": self.workers, "max_jobs": self.max_jobs}

    def _run(self, job: Job) -> None:
        try:
            self._take_slot(job)
            try:
                generate(job, self.models)
            finally:
                with self.lock:
                    self.running.discard(job)
                self.slots.release()
        except Cancelled:
            log.info("generation on %s cancelled: the client left", job.params.run)
        except UserError as e:
            self._tell(job, " ".join(str(e).split()))
        except Exception as e:  # noqa: BLE001 - the server stays up and the page is told
            log.exception("generation on %s failed", job.params.run)
            self._tell(job, f"internal error: {type(e).__name__}: {' '.join(str(e).split())}")
        finally:
            with self.lock:
                self.jobs.remove(job)
            job.finished.set()

    def _take_slot(self, job: Job) -> None:
        if not self.slots.acquire(blocking=False):
            with self.lock:
                ahead = len(self.jobs) - 1 - self.workers
            job.emit({"type": "queued", "ahead": max(ahead, 0)})
            while not self.slots.acquire(timeout=0.1):
                job.check()
        with self.lock:
            self.running.add(job)

    @staticmethod
    def _tell(job: Job, message: str) -> None:
        try:
            job.emit({"type": "error", "message": message})
        except Cancelled:
            pass
