"""Webcam frames go first: another thread's passes wait between small batches while a live frame is analysed
(emotion/priority.py), with the shipped model's passes in ONNX Runtime as the app runs them."""
import contextlib
import threading

import numpy as np
import torch

from emotion import service
from tests.fixtures import portrait


def _faces(model, n: int) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return model.prep.to_input([rng.integers(0, 256, (80, 80, 3), dtype=np.uint8) for _ in range(n)])


@contextlib.contextmanager
def _frame_in_flight(model):
    """A thread that holds a live frame open until the block ends."""
    entered, release = threading.Event(), threading.Event()

    def webcam():
        with model.turns.live():
            entered.set()
            release.wait(60)

    t = threading.Thread(target=webcam)
    t.start()
    assert entered.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join(10)


@contextlib.contextmanager
def _max_wait(model, seconds: float):
    saved = model.turns.max_wait_s
    model.turns.max_wait_s = seconds
    try:
        yield
    finally:
        model.turns.max_wait_s = saved


def _in_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("value", fn()))
    t.start()
    return t, out


def _each_waits_for_a_frame(model, *fns) -> None:
    """Each of `fns`, run in another thread, is still held back 1.5 s into a live frame, and ends after it."""
    for fn in fns:
        with _frame_in_flight(model):
            t, _ = _in_thread(fn)
            t.join(1.5)
            assert t.is_alive()
        t.join(60)
        assert not t.is_alive()


def test_a_photos_passes_wait_while_a_live_frame_is_analysed(model):
    assert model.engine == "onnx"
    x = _faces(model, 2 * model.turns.chunk + 3)
    whole = model.onnx.logits(x)  # one pass, no order involved
    with _max_wait(model, 60):  # no time cap: only the frame's end lets the batches go
        with _frame_in_flight(model):
            waits = model.turns.waits
            t, out = _in_thread(lambda: model.logits(x))
            t.join(1.5)
            assert t.is_alive(), "a photo's pass ran while a live frame was in flight"
        t.join(60)
    assert not t.is_alive() and model.turns.waits > waits
    torch.testing.assert_close(out["value"], whole, rtol=1e-4, atol=1e-4)  # in batches, the same logits


def test_a_photos_probabilities_and_grad_cam_wait_too(model):
    x = _faces(model, 2)
    with _max_wait(model, 60):
        _each_waits_for_a_frame(model, lambda: model.probabilities(x),
                                lambda: model.gradcam_parts(x, "layer3", [None, None]))


def test_live_frames_do_not_wait_for_one_another(model):
    """Two webcams: one frame in flight never holds back another's passes, even with no time cap."""
    frame = np.asarray(portrait())
    with _max_wait(model, 60), _frame_in_flight(model):
        t, out = _in_thread(lambda: service.live_frame(model, frame, None))
        t.join(60)
        assert not t.is_alive(), "a live frame waited for another live frame"
    img, probs, _ = out["value"]
    assert img is not None and probs is not None


def test_no_photo_waits_for_ever_beside_a_stream_without_pause(model):
    x = _faces(model, 3 * model.turns.chunk)
    with _max_wait(model, 0.05), _frame_in_flight(model):
        t, out = _in_thread(lambda: model.logits(x))
        t.join(60)
        assert not t.is_alive(), "a photo starved behind a live frame"
    assert out["value"].shape == (len(x), len(model.labels))


def test_a_photos_face_detection_and_inpainting_wait_too(model):
    """The order is the process's, not only the network's: the detector's run on a photo and the check's
    inpainting (CPU work beside the passes) wait for a live frame as well."""
    from emotion.faces import detect_faces
    from emotion.faithfulness import InpaintDeletion

    rgb = np.asarray(portrait())
    x = _faces(model, 1)[0]
    mask = torch.zeros(x.shape[1:])
    mask[20:40, 20:40] = 1
    inpaint = InpaintDeletion(model.prep.mean, model.prep.std)
    with _max_wait(model, 60):
        _each_waits_for_a_frame(model, lambda: detect_faces(rgb), lambda: inpaint(x, mask))
    assert len(detect_faces(rgb)) == 1
