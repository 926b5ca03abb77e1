"""What watching costs: `unigen serve`'s streaming against the same generation without it, and the memory of 8
concurrent generations against one.

    python -m benchmarks.serve [--root outputs/demo/runs] [--repeats 5] [--threads 1] [--out benchmarks]

1. Per run of ROOT (a text and an image run, e.g. those of `make demo`): `Task.sample` with the server's per-step
   callback (every step rendered to JSON / PNG and queued, a thread draining the queue as a client would) against
   the same call without a callback, interleaved in one process (harness.interleave): median [quartiles] seconds,
   and the time spent inside the callback (the overhead itself, which a loaded machine's noise can hide in the
   totals). The sampler's numbers are the same (tests/serve/test_hooks.py).
2. The real server (uvicorn in a thread of this process, `--workers 1` as the CLI's default) answering 1 client,
   then 8 clients at once, each an image generation of 64 samples: wall time, and the peak growth of this process's
   resident set (harness.peak_rss_mib), which the job queue keeps near one generation's.
"""
from __future__ import annotations

import argparse
import http.client
import queue
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import torch

from benchmarks.harness import interleave, log, machine, peak_rss_mib, quartiles, start
from unigen.io import atomic_write_text
from unigen.run import get_task, load, read_config
from unigen.serve.app import create_app
from unigen.serve.streams import Job, Params, Stream

SETTINGS = {"text": dict(sampler="llada", steps=0, n=4, prompt="The class statement"),
            "image": dict(sampler="", steps=18, n=16)}


def one_call(run: Path, watched: bool, **kw) -> None:
    """Task.sample on `run`; watched: through the server's Stream with a thread draining the frames."""
    cfg = read_config(run)
    task, model = get_task(cfg.task), MODELS[run]
    kw = {**kw, "sampler": kw["sampler"] or cfg.sample.sampler or task.samplers[0]}
    extra, stop = {}, threading.Event()
    if watched:
        job = Job(Params(run=run.name, path=run, sampler=kw["sampler"]))
        extra["callback"] = stream = Stream(job, run)
        drain = threading.Thread(target=_drain, args=(job, stop), daemon=True)
        drain.start()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        task.sample(model, cfg, run_dir=run, out_dir=Path(tmp), seed=0, **kw, **extra)
    stop.set()
    if watched:
        IN_CALLBACK.append(stream.paused)


def _drain(job: Job, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            job.frames.get(timeout=0.01)
        except queue.Empty:
            pass


MODELS: dict[Path, torch.nn.Module] = {}
IN_CALLBACK: list[float] = []           # seconds spent rendering and queueing frames, per watched call


def watching(root: Path, repeats: int) -> list[str]:
    rows = ["| run | sampler settings | without the page (s) | streamed to the page (s) | ratio | in the callback (s) |",
            "|---|---|---|---|---|---|"]
    for name, kw in SETTINGS.items():
        run = root / name
        MODELS[run] = load(run)
        log(f"watching cost: {name}")
        IN_CALLBACK.clear()
        watched, plain = interleave(lambda: one_call(run, True, **kw), lambda: one_call(run, False, **kw), repeats)
        (w1, w, w3), (p1, p, p3) = quartiles(watched), quartiles(plain)
        c = quartiles(IN_CALLBACK[1:])[1]                                       # [0]: the warm-up call
        rows.append(f"| {name} | {kw} | {p:.3f} [{p1:.3f}, {p3:.3f}] | {w:.3f} [{w1:.3f}, {w3:.3f}] | {w / p:.2f} "
                    f"| {c:.3f} ({100 * c / w:.1f}% of the call) |")
    return rows


def stream_one(port: int, run: str, **params) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("GET", "/api/generate?" + urllib.parse.urlencode({"run": run, **params}))
    frames = sum(line.startswith(b"data: ") for line in conn.getresponse())
    conn.close()
    return frames


def concurrency(root: Path) -> list[str]:
    import uvicorn
    server = uvicorn.Server(uvicorn.Config(create_app([root], workers=1), host="127.0.0.1", port=0,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]          # port 0: the system picked a free one
    rows = ["| clients at once | wall (s) | peak RSS growth (MiB) | messages per client |", "|---|---|---|---|"]
    params = dict(run=f"{root.name}/image", n=64, steps=18)
    try:
        for clients in (1, 8):
            log(f"concurrency: {clients} client(s)")
            got: list[int] = []

            def burst() -> None:
                ts = [threading.Thread(target=lambda: got.append(stream_one(port, **params))) for _ in range(clients)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()

            t0 = time.perf_counter()
            mib = peak_rss_mib(burst)
            rows.append(f"| {clients} | {time.perf_counter() - t0:.1f} | {mib:.0f} | {sorted(set(got))} |")
    finally:
        server.should_exit = True
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n")[0])
    p.add_argument("--root", default="outputs/demo/runs", help="folder holding the runs `text` and `image`")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per side")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default="benchmarks", help="folder for serve.md")
    args = p.parse_args(argv)
    out, command = start("benchmarks.serve", args.out, args.threads, argv)
    root = Path(args.root).resolve()
    lines = ["# What watching costs (`unigen serve`)", "", f"`{command}`", "", f"Machine: {machine()}", "",
             "## Streaming every step against the same sampling without the page", "", *watching(root, args.repeats),
             "", "## 8 concurrent image generations (64 samples, 18 steps) against one, `--workers 1`", "",
             *concurrency(root), "", f"Load average at the end: {machine().rsplit('load average ', 1)[1]}", ""]
    atomic_write_text(out / "serve.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
