"""The limits a public server keeps, against a real server started with a short queue and a short cache life:
a crowd beyond the queue gets right answers or "busy, try again", and files leave the cache when their time
is up. (That live webcam frames never enter the cache is checked in tests/test_browser.py, with a camera.)"""
import threading
import time

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError

from tests import fixtures as fx
from tests.conftest import running_app
from tools import loadtest as lt

QUEUE, LIFETIME_S = 2, 6


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    env = {"EMOTION_QUEUE_SIZE": str(QUEUE), "EMOTION_CACHE_SECONDS": str(LIFETIME_S)}
    with running_app(tmp_path_factory.mktemp("limited"), env) as (url, cache):
        yield url, cache


def files_in(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def test_a_crowd_beyond_the_queue_gets_right_answers_or_busy(limited, tmp_path):
    url, _ = limited
    pictures = {p.name: p for p in (fx.PORTRAIT, fx.SECOND_PORTRAIT, fx.ROOT / "examples" / "two_faces.jpg")}
    refs = lt.reference_answers(url, pictures)
    tally = lt.Tally()
    crowd = 5 * QUEUE + 2  # two at work, QUEUE waiting, the rest turned away
    lt.run_clients(url, pictures, refs, tally, crowd, crowd, together=True, timeout_s=300)
    f = tally.figures()
    assert f["requests"] == crowd and f["errors"] == 0 and f["mismatches"] == 0, f["problems"]
    assert f["busy"] >= 1 and f["answered"] >= 2
    # the crowd gone, the server answers normally again
    name = "two_faces.jpg"
    assert lt.compare(lt.predict(Client(url, verbose=False), pictures[name]), refs[name]) is None


def test_busy_is_a_plain_message(limited):
    """What a client is told when the server is full: "Queue is full! Please try again.", as gradio_client's
    QueueError (Gradio's queue, a 503) or, for photos past the app's own waiting room (WORKERS + QUEUE_SIZE
    analyses admitted), as the app's error with the same words."""
    url, _ = limited
    clients = [Client(url, verbose=False) for _ in range(QUEUE + 6)]
    outcomes, gate = [], threading.Barrier(len(clients))

    def one(c):
        gate.wait()
        try:
            c.predict(handle_file(str(fx.PORTRAIT)), api_name="/predict")
            outcomes.append("answer")
        except (QueueError, AppError) as e:  # Gradio's full queue, or the app's photos past its waiting room
            outcomes.append(str(e))

    threads = [threading.Thread(target=one, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    busy = [o for o in outcomes if o != "answer"]
    assert len(outcomes) == len(clients) and busy
    assert set(busy) == {"Queue is full! Please try again."}


def test_uploads_results_and_share_links_leave_the_cache_when_their_time_is_up(limited, tmp_path):
    url, cache = limited
    photo = tmp_path / "mine.jpg"  # a user's own photo (the examples stay in the cache: they are the app's)
    fx.portrait().crop((60, 0, 450, 400)).save(photo, quality=90)
    before = set(files_in(cache))
    client = Client(url, verbose=False)
    result = client.predict(handle_file(str(photo)), api_name="/predict")
    assert len(result["faces"]) == 1
    link = httpx.get(url + "gradio_api/deep_link", params={"session_hash": client.session_hash}, timeout=30)
    link = link.text.strip('"')
    made = [p for p in files_in(cache) if p not in before]
    assert any(p.name == photo.name for p in made)  # the upload ...
    assert any(p.parts[-3:-1] == ("deep_links", link) for p in made)  # ... and the share link's state
    deadline = time.time() + 10 * LIFETIME_S
    while (left := [p for p in made if p.exists()]) and time.time() < deadline:
        time.sleep(1)
    assert left == []
    config = httpx.get(url + "config", params={"deep_link": link}, timeout=30).json()
    assert config["deep_link_state"] == "invalid"
