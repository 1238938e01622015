import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network

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
    """The shipped model in weights/ (the app's default)."""
    return load_model(DEFAULT_WEIGHTS, fallback=False)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`python app.py` on a free loopback port, as a user starts it; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("server") / "app.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
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
    yield url
    proc.terminate()
    proc.wait(10)
