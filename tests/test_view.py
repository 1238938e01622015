"""The Photo tab's result view (emotion/view.py via service.photo) and the live view's heatmap blend, on real
photos."""
import base64
import re

import cv2
import numpy as np
import pytest

from emotion import service
from emotion.draw import _blend_heatmap, annotate
from emotion.model import CLASSES
from emotion.pipeline import analyse
from emotion.regions import REGIONS
from tests import fixtures as fx

TWO_FACES = fx.ROOT / "examples" / "two_faces.jpg"


def pictures(card: str) -> list[np.ndarray]:
    urls = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', card)
    return [cv2.cvtColor(cv2.imdecode(np.frombuffer(base64.b64decode(u), np.uint8), cv2.IMREAD_COLOR),
                         cv2.COLOR_BGR2RGB) for u in urls]


def cards(html: str) -> list[str]:
    return re.findall(r'<section class="ev-face".*?</section>', html, re.S)


def test_every_face_gets_a_card_in_the_photo_numbers_order(model):
    v = service.photo(model, str(TWO_FACES))
    faces = v.result["faces"]
    assert len(faces) == 2
    found = cards(v.faces)
    assert [re.search(r'data-face="(\d+)"', c).group(1) for c in found] == ["1", "2"]
    a = analyse(str(TWO_FACES), model)
    for i, (card, face) in enumerate(zip(found, faces)):
        assert f'data-label="{face["label"]}"' in card and f"<h3>Face {i + 1}: {face['label']} " in card
        crop, heat = pictures(card)
        assert crop.shape == heat.shape == (320, 320, 3)  # side by side, each 320 px
        assert np.abs(crop.astype(int) - heat.astype(int)).mean() > 10  # the heatmap is drawn over the face
        # the card's face is this face's crop, not the other one's
        own = [np.abs(cv2.resize(f.crop, (320, 320)).astype(int) - crop).mean() for f in a.faces]
        assert int(np.argmin(own)) == i
        bars = re.findall(r'<li data-name="(\w+)" data-value="([\d.]+)"', card.split("Can this heatmap")[0])
        assert [n for n, _ in bars] == list(CLASSES)
        assert {n: float(p) for n, p in bars} == pytest.approx(face["probabilities"], abs=1e-4)
        assert re.search(rf'<li data-name="{face["label"]}"[^>]*class="ev-top"', card)
        assert face["faithfulness"]["verdict"].replace('"', "&quot;").replace("'", "&#x27;") in card
        regions = card.split("Where the heatmap lies")[1]
        assert re.findall(r'data-name="([\w &;]+)"', regions) == ["eyes &amp; brows", "nose", "mouth",
                                                                  "rest of face", "outside face"]
        # each region's bar carries its baseline (its share of the crop's area) as a tick
        ticks = [float(v) for v in re.findall(r'data-baseline="([\d.]+)"', regions)]
        base = dict(zip(REGIONS, ticks))
        assert base == pytest.approx(face["region_baseline"], abs=1e-4)
        assert sum(base.values()) == pytest.approx(1, abs=1e-3) and regions.count('class="ev-base"') == 5
    legend = v.faces.split('<section')[0]
    assert "Grad-CAM at layer3" in legend and "red:" in legend and "blue:" in legend


def test_class_agnostic_method_says_so(model):
    v = service.photo(model, str(fx.PORTRAIT), method="Eigen-CAM")
    assert "cannot answer &quot;why not X?&quot;" in v.faces and "heatmap not tied to a class" in v.faces
    v = service.photo(model, str(fx.PORTRAIT), method="Grad-CAM", explain_for="sad")
    assert "heatmap for sad" in v.faces and "not tied" not in v.faces


def test_live_heatmap_fades_out_at_the_edge_of_the_face_square(model):
    frame = np.asarray(fx.portrait())
    a = analyse(frame, model)
    x0, y0, x1, y1 = a.faces[0].crop_box
    h, w = a.image.shape[:2]
    assert 0 < x0 and 0 < y0 and x1 < w and y1 < h  # the whole square is inside the picture
    drawn = annotate(a, heatmaps=True).astype(int)
    plain = annotate(a, heatmaps=False).astype(int)
    side = x1 - x0
    edge = np.concatenate([drawn[y0 + 2, x0 + 2:x1 - 2] - plain[y0 + 2, x0 + 2:x1 - 2],
                           drawn[y0 + 2:y1 - 2, x1 - 3] - plain[y0 + 2:y1 - 2, x1 - 3]])
    centre = drawn[y0 + side // 3:y1 - side // 3, x0 + side // 3:x1 - side // 3] - \
        plain[y0 + side // 3:y1 - side // 3, x0 + side // 3:x1 - side // 3]
    assert np.abs(edge).max() <= 8  # almost nothing of the heatmap next to the square's edge ...
    assert np.abs(centre).mean() > 20  # ... and it is drawn over the middle of the face (0 if it were not)
    # and no box drawn around the face: below its label, the face box's sides are the blended picture's pixels
    blended = a.image.copy()
    _blend_heatmap(blended, a.faces[0])
    fx0, fy0, fx1, fy1 = (int(round(v * a.scale)) for v in a.faces[0].box)
    sides = np.s_[fy0 + side // 4:fy1, [fx0, fx1]]
    assert np.array_equal(drawn[sides], blended[sides].astype(int))
