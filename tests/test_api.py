"""/predict called by its documented argument names, through gradio_client against the real server."""
import pytest
from gradio_client import Client, handle_file

from emotion.model import CLASSES
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
