"""The webcam path's cadence (emotion/live.py): the detector every DETECT_EVERY frames with faces followed in
between, heatmaps every EXPLAIN_EVERY frames never on the detector's frame, and at once for a new face.

Frames are real photos moved across a canvas by known steps, so where each face is on every frame is known.
"""
import numpy as np
import pytest
from PIL import Image

from emotion import live, pipeline, service
from emotion.faces import detect_faces
from tests import fixtures as fx

STEP = (6, 3)  # px the face moves right and down each frame


def frame(k: int, second_from: int | None = None) -> np.ndarray:
    """Frame k: the astronaut 400 px tall at (40, 20) moved k steps; from frame `second_from`, Grace Hopper
    too, still, on the right."""
    canvas = Image.new("RGB", (640, 480), (40, 40, 40))
    canvas.paste(fx.portrait().resize((400, 400)), (40 + STEP[0] * k, 20 + STEP[1] * k))
    if second_from is not None and k >= second_from:
        canvas.paste(Image.open(fx.SECOND_PORTRAIT).convert("RGB").resize((220, 260)), (400, 120))
    return np.asarray(canvas)


@pytest.fixture
def calls(monkeypatch):
    """The frames on which the detector and the heatmap pass ran (the real functions, counted)."""
    seen = {"detect": [], "explain": [], "frame": 0}

    def detect(*args, **kwargs):
        seen["detect"].append(seen["frame"])
        return detect_faces(*args, **kwargs)

    real_explain = pipeline.explain

    def explain(*args, **kwargs):
        seen["explain"].append(seen["frame"])
        return real_explain(*args, **kwargs)

    monkeypatch.setattr(service, "detect_faces", detect)
    monkeypatch.setattr(pipeline, "explain", explain)
    return seen


def run(model, frames, calls):
    state, out = None, []
    for k, f in enumerate(frames):
        calls["frame"] = k
        _, probs, state = service.live_frame(model, f, state)
        out.append((probs, [d.box for d in state.detections], {i: m for i, m in state.maps.items()}))
    return state, out


def test_the_detector_runs_every_few_frames_and_faces_are_followed_between(model, calls):
    assert live.DETECT_EVERY == live.EXPLAIN_EVERY == 3
    frames = [frame(k) for k in range(11)]
    state, out = run(model, frames, calls)
    assert calls["detect"] == [0, 3, 6, 9]
    assert calls["explain"] == [0, 4, 7, 10]  # put off by one frame where the detector runs, never both
    for k, (_, boxes, _) in enumerate(out):
        assert len(boxes) == 1
        d = k - k % 3  # the detector's last frame: a followed box is its box moved as the face moved since
        found = detect_faces(frames[d], detect_side=service.LIVE_DETECT_SIDE)[0].box
        want = np.add(found, [STEP[0] * (k - d), STEP[1] * (k - d)] * 2)
        assert np.abs(np.subtract(boxes[0], want)).max() <= 2, (k, boxes[0], want)
    assert [t.id for t in state.tracks] == [1]  # one person throughout


def test_between_heatmaps_each_face_keeps_its_last_map(model, calls):
    state, out = run(model, [frame(k) for k in range(8)], calls)
    maps = [m[1] for _, _, m in out]
    assert maps[1] is maps[0] and maps[2] is maps[0] and maps[3] is maps[0]
    assert maps[4] is not maps[0] and maps[5] is maps[4] and maps[6] is maps[4] and maps[7] is not maps[4]


def test_a_face_that_comes_into_view_is_found_and_explained_at_once(model, calls):
    state, out = run(model, [frame(k, second_from=2) for k in range(5)], calls)
    # it comes in on frame 2, where faces are followed: the detector's next run, on frame 3, finds it...
    assert [len(boxes) for _, boxes, _ in out] == [1, 1, 1, 2, 2]
    assert calls["detect"] == [0, 3]
    # ... and, having no map yet, it gets one on that frame, the detector's though it is
    assert calls["explain"] == [0, 3]
    assert sorted(out[3][2]) == [1, 2]


def test_a_face_that_cannot_be_followed_sends_the_frame_to_the_detector(model, calls):
    gone = np.full((480, 640, 3), 40, np.uint8)
    state, out = run(model, [frame(0), frame(1), gone, gone, frame(4)], calls)
    assert calls["detect"] == [0, 2, 3, 4]  # lost on frame 2; no face, so the detector runs on every frame
    assert [len(boxes) for _, boxes, _ in out] == [1, 1, 0, 0, 1]
    assert out[2][0] is None and state.tracks and state.tracks[0].id == 2  # a new person after the gap


def test_a_change_of_heatmap_layer_is_explained_on_that_frame(model, calls):
    state = None
    for k, layer in enumerate(["layer3", "layer3", "layer4", "layer4"]):
        calls["frame"] = k
        _, _, state = service.live_frame(model, frame(k), state, "Grad-CAM", layer)
    assert calls["explain"] == [0, 2]
    assert state.maps[1].shape == (model.prep.size, model.prep.size)


def test_a_webcam_and_a_photo_at_once_get_the_answers_they_get_alone(model):
    """One user's webcam frames and another's photo analysed at the same time, on two threads (ONNX Runtime's
    passes hold no lock, PyTorch's do): each gets exactly the answers it gets alone."""
    import threading

    frames = [frame(k) for k in range(8)]
    photo = fx.ROOT / "examples" / "two_faces.jpg"

    def webcam():
        state, out = None, []
        for f in frames:
            _, probs, state = service.live_frame(model, f, state)
            out.append(probs)
        return out

    def photos():
        return [service.predict(model, photo) for _ in range(2)]

    alone = {"webcam": webcam(), "photos": photos()}
    together = {}
    threads = [threading.Thread(target=lambda k=k, fn=fn: together.__setitem__(k, fn()))
               for k, fn in (("webcam", webcam), ("photos", photos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert set(together) == {"webcam", "photos"}
    for got, want in zip(together["webcam"], alone["webcam"]):
        assert got == pytest.approx(want, abs=1e-5)
    for got, want in zip(together["photos"], alone["photos"]):
        assert [f["label"] for f in got["faces"]] == [f["label"] for f in want["faces"]]
        for g, w in zip(got["faces"], want["faces"]):
            assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-5)
            assert np.abs(np.subtract(g["heatmap"], w["heatmap"])).max() < 1e-3
            assert g["faithfulness"]["level"] == w["faithfulness"]["level"]
            assert g["what_if"]["regions"]["mouth"]["probability"] == pytest.approx(
                w["what_if"]["regions"]["mouth"]["probability"], abs=1e-4)
