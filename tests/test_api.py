"""/predict called by its documented argument names, through gradio_client against the real server."""
import cv2
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from emotion.draw import _blend_heatmap, feather
from emotion.explain import overlay
from emotion.model import CLASSES
from emotion.pipeline import analyse
from tests import clips
from tests import fixtures as fx

NAMES = ["image", "method", "layer", "heatmap_for", "whole_image"]


def test_predict_takes_the_documented_keywords(server):
    c = Client(server, verbose=False)
    params = c.view_api(return_format="dict", print_info=False)["named_endpoints"]["/predict"]["parameters"]
    assert [p["parameter_name"] for p in params] == NAMES
    assert [p["label"] for p in params] == NAMES  # what the API page shows is what the call takes
    r = c.predict(image=handle_file(str(fx.SECOND_PORTRAIT)), method="HiResCAM", layer="layer4",
                  heatmap_for="sad", whole_image=False, api_name="/predict")
    face = r["faces"][0]
    assert face["explained_class"] == "sad" and face["label"] in CLASSES
    assert r["method"] == "HiResCAM" and r["layer"] == "layer4" and r["grid"] == [2, 2]  # 64 px / 32
    # the defaults are the documented ones: only the image is needed
    r = c.predict(image=handle_file(str(fx.PORTRAIT)), api_name="/predict")
    assert r["method"] == "Occlusion" and r["layer"] == "layer2" and r["grid"] == [8, 8]
    assert r["faces"][0]["explained_class"] == r["faces"][0]["label"]
    with pytest.raises(TypeError):
        c.predict(image=handle_file(str(fx.PORTRAIT)), explain_for="sad", api_name="/predict")


def api_texts() -> dict[str, str]:
    """The README's "Call the API" section (the app shows it in its API tab) and the API's documentation page."""
    text = (fx.ROOT / "README.md").read_text()
    section = text[text.index("## Call the API"):text.index("\n## ", text.index("## Call the API") + 1)]
    return {"README.md": section, "docs/api.md": (fx.ROOT / "docs" / "api.md").read_text()}


def test_readme_names_every_argument():
    for where, section in api_texts().items():
        for name in NAMES:
            assert f"{name}=" in section and f"`{name}`" in section, (where, name)
        assert "`heatmap_box`" in section, where  # the square the heatmap covers is documented


