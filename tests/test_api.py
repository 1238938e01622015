"""/predict called by its documented argument names, through gradio_client against the real server."""
import pytest
from gradio_client import Client, handle_file

from emotion.model import CLASSES
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
    assert r["method"] == "HiResCAM" and r["layer"] == "layer4"
    # the defaults are the documented ones: only the image is needed
    r = c.predict(image=handle_file(str(fx.PORTRAIT)), api_name="/predict")
    assert r["method"] == "Grad-CAM" and r["layer"] == "layer3"
    assert r["faces"][0]["explained_class"] == r["faces"][0]["label"]
    with pytest.raises(TypeError):
        c.predict(image=handle_file(str(fx.PORTRAIT)), explain_for="sad", api_name="/predict")


def test_readme_names_every_argument():
    text = (fx.ROOT / "README.md").read_text()
    section = text[text.index("## Call the API"):text.index("\n## ", text.index("## Call the API") + 1)]
    for name in NAMES:
        assert f"{name}=" in section and f"`{name}`" in section


VIDEO_NAMES = ["video", "frames_per_second", "method", "layer"]


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
    assert r["method"] == "Grad-CAM" and r["layer"] == "layer3"
    # a file that is not a video: a plain message, and the server goes on answering
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 40)
    with pytest.raises(Exception, match="not a video we can read"):
        c.predict(video=handle_file(str(notes)), api_name="/predict_video")
    r = c.predict(video=handle_file(str(clip)), frames_per_second=0.5, api_name="/predict_video")
    assert r["frames_analysed"] == 1 and r["rows"][0]["label"] == "happy"


def test_readme_names_every_video_argument():
    text = (fx.ROOT / "README.md").read_text()
    section = text[text.index("## Call the API"):text.index("\n## ", text.index("## Call the API") + 1)]
    assert 'api_name="/predict_video"' in section
    for name in VIDEO_NAMES:
        assert f"{name}=" in section and f"`{name}`" in section
