"""The Photo tab's result view (emotion/view.py via service.photo) and the live view's heatmap blend, on real
photos."""
import base64
import re

import cv2
import numpy as np
import pytest

from PIL import Image

from emotion import service
from emotion.draw import COLOURS, FONT, _blend_heatmap, _text, annotate
from emotion.explain import DEFAULT_LAYER, DEFAULT_METHOD
from emotion.faces import detect_faces
from emotion.model import CLASSES
from emotion.pipeline import analyse
from emotion.regions import REGION_LABELS, REGIONS
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
        crop, heat, second = pictures(card)
        assert crop.shape == heat.shape == second.shape == (320, 320, 3)  # side by side, each 320 px
        assert np.abs(crop.astype(int) - heat.astype(int)).mean() > 10  # the heatmap is drawn over the face
        # Grad-CAM's map beside the default's (another map over the same face), and their agreement
        assert np.abs(crop.astype(int) - second.astype(int)).mean() > 10
        assert np.abs(heat.astype(int) - second.astype(int)).mean() > 5
        s = face["second_map"]
        assert (s["method"], s["layer"]) == ("Grad-CAM", "layer3") and "Grad-CAM at layer3" in card
        assert f'data-agreement="{s["agreement"]:.4f}"' in card and s["sentence"] in card
        # the card's face is this face's crop, not the other one's
        own = [np.abs(cv2.resize(f.crop, (320, 320)).astype(int) - crop).mean() for f in a.faces]
        assert int(np.argmin(own)) == i
        bars = re.findall(r'<li data-name="(\w+)" data-value="([\d.]+)"', card.split("Can this heatmap")[0])
        assert [n for n, _ in bars] == list(CLASSES)
        assert {n: float(p) for n, p in bars} == pytest.approx(face["probabilities"], abs=1e-4)
        assert re.search(rf'<li data-name="{face["label"]}"[^>]*class="ev-top"', card)
        assert face["faithfulness"]["verdict"].replace('"', "&quot;").replace("'", "&#x27;") in card
        regions, hidden = card.split("Where the heatmap lies")[1].split("What if a part of the face were hidden?")
        # the what-if: the sentence, and per region the explained class's probability with it hidden
        w = face["what_if"]
        assert w["sentence"].replace("'", "&#x27;") in hidden
        got = dict(re.findall(r'data-name="([\w &;]+)" data-value="([\d.]+)"', hidden))
        assert {k: float(v) for k, v in got.items()} == pytest.approx(
            {REGION_LABELS[r].replace("&", "&amp;"): w["regions"][r]["probability"] for r in w["regions"]}, abs=1e-4)
        assert re.findall(r'data-name="([\w &;]+)"', regions) == ["eyes &amp; brows", "nose", "mouth",
                                                                  "rest of face", "outside face"]
        # each region's bar carries its baseline (its share of the crop's area) as a tick
        ticks = [float(v) for v in re.findall(r'data-baseline="([\d.]+)"', regions)]
        base = dict(zip(REGIONS, ticks))
        assert base == pytest.approx(face["region_baseline"], abs=1e-4)
        assert sum(base.values()) == pytest.approx(1, abs=1e-3) and regions.count('class="ev-base"') == 5
    legend = v.faces.split('<section')[0]
    grid = {"layer2": 8, "layer3": 4, "layer4": 2}[DEFAULT_LAYER.split()[0]]  # at the shipped 64 px
    assert model.prep.size == 64
    assert f"{DEFAULT_METHOD} at {DEFAULT_LAYER.split()[0]}, {grid} x {grid} cells" in legend
    assert "red:" in legend and "blue:" in legend
    assert f"Heatmaps: {DEFAULT_METHOD} at {DEFAULT_LAYER.split()[0]}, {grid} x {grid} cells." in v.status


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
    blended = a.image.copy()
    _blend_heatmap(blended, a.faces[0])
    heat, plain = blended.astype(int), a.image.astype(int)
    side = x1 - x0
    edge = np.concatenate([heat[y0 + 2, x0 + 2:x1 - 2] - plain[y0 + 2, x0 + 2:x1 - 2],
                           heat[y0 + 2:y1 - 2, x1 - 3] - plain[y0 + 2:y1 - 2, x1 - 3]])
    centre = heat[y0 + side // 3:y1 - side // 3, x0 + side // 3:x1 - side // 3] - \
        plain[y0 + side // 3:y1 - side // 3, x0 + side // 3:x1 - side // 3]
    assert np.abs(edge).max() <= 8  # almost nothing of the heatmap next to the square's edge ...
    assert np.abs(centre).mean() > 20  # ... and it is drawn over the middle of the face (0 if it were not)
    # and no box drawn around the face: below its label, the face box's sides are the blended picture's pixels
    fx0, fy0, fx1, fy1 = (int(round(v * a.scale)) for v in a.faces[0].box)
    sides = np.s_[fy0 + side // 4:fy1, [fx0, fx1]]
    assert np.array_equal(drawn[sides], blended[sides].astype(int))


def framed(path) -> np.ndarray:
    """A 480 x 480 webcam-like frame of a photo's face: the face in the middle, half the frame wide."""
    img = Image.open(path).convert("RGB")
    x0, y0, x1, y1 = detect_faces(np.asarray(img))[0].box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 1.25 * max(x1 - x0, y1 - y0)
    return np.asarray(img.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half))).resize((480, 480)))


