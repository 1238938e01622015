"""The pipeline on real photos with the shipped model: faces, labels, probabilities, heatmaps, drawings."""
import numpy as np
import pytest
from PIL import Image

from emotion.draw import annotate, face_panel
from emotion.explain import LAYERS, METHODS
from emotion.model import CLASSES
from emotion.pipeline import NO_FACE, analyse
from tests import fixtures as fx


def test_real_photo_with_a_face(model):
    a = analyse(fx.PORTRAIT, model)
    assert len(a.faces) == 1
    f = a.faces[0]
    x0, y0, x1, y1 = f.box
    assert x0 < 222 < x1 and y0 < 119 < y1  # the astronaut's face, measured by eye on the 512 px photo
    assert 60 < x1 - x0 < 160 and f.detector_score > 0.6
    assert list(f.probabilities) == list(CLASSES)
    assert sum(f.probabilities.values()) == pytest.approx(1, abs=1e-4)
    assert f.label == max(f.probabilities, key=f.probabilities.get) and f.explained == f.label
    assert f.heatmap.shape == (model.prep.size, model.prep.size)
    assert f.heatmap.min() >= 0 and f.heatmap.max() <= 1 + 1e-6
    j = a.to_json()
    assert j["image_size"] == [512, 512] and len(j["faces"][0]["heatmap"]) == model.prep.size


def test_photo_without_a_face(model):
    a = analyse(fx.NO_FACE, model)
    assert a.faces == [] and a.messages == [NO_FACE]
    assert a.to_json()["faces"] == []


def test_why_not_another_class(model):
    own = analyse(fx.PORTRAIT, model).faces[0]
    other = next(c for c in CLASSES if c != own.label)
    f = analyse(fx.PORTRAIT, model, explain_class=other).faces[0]
    assert f.explained == other and f.label == own.label
    assert f.probabilities == pytest.approx(own.probabilities, abs=1e-5)
    assert not np.allclose(f.heatmap, own.heatmap, atol=1e-3)
    with pytest.raises(ValueError, match="Unknown class"):
        analyse(fx.PORTRAIT, model, explain_class="contempt")


@pytest.mark.parametrize("method", list(METHODS) + ["Random"])
def test_every_method(model, method):
    f = analyse(fx.PORTRAIT, model, method=method).faces[0]
    assert f.heatmap.shape == (model.prep.size, model.prep.size) and np.isfinite(f.heatmap).all()


def test_every_layer_and_finer_grids_earlier(model):
    def distinct_rows(layer):
        hm = analyse(fx.PORTRAIT, model, layer=layer).faces[0].heatmap
        return len(np.unique(np.round(hm[:, model.prep.size // 2], 4)))
    rows = [distinct_rows(layer) for layer in LAYERS]
    assert all(r > 1 for r in rows)
    with pytest.raises(ValueError, match="Unknown layer"):
        analyse(fx.PORTRAIT, model, layer="layer9")


def test_many_faces_are_batched_and_capped(model):
    grid = np.asarray(fx.ten_faces())
    a = analyse(grid, model)
    assert len(a.faces) == 10
    boxes = [f.box for f in a.faces]
    cells = {((b[0] + b[2]) // 2 // 200, (b[1] + b[3]) // 2 // 240) for b in boxes}  # one face per grid cell
    assert len(cells) == 10
    capped = analyse(grid, model, max_faces=3)
    assert len(capped.faces) == 3 and "10 faces found" in capped.messages[0]


def test_already_cropped_face(model):
    crop = Image.open(fx.PORTRAIT).crop((160, 40, 290, 190)).resize((48, 48)).convert("L")
    a = analyse(crop, model, whole_image=True)
    assert len(a.faces) == 1 and a.faces[0].box == (0, 0, 48, 48)


def test_pictures_of_the_result(model):
    a = analyse(fx.PORTRAIT, model)
    framed = annotate(a)
    assert framed.shape == a.image.shape and not np.array_equal(framed, a.image)
    live = annotate(a, heatmaps=True)
    x0, y0, x1, y1 = a.faces[0].box
    assert not np.array_equal(live[y0:y1, x0:x1], framed[y0:y1, x0:x1])  # heatmap blended into the face
    panel = face_panel(a.faces[0], 1)
    assert panel.shape[0] == 224 and panel.shape[1] > 3 * 224 and panel.dtype == np.uint8


def test_concurrent_requests_never_share_state(model):
    """Grad-CAM, a hooked method and the faithfulness check at once on one model: each answer is its own."""
    from concurrent.futures import ThreadPoolExecutor

    from emotion import service

    jobs = [(fx.PORTRAIT, "Grad-CAM"), (fx.SECOND_PORTRAIT, "Grad-CAM++"), (np.asarray(fx.ten_faces()), "Grad-CAM"),
            (fx.SECOND_PORTRAIT, "Grad-CAM")] * 2
    reference = [service.predict(model, img, method) for img, method in jobs[:4]]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda job: service.predict(model, *job), jobs))
    for k, got in enumerate(answers):
        want = reference[k % 4]
        assert len(got["faces"]) == len(want["faces"])
        for g, w in zip(got["faces"], want["faces"]):
            assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-4)
            assert np.abs(np.array(g["heatmap"]) - np.array(w["heatmap"])).max() < 1e-3
            assert g["faithfulness"]["score"] == pytest.approx(w["faithfulness"]["score"], abs=1e-4)
