import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
# The many small models the tests train and load run in PyTorch: ONNX Runtime would export each one anew
# (seconds each). The shipped model runs in ONNX Runtime as in the app: the `model` fixture, the `served`
# app and tests/test_engine.py.
os.environ.setdefault("EMOTION_ENGINE", "torch")

import contextlib  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402

from emotion.model import DEFAULT_WEIGHTS, load_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model():
    """The shipped model in weights/ (the app's default), its float32 passes in ONNX Runtime as the app runs
    them (emotion/engine.py; "onnx" fails here if it cannot be had)."""
    return load_model(DEFAULT_WEIGHTS, fallback=False, engine="onnx")


@contextlib.contextmanager
def running_app(folder: Path, env: dict[str, str] | None = None):
    """`python app.py` on a free loopback port, as a user starts it, with `env` added to its environment
    and a Gradio file cache of its own (`folder`/gradio-cache, not the machine-wide /tmp/gradio). Yields
    (url, cache folder); stops the app afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder.mkdir(parents=True, exist_ok=True)
    log, cache = folder / "app.log", folder / "gradio-cache"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "GRADIO_TEMP_DIR": str(cache),
                                                               **(env or {})})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail("app.py exited:\n" + log.read_text())
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail("app.py did not start:\n" + log.read_text())
        time.sleep(1)
    try:
        yield url, cache
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """The app as users start it, ONNX Runtime and all: (url, its Gradio cache folder)."""
    with running_app(tmp_path_factory.mktemp("server"), {"EMOTION_ENGINE": "auto"}) as (url, cache):
        yield url, cache


@pytest.fixture(scope="session")
def server(served):
    """The URL of `served`."""
    return served[0]
