"""`unigen serve` against a real uvicorn server: bad requests get a one-line 4xx before any work, nothing outside
the served folder can be named, generations stream every step, a closed connection frees its worker, 8 concurrent
generations complete through a bounded queue, and the server listens on loopback only unless told otherwise."""
from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from unigen.serve.app import STATIC, create_app
from unigen.serve.streams import MAX_FRAMES, Cancelled, Job, Params

pytest.importorskip("fastapi", reason="unigen serve needs fastapi and uvicorn (pip install fastapi uvicorn)")


def get(base: str, path: str, **params) -> tuple[int, dict]:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def events(base: str, **params):
    """The JSON messages of one /api/generate stream, as they arrive."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("GET", "/api/generate?" + urllib.parse.urlencode(params))
    r = conn.getresponse()
    assert r.status == 200, r.read()
    assert r.getheader("content-type").startswith("text/event-stream")
    try:
        for line in r:
            if line.startswith(b"data: "):
                yield json.loads(line[6:])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def base(runs_root, serving):
    with serving(create_app([runs_root], workers=2, max_jobs=16)) as url:
        yield url


def test_lists_runs_and_serves_only_local_assets(base):
    status, body = get(base, "/api/runs")
    runs = {r["id"]: r for r in body["runs"]}
    assert status == 200 and set(runs) == {"runs/text", "runs/mnist", "runs/flow"}
    assert not runs["runs/flow"]["streams"] and runs["runs/flow"]["samplers"] == ["ancestral"]
    assert runs["runs/text"]["prompt"] and runs["runs/text"]["streams"] and runs["runs/text"]["samplers"][0] == "mdlm"  # the run's own default first
    assert not runs["runs/mnist"]["prompt"] and "flow-euler" not in runs["runs/mnist"]["samplers"]  # EDM: no flow steps
    page = urllib.request.urlopen(base + "/", timeout=10).read().decode()
    for ref in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert ref.startswith("/static/"), ref
        assert urllib.request.urlopen(base + ref, timeout=10).status == 200
    for f in STATIC.iterdir():      # no CDN, web font or analytics: nothing names another host
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", f.read_text()), f.name


BAD = [  # (query, status, words of the message)
    ({"run": "runs/nope"}, 404, "unknown run"),
    ({"run": "elsewhere/text"}, 404, "no folder"),
    ({"run": "runs/../runs/text"}, 400, ".."),
    ({"run": "/etc/passwd"}, 400, "relative"),
    ({"run": "runs/text/../../.."}, 400, ".."),
    ({"run": "runs/text", "sampler": "heun"}, 400, "unknown sampler"),
    ({"run": "runs/mnist", "sampler": "flow-euler"}, 400, "unknown sampler"),
    ({"run": "runs/text", "steps": "0"}, 400, "steps must be in"),
    ({"run": "runs/text", "steps": "-3"}, 400, "steps must be in"),
    ({"run": "runs/text", "steps": "many"}, 400, "steps must be an integer"),
    ({"run": "runs/text", "n": "100000000"}, 400, "n must be in"),
    ({"run": "runs/text", "guidance": "nan"}, 400, "guidance must be in"),
    ({"run": "runs/text", "prompt": "x" * 2001}, 400, "at most 2000"),
    ({"run": "runs/mnist", "prompt": "a cat"}, 400, "takes no prompt"),
    ({"run": "runs/text", "nn": "2"}, 400, "unknown parameter"),
    ({}, 400, "non-empty"),
]


@pytest.mark.parametrize("query,status,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_get_a_one_line_4xx_before_any_work(base, query, status, words):
    got, body = get(base, "/api/generate", **query)
    assert got == status and words in body["error"] and "\n" not in body["error"], body
    assert get(base, "/api/status")[1]["running"] == 0


def test_a_symlink_out_of_the_root_is_refused(tmp_path, runs_root, serving):
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to(runs_root / "text", target_is_directory=True)
    with serving(create_app([root])) as url:
        assert get(url, "/api/runs")[1]["runs"] == []                 # not listed (symlinks are not followed)
        status, body = get(url, "/api/generate", run="root/escape")
        assert status == 400 and "outside" in body["error"]


def test_text_streams_every_step_and_ends_unmasked(base):
    msgs = list(events(base, run="runs/text", steps=8, n=2, prompt="The", seed=3))
    kinds = [m["type"] for m in msgs]
    assert kinds == ["start"] + ["frame"] * 8 + ["done"], kinds
    masked = [m["masked"] for m in msgs if m["type"] == "frame"]
    assert masked == sorted(masked, reverse=True) and masked[-1] == 0    # LLaDA only ever unmasks
    done = msgs[-1]
    assert all(text is not None for row in done["rows"] for text, _ in row)   # no mask left
    assert done["rows"][0][0] == ["The", 0]                                    # the prompt, tagged step 0
    assert {s for row in done["rows"] for _, s in row[1:]} <= set(range(1, 9))
    assert done["summary"]["model_calls"] == 8 and done["summary"]["tokens_per_s"] > 0


def test_an_error_inside_the_family_ends_the_stream_with_one_line(base):
    msgs = list(events(base, run="runs/text", guidance=2))       # guidance needs a prompt (discrete task.sample)
    assert msgs[-1]["type"] == "error" and "needs a prompt" in msgs[-1]["message"] and "\n" not in msgs[-1]["message"]
    assert wait_idle(base)["running"] == 0


def test_images_stream_x_t_and_x0_with_the_noise_level(base):
    msgs = list(events(base, run="runs/mnist", sampler="euler", steps=5, n=2))
    frames = [m for m in msgs if m["type"] == "frame"]
    assert len(frames) == 5 and msgs[-1]["type"] == "done"
    sigmas = [f["sigma"] for f in frames]
    assert sigmas == sorted(sigmas, reverse=True) and sigmas[0] == pytest.approx(80.0)
    assert all(f["x_t"].startswith("data:image/png;base64,") and f["x0"].startswith("data:image/png") for f in frames)
    assert msgs[-1]["image"].startswith("data:image/png;base64,") and msgs[-1]["summary"]["nfe"] == 5


def test_a_family_without_steps_shows_its_result(base):
    """Normalizing flows sample in one pass (no callback): no frames, the final image in "done"."""
    msgs = list(events(base, run="runs/flow", n=4))
    assert [m["type"] for m in msgs] == ["start", "done"]
    assert msgs[-1]["image"].startswith("data:image/png;base64,") and msgs[-1]["summary"]["n"] == 4


def wait_idle(base: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = get(base, "/api/status")[1]
        if (st["running"], st["queued"]) == (0, 0) or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def test_a_closed_connection_frees_its_worker(base):
    """A 1000-step generation; the client reads two frames and hangs up: the job is cancelled within a step."""
    gen = events(base, run="runs/mnist", sampler="euler", steps=1000, n=1)
    assert [next(gen)["type"], next(gen)["type"]] == ["start", "frame"]
    assert get(base, "/api/status")[1]["running"] == 1
    gen.close()                                      # the tab is closed
    assert wait_idle(base) == {"running": 0, "queued": 0, "workers": 2, "max_jobs": 16}
    workers = [t for t in threading.enumerate() if t.name.startswith("unigen-serve")]
    for t in workers:                                # a worker may still be returning from its last line
        t.join(timeout=5)
    assert not [t for t in workers if t.is_alive()]  # no orphan worker


def test_eight_concurrent_generations_complete_through_two_workers(base):
    results, peak, stop = {}, [0], threading.Event()

    def one(k: int) -> None:
        results[k] = [m["type"] for m in events(base, run="runs/text" if k % 2 else "runs/mnist", steps=20, n=2,
                                                 seed=k)]

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], get(base, "/api/status")[1]["running"])
            time.sleep(0.02)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(8)]
    w = threading.Thread(target=watch)
    w.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    w.join()
    assert len(results) == 8 and all(r[-1] == "done" and r.count("frame") == 20 for r in results.values()), results
    assert 1 <= peak[0] <= 2 and sum("queued" in r for r in results.values()) >= 1


def test_a_full_queue_answers_503_and_a_slow_reader_holds_few_frames(runs_root, serving):
    app = create_app([runs_root], workers=1, max_jobs=2)
    with serving(app) as url:
        gens = [events(url, run="runs/mnist", sampler="euler", steps=1000, n=1) for _ in range(2)]
        assert [next(g)["type"] for g in gens] == ["start", "queued"]
        status, body = get(url, "/api/generate", run="runs/text")
        assert status == 503 and "busy" in body["error"]
        app.state.scheduler.close()                  # what `unigen serve` does when it stops
        assert wait_idle(url)["running"] == 0
        for g in gens:
            g.close()
    job = Job(Params(run="r", path=Path("."), sampler="s"))
    for k in range(MAX_FRAMES):
        job.emit({"k": k})
    outcome = []

    def one_more() -> None:
        try:
            job.emit({"k": "one too many"})
        except Cancelled:
            outcome.append("cancelled")

    blocked = threading.Thread(target=one_more, daemon=True)
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive() and job.frames.qsize() == MAX_FRAMES      # the sampler waits; frames do not pile up
    job.cancel()
    blocked.join(1)
    assert not blocked.is_alive() and outcome == ["cancelled"]


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening address from /proc/net/tcp")
def test_cli_listens_on_loopback_only_by_default(runs_root, port_factory):
    port = port_factory()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    p = subprocess.Popen([sys.executable, "-c", "from unigen.cli import main; main()", "serve", str(runs_root),
                          "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = p.stdout.readline()
        assert f"http://127.0.0.1:{port}/ (3 runs under" in line, line
        deadline = time.monotonic() + 20
        while not (listening := [a for a in _listening() if a.endswith(f":{port:04X}")]):
            assert time.monotonic() < deadline and p.poll() is None, "server did not listen"
            time.sleep(0.05)
        assert listening == [f"0100007F:{port:04X}"]                    # 127.0.0.1, not 0.0.0.0
    finally:
        p.terminate()
        p.wait(timeout=20)


def _listening() -> list[str]:
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return [r[1] for r in rows if r[3] == "0A"]                         # state 0A: LISTEN