def shows(picture: np.ndarray, text: str, bg) -> bool:
    """Whether `picture` holds `text` drawn as the live view draws a caption (white on `bg`), at any of the
    sizes it uses: the caption's pixels, background box included, found exactly somewhere in the picture."""
    for thick in range(1, 5):
        (w, h), base = cv2.getTextSize(text, FONT, 0.45 * thick, thick)
        canvas = np.zeros((h + 2 * base + 4, w + 8, 3), np.uint8)
        _text(canvas, text, (0, h + base), 0.45 * thick, (255, 255, 255), thick, bg=bg)
        caption = canvas[:h + 2 * base, :w + 5]
        ch, cw = caption.shape[:2]
        if ch > picture.shape[0] or cw > picture.shape[1]:
            continue
        # the best match (matchTemplate's sums carry rounding), then the pixels themselves, exactly
        y, x = np.unravel_index(np.argmin(cv2.matchTemplate(picture, caption, cv2.TM_SQDIFF)), (1 + picture.shape[0] - ch,
                                                                                           1 + picture.shape[1] - cw))
        if np.array_equal(picture[y:y + ch, x:x + cw], caption):
            return True
    return False


def test_the_live_picture_names_the_class_of_its_heatmap(model):
    """Two faces in one place, read differently: the astronaut (happy) for two frames, then Grace Hopper (neutral
    on her own). The smoothed label is still happy while this frame's heatmap is for neutral: the picture must
    say that its heatmap is neutral's, not let "happy" stand over it alone."""
    astronaut, grace = framed(fx.PORTRAIT), framed(fx.SECOND_PORTRAIT)
    own = analyse(grace, model, detect_side=service.LIVE_DETECT_SIDE, flip=False).faces[0]
    assert own.label == own.explained == "neutral"
    state = None
    for frame in (astronaut, astronaut, grace):
        img, probs, state = service.live_frame(model, frame, state)
    assert max(probs, key=probs.get) == "happy"  # the label shown: the smoothed one
    label = f"happy {probs['happy']:.0%}"
    assert shows(img, label, COLOURS["happy"])
    assert shows(img, "heatmap: neutral", COLOURS["neutral"]) and not shows(img, "heatmap: happy", COLOURS["happy"])
    # when label and heatmap agree the picture says so too; a map the same for every class says that
    img, _, _ = service.live_frame(model, astronaut, None)
    assert shows(img, "heatmap: happy", COLOURS["happy"])
    img, _, _ = service.live_frame(model, astronaut, None, method="Eigen-CAM")
    assert shows(img, "heatmap: any class", (90, 90, 90)) and not shows(img, "heatmap: happy", COLOURS["happy"])
