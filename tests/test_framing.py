"""The app frames a detected face the way the training faces were framed (eyes apart and placed alike)."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from emotion.faces import cut, detect_faces
from emotion.framing import crop_box, measure_framing
from emotion.model import Preprocess, create_net, load_model
from tests import fixtures as fx
from train.export import save_model

PHOTOS = [fx.PORTRAIT, fx.SECOND_PORTRAIT, fx.ROOT / "examples" / "two_faces.jpg"]


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def eyes_in(crop: np.ndarray) -> tuple[float, float, float]:
    """Eye distance and the eyes' midpoint (x, y), as shares of the crop's side, found afresh in the crop."""
    face = detect_faces(crop)[0]
    (rx, ry), (lx, ly) = face.landmarks[:2]
    side = crop.shape[0]
    return float(np.hypot(lx - rx, ly - ry)) / side, (rx + lx) / 2 / side, (ry + ly) / 2 / side


@pytest.mark.parametrize("photo", PHOTOS[:2])
def test_the_crop_puts_the_eyes_where_the_training_faces_had_them(photo):
    prep = Preprocess(eye_distance=0.355, eye_line=0.37)
    image = rgb(photo)
    det = detect_faces(image)[0]
    crop = cut(image, prep.square(det, image.shape))
    assert crop.shape[0] == crop.shape[1]
    distance, x, y = eyes_in(crop)
    assert distance == pytest.approx(0.355, abs=0.03)
    assert y == pytest.approx(0.37, abs=0.03) and x == pytest.approx(0.5, abs=0.03)


def test_models_without_eye_framing_keep_the_box_and_margin():
    image = rgb(fx.PORTRAIT)
    det = detect_faces(image)[0]
    x0, y0, x1, y1 = det.box
    sq = Preprocess(face_margin=0.25).square(det, image.shape)
    assert sq[2] - sq[0] == pytest.approx(1.5 * max(x1 - x0, y1 - y0), abs=1)
    assert (sq[0] + sq[2]) / 2 == pytest.approx((x0 + x1) / 2, abs=1)


def test_turned_faces_are_framed_by_their_box():
    # eyes 10 px apart in a 100 px wide box: the eye rule would give a 28 px square, the box floor 120 px
    from emotion.faces import Detection
    from emotion.framing import MIN_SIDE_PER_BOX_WIDTH

    det = Detection((100, 100, 200, 220), 0.9, ((150.0, 140.0), (160.0, 140.0), (155, 170), (145, 190), (165, 190)))
    x0, y0, x1, y1 = crop_box(det, 0.25, (400, 400, 3), eye_distance=0.355, eye_line=0.37)
    assert x1 - x0 == pytest.approx(MIN_SIDE_PER_BOX_WIDTH * 100, abs=1)
    assert (x0 + x1) / 2 == pytest.approx(155, abs=1) and 140 - y0 == pytest.approx(0.37 * (y1 - y0), abs=1)


def test_measure_framing_recovers_how_a_set_of_crops_was_framed():
    # crops cut from real photos with the eyes 0.30 of the side apart at 0.40 from the top, at three sizes
    prep = Preprocess(eye_distance=0.30, eye_line=0.40)
    crops = []
    for photo in PHOTOS:
        image = rgb(photo)
        for det in detect_faces(image)[:2]:
            crop = cut(image, prep.square(det, image.shape))
            for side in (48, 64, 96):
                crops.append(np.asarray(Image.fromarray(crop).resize((side, side), Image.BICUBIC)))
    assert len(crops) == 12
    distance, line, found = measure_framing(crops)
    assert found >= 10
    assert distance == pytest.approx(0.30, abs=0.025) and line == pytest.approx(0.40, abs=0.025)


def test_framing_travels_in_config_json(tmp_path):
    prep = Preprocess(size=32, eye_distance=0.368, eye_line=0.391, native_size=48)
    save_model(create_net(), tmp_path / "m", prep)
    loaded = load_model(tmp_path / "m", fallback=False).prep
    assert (loaded.eye_distance, loaded.eye_line, loaded.size) == (0.368, 0.391, 32)


def test_without_the_face_detector_models_load_and_training_takes_fer2013s_framing():
    # a GPU machine has no yuface wheel: importing the model and training must not need it
    code = (
        "import sys; sys.modules['yuface'] = None\n"  # makes `import yuface` raise ImportError
        "import torch\n"
        "from emotion.framing import FER_FRAMING\n"
        "from emotion.model import Preprocess\n"
        "from train import data as D, train as T\n"
        "assert 'emotion.faces' not in sys.modules\n"
        "split = D.Split(torch.zeros(12, 1, 48, 48, dtype=torch.uint8), torch.zeros(12, dtype=torch.long), [''] * 12)\n"
        "assert T._framing(split, 'fer2013', 0) == {'eye_distance': FER_FRAMING[0], 'eye_line': FER_FRAMING[1]}\n"
        "assert T._framing(split, 'rafdb', 0) == {}\n"
        "print('ok', Preprocess().eye_line)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=fx.ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["ok", "0.385"]
