"""Three tiny trained runs (a masked-diffusion LM, an MNIST EDM and an MNIST NICE flow, 2 training steps each) and a real uvicorn server
on a free loopback port, shared by the serve tests."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from unigen.config import apply_overrides
from unigen.registry import get_preset
from unigen.run import train

FAST = ["train.steps=2", "train.batch_size=8", "train.progress=false", "train.eval_every=0", "train.sample_every=0"]
RUNS = {"text": ("text-mdlm", ["data.seq_len=32", "model.size=tiny"]),
        "mnist": ("mnist-edm", ["model.width=8", "model.depth=1", "sample.n=4"]),
        "flow": ("mnist-nice", ["model.hidden=4", "model.depth=1", "model.couplings=2", "sample.n=4"])}


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    """ROOT/runs/{text,mnist,flow}: served as mount "runs"."""
    root = tmp_path_factory.mktemp("serve") / "runs"
    for name, (preset, over) in RUNS.items():
        train(apply_overrides(get_preset(preset), FAST + over), root / name)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app, host: str = "127.0.0.1"):
    """Serve `app` with uvicorn in a thread; yields the base URL, stops the server after."""
    import uvicorn
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def serving():
    """`with serving(app) as url:` a real server for the test's app."""
    return running


@pytest.fixture(scope="session")
def port_factory():
    return free_port