def lay_on(picture: np.ndarray, heatmap: list, square) -> np.ndarray:
    """What a client does with /predict's answer: stretch the heatmap over `square` (x0, y0, x1, y1 in the
    picture's pixels, maybe reaching past its edge) and blend it in, fading out at the square's edge, with the
    library's own colours and fade (emotion.explain.overlay, emotion.draw.feather)."""
    out = picture.copy()
    h, w = picture.shape[:2]
    x0, y0, x1, y1 = square
    hm = cv2.resize(np.asarray(heatmap, np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    inside = np.s_[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    region = picture[cy0:cy1, cx0:cx1].astype(np.float32)
    a = feather(y1 - y0, x1 - x0)[inside][..., None]
    blended = overlay(picture[cy0:cy1, cx0:cx1], hm[inside], 0.6).astype(np.float32)
    out[cy0:cy1, cx0:cx1] = np.rint(blended * a + region * (1 - a)).astype(np.uint8)
    return out


def test_a_client_lays_the_heatmap_where_the_app_does(server, model, tmp_path):
    """Grace Hopper enlarged to 2048 x 2400, past the 1920 px the app analyses, so the app works on a copy
    0.8 the size. A client that stretches /predict's heatmap over `heatmap_box` on the picture it sent draws
    it where the app's own overlay (the live view's blend, over the analysed copy) lands; laid over the
    detector's `box` (narrower, and not centred on the eyes) it would be far off."""
    path = tmp_path / "grace_large.jpg"
    Image.open(fx.SECOND_PORTRAIT).convert("RGB").resize((2048, 2400), Image.Resampling.LANCZOS).save(path, quality=92)
    picture = np.asarray(Image.open(path).convert("RGB"))
    r = Client(server, verbose=False).predict(image=handle_file(str(path)), api_name="/predict")
    assert r["image_size"] == [2048, 2400] and len(r["faces"]) == 1
    face = r["faces"][0]
    x0, y0, x1, y1 = face["heatmap_box"]
    assert x1 - x0 == y1 - y0 and len(face["heatmap"]) == model.prep.size  # a square, the model's map
    a = analyse(path, model)  # what the app draws, in the analysed copy's pixels
    assert a.scale == pytest.approx(0.8, abs=1e-3)
    app = a.image.copy()
    _blend_heatmap(app, a.faces[0])
    small = (a.image.shape[1], a.image.shape[0])  # the client's drawing brought to the analysed copy's size

    def off(square) -> float:
        client = cv2.resize(lay_on(picture, face["heatmap"], square), small, interpolation=cv2.INTER_AREA)
        cx0, cy0, cx1, cy1 = a.faces[0].crop_box
        return float(np.abs(client.astype(int) - app.astype(int))[max(0, cy0):cy1, max(0, cx0):cx1].mean())

    assert off(face["heatmap_box"]) < 0.5  # grey levels: the same drawing, up to resampling (2 px off: 0.8)
    assert off(face["box"]) > 5  # the detector's box is not what the heatmap covers (13)


VIDEO_NAMES = ["video", "frames_per_second", "method", "layer", "check_every"]


def test_predict_video_through_the_client(server, tmp_path):
    c = Client(server, verbose=False)
    params = c.view_api(return_format="dict", print_info=False)["named_endpoints"]["/predict_video"]["parameters"]
    assert [p["parameter_name"] for p in params] == VIDEO_NAMES
    assert [p["label"] for p in params] == VIDEO_NAMES
    clip = clips.one_person(tmp_path / "one.mp4", seconds=2, fps=4)
    r = c.predict(video=handle_file(str(clip)), frames_per_second=1, api_name="/predict_video")
    assert r["file"] == "one.mp4" and r["frames_analysed"] == 2 and r["frames_per_second"] == 1
    assert [row["time"] for row in r["rows"]] == [0.0, 1.0]
    assert [p["person"] for p in r["people"]] == [1]  # one person, though the face moved a box width between frames
    assert {row["label"] for row in r["rows"]} == {"happy"}  # the astronaut smiles
    row = r["rows"][0]
    assert sorted(row["probabilities"]) == sorted(CLASSES) and len(row["box"]) == 4
    assert row["level"] in ("good", "weak", "chance", "untestable", "empty") and row["verdict"]
    assert r["method"] == "Occlusion" and r["layer"] == "layer2" and r["grid"] == [8, 8]
    # a file that is not a video: a plain message, and the server goes on answering
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 40)
    with pytest.raises(Exception, match="not a video we can read"):
        c.predict(video=handle_file(str(notes)), api_name="/predict_video")
    r = c.predict(video=handle_file(str(clip)), frames_per_second=0.5, api_name="/predict_video")
    assert r["frames_analysed"] == 1 and r["rows"][0]["label"] == "happy"
    # each person's heatmap checked once a second unless told: every frame with check_every 0, and a bad
    # value is refused in words
    assert r["check_every"] == 1 and r["frames_checked"] == 1
    r = c.predict(video=handle_file(str(clip)), frames_per_second=4, check_every=0, api_name="/predict_video")
    assert r["check_every"] == 0 and r["frames_analysed"] == 8 and r["frames_checked"] == 8
    assert all(row["checked"] and row["level"] for row in r["rows"])
    with pytest.raises(Exception, match="check_every must be 0"):
        c.predict(video=handle_file(str(clip)), check_every=-1, api_name="/predict_video")


def test_readme_names_every_video_argument():
    for where, section in api_texts().items():
        assert 'api_name="/predict_video"' in section, where
        for name in VIDEO_NAMES:
            assert f"{name}=" in section and f"`{name}`" in section, (where, name)
