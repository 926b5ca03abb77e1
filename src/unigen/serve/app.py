"""`unigen serve`: a local web page that shows a generation as it happens (FastAPI + uvicorn, server-sent events).

    GET /               the page (static/index.html; every asset comes from static/, nothing from the web)
    GET /api/runs       {"runs": [{"id", "preset", "task", "samplers", "steps", "prompt", "streams", ...}]}
    GET /api/status     {"running", "queued", "workers", "max_jobs"}
    GET /api/generate?run=ID[&sampler=S&steps=N&n=N&seed=S&guidance=W&prompt=TEXT]
                        text/event-stream, one JSON message per event (streams.py, frames.py)

A bad request gets HTTP 400 (404 for a run that does not exist, 503 when every worker is busy and the queue is
full) with {"error": "<one line>"} before any work starts. The server binds 127.0.0.1 unless `host` says
otherwise. FastAPI and uvicorn are imported when the server is made, so the rest of the CLI does not load them.
"""
import asyncio
import json
import math
import queue
import socket
from pathlib import Path
from typing import Any, Mapping

from unigen.errors import UserError
from unigen.run import get_task, read_config
from unigen.serve.runs import NotFound, describe, find_runs, mounts, resolve, run_samplers, takes
from unigen.serve.streams import Busy, Job, Params, Scheduler

STATIC = Path(__file__).resolve().parent / "static"
MAX_N, MAX_STEPS, MAX_PROMPT, MAX_SEED = 64, 1000, 2000, 2 ** 63 - 1
PARAMS = ("run", "sampler", "steps", "n", "seed", "guidance", "prompt")
KEEPALIVE_S = 1.0          # a comment line this often while nothing else is sent: a closed tab is noticed


def one_line(msg: str, limit: int = 300) -> str:
    text = " ".join(str(msg).split()) or "bad request"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _number(q: Mapping[str, str], key: str, kind: type, lo: float, hi: float, default: Any) -> Any:
    raw = q.get(key, "")
    if raw == "":
        return default
    try:
        v = kind(raw)
    except ValueError:
        raise UserError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {raw[:40]!r}") from None
    if not (math.isfinite(v) and lo <= v <= hi):
        raise UserError(f"{key} must be in [{lo:g}, {hi:g}], got {raw[:40]}")
    return v


def parse(ms, q: Mapping[str, str]) -> Params:
    """The parameters of /api/generate, checked before any work starts (UserError / NotFound: HTTP 400 / 404)."""
    extra = sorted(set(q) - set(PARAMS))
    if extra:
        raise UserError(f"unknown parameter(s) {', '.join(extra)[:80]}; known: {', '.join(PARAMS)}")
    run = q.get("run", "")
    path = resolve(ms, run)
    cfg = read_config(path)
    task = get_task(cfg.task)
    names = run_samplers(task, cfg)
    if not names:
        raise UserError(f"run {run!r} ({cfg.task}) cannot sample")
    sampler = q.get("sampler") or names[0]
    if sampler not in names:
        raise UserError(f"unknown sampler {sampler[:40]!r} for {cfg.task}; known: {', '.join(names)}")
    prompt = q.get("prompt") or None
    if prompt is not None and (len(prompt) > MAX_PROMPT or not takes(task, "prompt")):
        raise UserError(f"run {run!r} takes no prompt" if not takes(task, "prompt")
                        else f"prompt must be at most {MAX_PROMPT} characters, got {len(prompt)}")
    return Params(run=run, path=path, sampler=sampler, steps=_number(q, "steps", int, 1, MAX_STEPS, 0),
                  n=_number(q, "n", int, 1, MAX_N, min(cfg.sample.n, 8) or 4),
                  seed=_number(q, "seed", int, 0, MAX_SEED, None),
                  guidance=_number(q, "guidance", float, 0, 100, None), prompt=prompt)


def list_runs(ms) -> list[dict[str, Any]]:
    out = []
    for m in ms:
        for name in find_runs(m):
            try:
                out.append(describe(name, resolve(ms, name)))
            except UserError as e:           # a corrupt run is listed with its problem, not a crash
                out.append({"id": name, "error": one_line(e)})
    return out


async def events(job: Job):
    """The job's messages as server-sent events until "done" or "error". When the client goes away, the server
    stops this generator (a failed send or a cancellation), and `finally` cancels the job."""
    idle = 0.0
    try:
        while True:
            try:
                msg = job.frames.get_nowait()
            except queue.Empty:
                if job.finished.is_set() and job.frames.empty():
                    return
                await asyncio.sleep(0.02)
                idle += 0.02
                if idle >= KEEPALIVE_S:
                    idle = 0.0
                    yield ": keep-alive\n\n"
                continue
            idle = 0.0
            yield f"data: {json.dumps(msg)}\n\n"
            if msg["type"] in ("done", "error"):
                return
    finally:
        job.cancel()


def create_app(paths: list[str | Path], *, workers: int = 1, max_jobs: int = 16):
    """The FastAPI app serving the runs under `paths` (folders or run directories)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UserError(f"unigen serve needs fastapi and uvicorn ({e.name} is missing): pip install -e .") from None
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
    from fastapi.staticfiles import StaticFiles

    ms = mounts(paths)
    scheduler = Scheduler(workers, max_jobs)
    app = FastAPI(title="unigen serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler, app.state.mounts = scheduler, ms
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(UserError)
    async def user_error(request: Request, e: UserError):
        status = 404 if isinstance(e, NotFound) else 503 if isinstance(e, Busy) else 400
        return JSONResponse({"error": one_line(e)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        return JSONResponse({"error": one_line(f"bad request: {e.errors()[:1]}")}, status_code=400)

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/runs")
    def runs():
        return {"runs": list_runs(ms)}

    @app.get("/api/status")
    def status():
        return scheduler.status()

    @app.get("/api/generate")
    def generate(request: Request):
        job = scheduler.submit(parse(ms, request.query_params))
        return StreamingResponse(events(job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app


def check_port(host: str, port: int) -> None:
    """A one-line UserError now, rather than uvicorn's log, when the address cannot be bound."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def serve(paths: list[str | Path], *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          max_jobs: int = 16) -> None:
    """Run the page until Ctrl-C. `host` other than loopback makes it reachable from other machines."""
    import uvicorn
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be in [0, 65535], got {port}")
    app = create_app(paths, workers=workers, max_jobs=max_jobs)
    check_port(host, port)
    found = len(list_runs(app.state.mounts))
    print(f"unigen serve: http://{host}:{port}/ ({found} run{'s' * (found != 1)} under "
          f"{', '.join(str(m.root) for m in app.state.mounts)}); Ctrl-C stops", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: anyone who can reach this machine can use the page", flush=True)
    try:   # Ctrl-C: open streams get 2 s to end, then every generation is cancelled
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    finally:
        app.state.scheduler.close()
