"""The app frames a detected face the way the training faces were framed (eyes apart and placed alike), and
training can show its faces as the app frames them (`--app-framing`, train/framed.py)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from emotion import faces, framing
from emotion.faces import cut, detect_faces
from emotion.framing import crop_box, measure_framing
from emotion.model import CLASSES, Preprocess, create_net, load_model
from emotion.pipeline import analyse
from tests import fixtures as fx
from train import train
from train.export import save_model
from train.framed import app_framed, show_framed

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


def test_a_picture_the_eyes_square_would_fill_is_read_as_it_is():
    """Eyes 36 px apart at framing 0.36 ask for a 100 px square. In a 90 x 90 crop it covers all of it: the
    picture's own square is read (a 90 x 110 crop: its centre square); in an 800 px photo the eyes frame the
    face; in a 119 px crop the square covers 100 / 119 squared = 71% (read as it is), in a 125 px one 64%."""
    from emotion.faces import Detection

    def face(cx, cy):
        return Detection((cx - 40, cy - 40, cx + 40, cy + 50), 0.9,
                         ((cx - 18.0, cy - 10.0), (cx + 18.0, cy - 10.0), (cx, cy + 10), (cx - 12, cy + 25), (cx + 12, cy + 25)))

    def square(det, shape):
        return crop_box(det, 0.25, shape, eye_distance=0.36, eye_line=0.4)

    assert square(face(45, 50), (90, 90, 3)) == (0, 0, 90, 90)
    assert square(face(45, 60), (110, 90, 3)) == (0, 10, 90, 100)
    assert square(face(400, 300), (600, 800, 3)) == (350, 250, 450, 350)  # eyes' midpoint 40% from the top
    assert square(face(60, 60), (119, 119, 3)) == (0, 0, 119, 119)
    assert square(face(62, 62), (125, 125, 3)) == (12, 12, 112, 112)


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


# ---------------------------------------------------------------- training faces framed as the app frames them
APP_PREP = Preprocess(size=64, native_size=48, eye_distance=0.36, eye_line=0.385)


def as_tensor(pictures) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(p.convert("L")) for p in pictures]))[:, None]


def test_app_framed_training_faces_are_what_the_app_shows_the_model(tmp_path):
    """Face crops, framed for training (train/framed.py), are pixel for pixel what the app's pipeline gives the
    model for the same picture: the loose ones (1.4 and 1.6 times the detector's box) framed on the eyes, with
    the eyes where the framing puts them; the tight ones (1.2 times), which the eyes' square would overflow,
    as they are (CLOSE_UP_COVER). A picture without a face stays as it was."""
    faces = fx.loose_face_crops()[:6]  # one portrait's face at 1.2, 1.4 and 1.6 times its box, each mirrored
    blank = fx.class_image(3, size=64)
    images = as_tensor(faces + [blank])
    save_model(create_net(), tmp_path / "m", APP_PREP)
    model = load_model(tmp_path / "m", fallback=False)
    framed, found = app_framed(images, model.prep, progress=False)
    assert found.tolist() == [True] * 6 + [False]
    assert torch.equal(framed[6], images[6])
    for i, face in enumerate(faces):
        shown = analyse(np.asarray(face.convert("RGB")), model, with_heatmaps=False).faces[0]
        assert np.array_equal(framed[i, 0].numpy(), model.prep.pixels(shown.crop))
        if i < 2:  # tight: the picture itself is the face's square
            assert shown.crop_box == (0, 0, 64, 64)
            assert np.array_equal(framed[i, 0].numpy(), model.prep.pixels(np.asarray(face.convert("RGB"))))
            continue
        assert not torch.equal(framed[i], images[i])  # the loose crop was framed again
        distance, x, y = eyes_in(np.repeat(framed[i, 0].numpy()[..., None], 3, 2))
        assert distance == pytest.approx(0.36, abs=0.04)
        assert y == pytest.approx(0.385, abs=0.04) and x == pytest.approx(0.5, abs=0.04)


def test_app_framing_is_kept_for_the_same_pictures_framing_and_detector_rule_only(tmp_path, monkeypatch):
    images = as_tensor(fx.loose_face_crops()[2:4])  # loose enough to be framed on the eyes
    cache = tmp_path / "app_framed.pt"
    framed, found = app_framed(images, APP_PREP, progress=False, cache=cache)
    assert cache.exists() and found.tolist() == [True, True]
    kept = torch.load(cache, weights_only=True)
    torch.save({**kept, "framed": torch.zeros_like(framed)}, cache)  # a kept result is read, not made again
    assert torch.equal(app_framed(images, APP_PREP, progress=False, cache=cache)[0], torch.zeros_like(framed))
    other = Preprocess(size=64, native_size=48, eye_distance=0.36, eye_line=0.45)  # another framing: made again
    again, _ = app_framed(images, other, progress=False, cache=cache)
    assert not torch.equal(again, torch.zeros_like(framed)) and not torch.equal(again, framed)
    kept = torch.load(cache, weights_only=True)
    torch.save({**kept, "framed": torch.zeros_like(framed)}, cache)
    monkeypatch.setattr(faces, "BORDER_CONFIDENCE", 0.8)  # the detector's rule changed: made again
    assert torch.equal(app_framed(images, other, progress=False, cache=cache)[0], again)
    torch.save({**torch.load(cache, weights_only=True), "framed": torch.zeros_like(framed)}, cache)
    monkeypatch.setattr(framing, "CLOSE_UP_COVER", 0.9)  # when a picture is read as it is changed: made again
    assert torch.equal(app_framed(images, other, progress=False, cache=cache)[0], again)


def test_training_shows_the_share_asked_as_the_app_frames_it(tmp_path, capsys):
    """A run on 24 real face crops and 8 faceless pictures frames the 24 and records the share in its recipe;
    a share outside [0, 1] is refused before anything is made."""
    root = tmp_path / "data"
    for split, pictures in (("train", fx.loose_face_crops()), ("val", fx.loose_face_crops()[:4])):
        for k, p in enumerate(pictures):
            (root / split / CLASSES[k % 2]).mkdir(parents=True, exist_ok=True)
            p.save(root / split / CLASSES[k % 2] / f"face_{k}.png")
    for k in range(8):
        fx.class_image(k % 7, size=64).save(root / "train" / CLASSES[k % 2] / f"blank_{k}.png")
    run = tmp_path / "run"
    common = ["--dataset", "folder", "--data", str(root), "--run-dir", str(run), "--size", "64", "--epochs", "1",
              "--batch-size", "8", "--threads", "2", "--no-progress"]
    with pytest.raises(SystemExit, match="app-framing"):
        train.main(common + ["--app-framing", "1.5"])
    assert not run.exists()
    train.main(common + ["--app-framing", "0.5"])
    assert "the detector found 24 of 32 training faces; 50% of each batch" in capsys.readouterr().out
    assert (run / "app_framed.pt").exists()
    recipe = json.loads((run / "best" / "results.json").read_text())["training"]["recipe"]
    assert recipe["app_framing"] == 0.5


def test_app_framing_without_faces_to_frame_is_refused_before_the_run_folder_is_made(tmp_path):
    """Faceless pictures give the detector nothing to frame on: the run stops with a message, leaving nothing."""
    root = tmp_path / "data"
    for split in ("train", "val"):
        for k in range(4):
            (root / split / CLASSES[k % 2]).mkdir(parents=True, exist_ok=True)
            fx.class_image(k % 7, size=64).save(root / split / CLASSES[k % 2] / f"blank_{k}.png")
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match="needs the app's face detector"):
        train.main(["--dataset", "folder", "--data", str(root), "--run-dir", str(run), "--size", "64",
                    "--epochs", "1", "--batch-size", "4", "--threads", "1", "--no-progress", "--app-framing", "0.5"])
    assert not run.exists()


def test_the_share_asked_is_shown_framed_row_by_row():
    batch, framed = torch.zeros(2000, 1, 4, 4, dtype=torch.uint8), torch.ones(2000, 1, 4, 4, dtype=torch.uint8)
    for share in (0.0, 0.3, 1.0):
        shown = show_framed(batch, framed, share, torch.Generator().manual_seed(0))
        per_row = shown.flatten(1)
        assert torch.equal(per_row.min(1).values, per_row.max(1).values)  # every row whole from one or the other
        assert per_row[:, 0].float().mean().item() == pytest.approx(share, abs=0.03)


def test_kept_app_framing_is_read_where_the_detector_is_not_installed(tmp_path):
    """A GPU machine may have no yuface wheel: a run there reads the app-framed faces made here (the cache
    checks the detector's rule without the detector), and only framing anew needs the detector."""
    images = as_tensor(fx.loose_face_crops()[:2])
    cache = tmp_path / "app_framed.pt"
    framed, _ = app_framed(images, APP_PREP, progress=False, cache=cache)
    torch.save(images, tmp_path / "images.pt")
    script = f"""
import sys
from pathlib import Path
import torch
sys.modules["yuface"] = None  # as if its wheel were missing
from emotion.model import Preprocess
from train.framed import app_framed
images = torch.load({str(tmp_path / "images.pt")!r})
prep = Preprocess(size=64, native_size=48, eye_distance=0.36, eye_line=0.385)
framed, found = app_framed(images, prep, progress=False, cache=Path({str(cache)!r}))
torch.save(framed, {str(tmp_path / "read.pt")!r})
try:
    app_framed(images, Preprocess(size=64, native_size=48, eye_distance=0.36, eye_line=0.45), progress=False)
except ImportError:
    print("framing anew needs the detector")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=fx.ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "framing anew needs the detector"
    assert torch.equal(torch.load(tmp_path / "read.pt"), framed)
