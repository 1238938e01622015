"""The real app: `python app.py` on a free port, called through gradio_client as the README shows."""
import os
import re

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from emotion import service
from emotion.faithfulness import N_RANDOM
from emotion.live import LiveState
from emotion.model import CLASSES
from tests import fixtures as fx


def readme_api_snippet(page: str = "README.md") -> str:
    text = (fx.ROOT / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return next(b for b in blocks if 'api_name="/predict"' in b)


def test_the_api_page_shows_the_readmes_call():
    """docs/api.md shows the very call the README shows and the test below runs."""
    assert readme_api_snippet("docs/api.md") == readme_api_snippet()


def test_readme_api_call_works_against_the_live_server(server, capsys):
    code = readme_api_snippet().replace('"http://127.0.0.1:7860/"', repr(server))
    code = code.replace('"face.jpg"', repr(str(fx.PORTRAIT)))
    scope = {}
    exec(code, scope)  # exactly what the README tells users to run
    result = scope["result"]
    assert len(result["faces"]) == 1
    face = result["faces"][0]
    assert set(face["probabilities"]) == set(CLASSES)
    assert sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert face["label"] in CLASSES and len(face["box"]) == 4
    hm = np.array(face["heatmap"])
    assert hm.ndim == 2 and hm.shape[0] == hm.shape[1] and 0 <= hm.min() and hm.max() <= 1
    assert face["label"] in capsys.readouterr().out
    f = face["faithfulness"]
    assert 0 <= f["beats_random"] <= f["n_random"] == N_RANDOM and f["verdict"]
    assert set(face["regions"]) == {"eyes_brows", "nose", "mouth", "rest_of_face", "outside_face"}
    assert sum(face["regions"].values()) == pytest.approx(1, abs=1e-3)


def test_api_options_and_no_face(server):
    c = Client(server, verbose=False)
    r = c.predict(handle_file(str(fx.NO_FACE)), "Grad-CAM", "layer4", "predicted class", False, api_name="/predict")
    assert r["faces"] == [] and "No face found" in r["messages"][0]
    r = c.predict(handle_file(str(fx.SECOND_PORTRAIT)), "HiResCAM", "layer3", "surprise", False,
                  api_name="/predict")
    assert r["faces"][0]["explained_class"] == "surprise" and r["method"] == "HiResCAM" and r["layer"] == "layer3"
    with pytest.raises(AppError, match="Unknown explanation method"):
        c.predict(handle_file(str(fx.PORTRAIT)), "Magic-CAM", "layer4", "predicted class", False,
                  api_name="/predict")


def test_bad_files_get_messages_and_the_server_keeps_serving(server, tmp_path):
    files = fx.awkward_files(tmp_path)
    c = Client(server, verbose=False)
    for name, message in (("text_as_jpg", "not an image"), ("empty", "empty"), ("truncated", "truncated"),
                          ("bomb_header", "pixels")):
        with pytest.raises(AppError, match=message):
            c.predict(handle_file(str(files[name])), "Grad-CAM", "layer4", "predicted class", False,
                      api_name="/predict")
    for name, n in (("one_pixel", 0), ("cmyk", 1), ("sixteen_bit", 1), ("exif_rotated", 1), ("gif_animated", 1),
                    ("ten_faces", 10)):
        r = c.predict(handle_file(str(files[name])), "Grad-CAM", "layer4", "predicted class", False,
                      api_name="/predict")
        assert len(r["faces"]) == n, name
    r = c.predict(handle_file(str(fx.PORTRAIT)), "Grad-CAM", "layer4", "predicted class", False, api_name="/predict")
    assert len(r["faces"]) == 1


def test_webcam_frames_are_smoothed(model):
    from emotion.faces import detect_faces

    frame = np.asarray(fx.portrait())
    face = detect_faces(frame)[0]
    (mx0, my0), (mx1, my1) = face.landmarks[3], face.landmarks[4]  # the mouth's corners
    x0, x1, y0, y1 = int(mx0) - 15, int(mx1) + 15, int(min(my0, my1)) - 20, int(max(my0, my1)) + 25
    lift = (face.box[3] - face.box[1]) // 2
    other = frame.copy()  # the same face in the same place, its smile covered by the skin above it
    other[y0:y1, x0:x1] = frame[y0 - lift:y1 - lift, x0:x1]
    state = None
    seen = []
    read_in = []  # the faces (box and landmarks) each frame was read in: detected, or followed between
    for k in range(4):
        img, probs, state = service.live_frame(model, frame if k != 2 else other, state)
        assert img.shape == frame.shape and set(probs) == set(CLASSES)
        seen.append(probs)
        read_in.append(state.detections)
    assert isinstance(state, LiveState) and state.frames == 4 and len(state.tracks) == 1
    # a steady face keeps a steady smoothed label; probabilities move only part of the way each frame
    assert seen[0] == pytest.approx(seen[1], abs=1e-5)
    # the changed frame reads differently: the smoothed answer moves ALPHA of the way towards it, no more
    from emotion.explain import LIVE_LAYER, LIVE_METHOD
    from emotion.live import ALPHA
    from emotion.pipeline import analyse
    from emotion.precision import resolve_precision

    # as live: frame 2 falls between the detector's runs (emotion/live.py), so it is read where the face was
    # followed to (frame 0's face, which has not moved: within a pixel of it)
    found = detect_faces(frame, detect_side=service.LIVE_DETECT_SIDE)[0].box
    assert np.abs(np.subtract(read_in[2][0].box, found)).max() <= 1
    raw = analyse(other, model, method=LIVE_METHOD, layer=LIVE_LAYER, detect_side=service.LIVE_DETECT_SIDE, flip=False,
                  precision=resolve_precision(engine=model.engine), detections=read_in[2]).faces[0].probabilities
    assert max(abs(raw[c] - seen[1][c]) for c in CLASSES) > 0.01  # the frame does differ
    assert seen[2] == pytest.approx({c: ALPHA * raw[c] + (1 - ALPHA) * seen[1][c] for c in CLASSES}, abs=1e-5)
    assert seen[3] == pytest.approx({c: ALPHA * seen[0][c] + (1 - ALPHA) * seen[2][c] for c in CLASSES}, abs=1e-5)
    img, probs, state = service.live_frame(model, np.zeros((480, 640, 3), np.uint8), state)
    assert probs is None and state.tracks == []


def test_a_photo_answers_first_with_grad_cam_then_with_the_checked_map(server):
    """The Photo tab's event yields twice: the faces, labels, probabilities and Grad-CAM at layer3 with the
    verdict still to come, then the chosen map with its verdict; the faces and labels are the same in both."""
    c = Client(server, verbose=False)
    job = c.submit(handle_file(str(fx.SECOND_PORTRAIT)), "Occlusion", "layer2", "predicted class", False,
                   api_name="/on_photo")
    job.result(timeout=120)
    steps = job.outputs()
    assert len(steps) == 2
    (_, first_cards, first_status, first_json), (_, cards, status, result) = steps
    assert "Grad-CAM at layer3" in first_status and "Checking the heatmaps" in first_status
    assert 'class="ev-verdict pending"' in first_cards and first_json["method"] == "Grad-CAM"
    assert "Occlusion at layer2" in status and "Checking" not in status
    assert "pending" not in cards and result["faces"][0]["faithfulness"]["level"] in ("good", "weak", "chance", "untestable")
    labels = [re.findall(r'data-label="(\w+)"', html) for html in (first_cards, cards)]
    assert labels[0] == labels[1] == [f["label"] for f in result["faces"]] and len(labels[0]) == 1
    assert first_json["faces"][0]["probabilities"] == pytest.approx(result["faces"][0]["probabilities"], abs=1e-4)


def test_a_damaged_file_is_answered_while_photos_hold_every_worker(server, tmp_path):
    """Photos are analysed WORKERS at a time, but a picture is read as soon as it arrives: a damaged file sent
    while two ten-face photos are being analysed, and a third waits, gets its message before any of them is
    answered (it does not wait behind them in the queue)."""
    import threading
    import time

    from gradio_client.utils import Status

    crowd = tmp_path / "ten_faces.jpg"
    fx.ten_faces().save(crowd, quality=92)
    bad = fx.awkward_files(tmp_path)["truncated"]
    jobs = [Client(server, verbose=False).submit(handle_file(str(crowd)), "Occlusion", "layer2", "predicted class",
                                                 False, api_name="/predict") for _ in range(3)]
    finished = []

    def wait(job):
        job.result(timeout=300)
        finished.append(time.perf_counter())

    waiters = [threading.Thread(target=wait, args=(j,)) for j in jobs]
    for w in waiters:
        w.start()
    deadline = time.monotonic() + 120
    while sum(j.status().code == Status.PROCESSING for j in jobs) < 2 and not finished:
        assert time.monotonic() < deadline, "the photos never started"
        time.sleep(0.05)
    assert not finished  # (the photos are still being analysed when the damaged file is sent)
    with pytest.raises(AppError, match="truncated"):
        Client(server, verbose=False).predict(handle_file(str(bad)), "Occlusion", "layer2", "predicted class", False,
                                              api_name="/predict")
    refused = time.perf_counter()
    for w in waiters:
        w.join()
    assert len(finished) == 3 and refused < min(finished)


def test_two_webcam_users_each_get_their_own_frames_labelled(server, model):
    """Two users stream different faces to the live webcam event at once, through Gradio's streaming protocol
    as the page speaks it (tools/webcam.py): every frame comes back labelled as that user's own face (the
    labels the live path gives each face, here in this process), none as the other's."""
    import threading
    import time

    from PIL import Image

    from tools.webcam import WebcamStream

    pictures = [fx.ROOT / "examples" / n for n in ("astronaut.jpg", "grace_hopper.jpg")]
    expected = []
    for path in pictures:
        frame, state = np.asarray(Image.open(path).convert("RGB")), None
        for _ in range(3):
            _, probs, state = service.live_frame(model, frame, state)
        expected.append(max(probs, key=probs.get))
    assert expected[0] != expected[1]  # (else a swap would go unseen)
    streams = [WebcamStream(server, path) for path in pictures]
    threads = [threading.Thread(target=s.run) for s in streams]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while min(len(s.figures.labels) for s in streams) < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    for s in streams:
        s.stop.set()
    for t in threads:
        t.join(60)
    for s, want in zip(streams, expected):
        assert s.figures.errors == [] and len(s.figures.labels) >= 8
        assert set(s.figures.labels) == {want}, (want, s.figures.labels)


def test_the_server_allocates_from_one_malloc_arena(tmp_path):
    """app.py sets glibc to one arena: threads that allocate at once (OpenCV here, as two webcam frames do) then
    share it, and the server does not grow by every frame of two concurrent streams (glibc's malloc_info counts
    the heaps)."""
    import subprocess
    import sys

    code = (
        "import ctypes, os, sys, tempfile, threading\n"
        f"sys.path.insert(0, {str(fx.ROOT)!r})\n"
        "import app  # noqa: F401 -- sets the allocator on import\n"
        "import cv2, numpy as np\n"
        "libc = ctypes.CDLL('libc.so.6')\n"
        "img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)\n"
        "def work():\n"
        "    for _ in range(200):\n"
        "        cv2.imencode('.jpg', cv2.GaussianBlur(img, (0, 0), 3))\n"
        "threads = [threading.Thread(target=work) for _ in range(4)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "libc.fdopen.restype = ctypes.c_void_p\n"
        "with tempfile.TemporaryFile('w+') as f:\n"
        "    fp = ctypes.c_void_p(libc.fdopen(os.dup(f.fileno()), b'w'))\n"
        "    libc.malloc_info(0, fp); libc.fflush(fp)\n"
        "    f.seek(0); print(f.read().count('<heap nr='))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "EMOTION_MALLOC")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "1"
