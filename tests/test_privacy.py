"""Private results, against the real server: no client reads a file that is not its own through the API, and
a share link opens only the result it was made for, under an id that cannot be guessed from another.

Files are asked for both ways a client can: named in place of an upload in a raw /predict call (the HTTP
queue API, as a client without gradio_client would send it) and fetched from Gradio's file route.
"""
import hashlib
import json
import os
import shutil
import uuid
from urllib.parse import quote

import httpx
import pytest
from gradio_client import Client, handle_file

from tests import fixtures as fx

REFUSED = "not uploaded by a user"  # Gradio's reason for refusing a file named in place of an upload


def raw_predict(url: str, image: dict) -> dict:
    """/predict through the HTTP queue API with `image` as the FileData payload; the final message."""
    config = httpx.get(url + "config", timeout=30).json()
    fn = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "predict")
    session = uuid.uuid4().hex
    r = httpx.post(url + "gradio_api/queue/join", timeout=30, json={
        "data": [image, "Grad-CAM", "layer3", "predicted class", False], "fn_index": fn, "session_hash": session,
        "event_data": None, "trigger_id": None})
    r.raise_for_status()
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=120) as s:
        for line in s.iter_lines():
            if line.startswith("data:") and (m := json.loads(line[5:])).get("msg") == "process_completed":
                return m
    raise AssertionError("the stream ended without an answer")


def file_payload(path) -> dict:
    return {"path": str(path), "orig_name": "photo.jpg", "meta": {"_type": "gradio.FileData"}}


def upload(url: str, path) -> str:
    """The client's own upload, as gradio_client and the browser send it: the server's path for it."""
    with open(path, "rb") as f:
        r = httpx.post(url + "gradio_api/upload", files=[("files", (path.name, f))], timeout=60)
    r.raise_for_status()
    return r.json()[0]


def test_no_file_but_the_clients_own_upload_can_be_read(served, tmp_path):
    url, cache = served
    outside = tmp_path / "someone_elses.jpg"  # a real photo on the server, outside the upload folder
    shutil.copyfile(fx.PORTRAIT, outside)
    own = upload(url, fx.SECOND_PORTRAIT)
    # the way in works: the client's own upload is read and analysed, and fetched back
    ok = raw_predict(url, file_payload(own))
    assert ok["success"] and len(ok["output"]["data"][0]["faces"]) == 1
    assert httpx.get(url + "gradio_api/file=" + own, timeout=30).content == fx.SECOND_PORTRAIT.read_bytes()

    link_dir = cache / ("0" * 64)  # a symlink inside the upload folder pointing out of it
    link_dir.mkdir(parents=True, exist_ok=True)
    (link_dir / "photo.jpg").symlink_to(outside)
    tries = {
        "outside the upload folder": outside,
        "the app's own photo": fx.ROOT / "examples" / "astronaut.jpg",
        "the app's code": fx.ROOT / "app.py",
        "a relative name": "examples/astronaut.jpg",
        "a system file": "/etc/hostname",
        "'..' out of the upload folder": f"{cache}/{os.path.relpath(outside, cache)}",
        "'..' from an upload": f"{own.rsplit('/', 1)[0]}/{os.path.relpath(outside, own.rsplit('/', 1)[0])}",
        "a symlink in the upload folder": link_dir / "photo.jpg",
    }
    for what, path in tries.items():
        answer = raw_predict(url, file_payload(path))
        assert not answer["success"] and REFUSED in answer["output"]["error"], (what, answer)
        r = httpx.get(url + "gradio_api/file=" + str(path), timeout=30)
        assert r.status_code == 403 and r.content != outside.read_bytes(), (what, r.status_code)


def test_uploads_are_kept_under_names_that_cannot_be_worked_out_from_the_picture(served):
    url, cache = served
    path = upload(url, fx.PORTRAIT)
    folder = path.rsplit("/", 2)[-2]
    assert path.startswith(str(cache)) and len(folder) == 64  # a SHA-256 ...
    assert folder != hashlib.sha256(fx.PORTRAIT.read_bytes()).hexdigest()  # ... keyed by the server's own seed
    assert upload(url, fx.SECOND_PORTRAIT).rsplit("/", 2)[-2] != folder


def share_link(url: str, client: Client) -> str:
    link = httpx.get(url + "gradio_api/deep_link", params={"session_hash": client.session_hash}, timeout=30)
    return link.text.strip('"')


def shared_result(url: str, link: str) -> tuple[str, str]:
    """What a share link opens: its state ('valid' / 'invalid') and every value it restores, as text."""
    config = httpx.get(url + "config", params={"deep_link": link}, timeout=30).json()
    values = [json.dumps(c.get("props", {}).get("value"), default=str) for c in config["components"]]
    return config.get("deep_link_state"), "\n".join(values)


def test_a_share_link_opens_only_its_own_result(served):
    url, _ = served
    users = {}
    for photo in (fx.PORTRAIT, fx.SECOND_PORTRAIT):
        client = Client(url, verbose=False)
        result = client.predict(handle_file(str(photo)), api_name="/predict")
        assert len(result["faces"]) == 1
        users[photo.name] = (share_link(url, client), result["faces"][0]["box"])
    (a, box_a), (b, box_b) = users.values()
    assert a and b and a != b
    state_a, text_a = shared_result(url, a)
    state_b, text_b = shared_result(url, b)
    assert state_a == state_b == "valid"
    assert "astronaut.jpg" in text_a and "grace_hopper.jpg" not in text_a and json.dumps(box_a) in text_a
    assert "grace_hopper.jpg" in text_b and "astronaut.jpg" not in text_b and json.dumps(box_b) in text_b
    # the ids carry at least 64 bits; one changed character, or a path, opens nothing
    assert len(a) >= 11 and len(b) >= 11
    near = [a[:-1] + c for c in "AQgw" if c != a[-1]] + [a[1:] + a[0], a.upper(), f"../{a}", f"{a}/../{b}", b[:6]]
    for guess in near:
        state, text = shared_result(url, guess)
        assert state == "invalid" and "astronaut.jpg" not in text and "grace_hopper.jpg" not in text, guess
    # and a session that was never opened has no link to give
    assert share_link(url, type("Nobody", (), {"session_hash": uuid.uuid4().hex})()) == ""


@pytest.mark.parametrize("name", ["../../etc/hostname", "/etc/hostname", "..%2F..%2Fapp.py"])
def test_an_upload_cannot_name_where_it_is_written(served, name):
    url, cache = served
    r = httpx.post(url + "gradio_api/upload", files=[("files", (name, fx.PORTRAIT.read_bytes()))], timeout=60)
    if r.status_code == 200:  # accepted: then under the upload folder, with the name flattened
        path = r.json()[0]
        assert path.startswith(str(cache) + "/") and ".." not in path.split("/")
        assert httpx.get(url + "gradio_api/file=" + quote(path), timeout=30).content == fx.PORTRAIT.read_bytes()
    else:
        assert r.status_code in (400, 403)
