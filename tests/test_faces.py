"""Which of YuNet's boxes count as faces: the sure ones, else one unsure box that fills the picture."""
import numpy as np
import skimage.data
from PIL import Image

from emotion.faces import (CLOSE_UP_CONFIDENCE, CLOSE_UP_SHARE, MIN_CONFIDENCE, Detection, detect_faces,
                           find_candidates, keep_faces)
from tests import fixtures as fx


def tight_grey_face(side: int = 48) -> np.ndarray:
    """The astronaut's face cut as tightly as FER2013 cuts faces (0.7 of the detector's box), grey, 48 px."""
    photo = Image.open(fx.PORTRAIT).convert("RGB")
    x0, y0, x1, y1 = 178, 63, 267, 175  # YuNet's box on the 512 px photo
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.35 * (x1 - x0)
    face = photo.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half)))
    return np.asarray(face.convert("L").resize((side, side)).convert("RGB"))


def test_a_tight_small_face_crop_is_found_though_the_detector_is_unsure():
    crop = tight_grey_face()
    faces = detect_faces(crop)
    assert len(faces) == 1
    f = faces[0]
    assert CLOSE_UP_CONFIDENCE <= f.score < MIN_CONFIDENCE  # the case the close-up rule is for
    assert f.size >= 0.8 * crop.shape[0]
    assert detect_faces(crop, close_up_confidence=MIN_CONFIDENCE) == []  # a plain threshold misses it


def test_a_small_unsure_box_in_a_scene_is_not_a_face():
    moon = np.repeat(skimage.data.moon()[..., None], 3, 2)  # 512 px of craters, no face
    unsure = find_candidates(moon, CLOSE_UP_CONFIDENCE)
    assert unsure and all(f.score < MIN_CONFIDENCE and f.size < CLOSE_UP_SHARE * 512 for f in unsure)
    assert detect_faces(moon) == []
    assert detect_faces(np.asarray(Image.open(fx.NO_FACE).convert("RGB"))) == []


def test_sure_faces_come_largest_first_and_no_unsure_box_joins_them():
    photo = np.asarray(Image.open(fx.ROOT / "examples" / "two_faces.jpg").convert("RGB"))
    faces = detect_faces(photo)
    assert len(faces) == 2 and faces[0].size > faces[1].size
    sure = Detection((10, 10, 30, 30), 0.9, ())
    unsure_big = Detection((0, 0, 100, 100), 0.5, ())
    assert keep_faces([unsure_big, sure], (100, 100)) == [sure]
    best, other = Detection((5, 5, 95, 95), 0.55, ()), Detection((0, 0, 100, 100), 0.45, ())
    assert keep_faces([other, best], (100, 100)) == [best]  # the most confident close-up, only one
    small = Detection((0, 0, 40, 40), 0.55, ())  # under CLOSE_UP_SHARE of the side
    assert keep_faces([small], (100, 100)) == []
    assert keep_faces([Detection((0, 0, 100, 100), 0.3, ())], (100, 100)) == []  # under CLOSE_UP_CONFIDENCE


def test_the_detector_tool_counts_misses_and_false_faces(tmp_path):
    """tools.detector on a split of one real face and two blank pictures: two thirds are missed under
    every rule; on the face-free pictures the app's rule never finds more than a plain threshold at its
    close-up level, and never fewer than a plain MIN_CONFIDENCE."""
    import shutil

    from tools import detector

    for name in ("happy", "sad"):
        (tmp_path / "faces" / "test" / name).mkdir(parents=True)
    shutil.copy(fx.PORTRAIT, tmp_path / "faces" / "test" / "happy" / "astronaut.jpg")
    for k in range(2):
        Image.new("RGB", (96, 96), (128 + k, 128, 128)).save(tmp_path / "faces" / "test" / "sad" / f"blank{k}.png")
    out = detector.main(["--data", str(tmp_path / "faces"), "--dataset", "folder", "--split", "test",
                         "--json", str(tmp_path / "detector.json")])
    sets = list(out["percent"])
    assert all(v == 66.67 for v in out["percent"][sets[0]].values())
    app = f"{MIN_CONFIDENCE}, close-up {CLOSE_UP_CONFIDENCE}"
    assert out["app_rule"] == app
    for name in sets[1:]:
        rates = out["percent"][name]
        assert rates[f"threshold {MIN_CONFIDENCE}"] <= rates[app] <= rates[f"threshold {CLOSE_UP_CONFIDENCE}"]
    squares = out["percent"][sets[2]]
    assert squares[f"threshold {CLOSE_UP_CONFIDENCE}"] > squares[app]  # the close-up rule earns its keep
