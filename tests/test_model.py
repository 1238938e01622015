"""Saving and loading the model: timm Hub format, safetensors only, clear messages when a folder is broken."""
import json
import re
import subprocess
import sys
import threading
import time
from copy import deepcopy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from emotion import model as M
from emotion.model import CLASSES, ModelLoadError, Preprocess, create_net, load_model
from train.export import save_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    net = create_net().eval()
    with torch.no_grad():  # BatchNorm as a trained net has it (fresh: statistics 0 and 1, last scale of a block 0)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.2, 0.5)
    folder = save_model(net, tmp_path_factory.mktemp("m") / "model", Preprocess(size=48), training={})
    return net, folder


def test_folder_is_timm_hub_format(saved):
    _, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                        "results.json"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "resnet50" and cfg["num_classes"] == 7
    assert cfg["label_names"] == list(CLASSES)
    assert cfg["pretrained_cfg"]["input_size"] == [3, 48, 48]
    assert "a1_in1k" not in json.dumps(cfg)  # no ImageNet provenance on our weights


def fp16_rounded(net: torch.nn.Module) -> torch.nn.Module:
    """The same network with every floating tensor rounded to fp16 and back: what a round trip may change."""
    copy = deepcopy(net)
    with torch.no_grad():
        for t in copy.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    return copy


def test_loads_back_through_timm_local_dir(saved):
    net, folder = saved
    x = torch.randn(2, 3, 48, 48)
    again = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert again.pretrained_cfg["label_names"] == list(CLASSES)
    with torch.no_grad():
        ref, out = fp16_rounded(net)(x), again(x)
    assert (ref - out).abs().max() < 1e-4  # every weight and BatchNorm statistic came back as saved
    m = load_model(f"local-dir:{folder}", fallback=False)
    assert m.labels == CLASSES and m.prep.size == 48 and m.prep.grayscale
    probs = m.predict([np.zeros((60, 50, 3), np.uint8)])
    assert probs.shape == (1, 7) and probs.sum() == pytest.approx(1, abs=1e-5)


def test_a_dilated_network_comes_back_dilated(saved, tmp_path):
    """A network built at output stride 8 (layer3 and layer4 dilated, not strided: what train's
    --output-stride 8 makes) is written with that in config.json's model_args and comes back with the same
    layout: the same answers as the saved network, and layer3's and layer4's grids of input / 8 cells."""
    from emotion.explain import grid_side

    net, _ = saved
    dense = create_net(output_stride=8).eval()
    dense.load_state_dict(net.state_dict())
    folder = save_model(dense, tmp_path / "dense", Preprocess(size=48))
    assert json.loads((folder / "config.json").read_text())["model_args"]["output_stride"] == 8
    m = load_model(str(folder), fallback=False, engine="torch")
    assert [grid_side(m.net, k, 64) for k in ("layer2", "layer3", "layer4")] == [8, 8, 8]
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert (m.net(x) - fp16_rounded(dense)(x)).abs().max() < 1e-4
        assert m.net.forward_features(x).shape[-2:] == (6, 6) and net.forward_features(x).shape[-2:] == (2, 2)


def test_broken_folders_give_clear_messages(saved, tmp_path):
    _, folder = saved
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "missing", fallback=False)
    broken = tmp_path / "no_weights"
    broken.mkdir()
    (broken / "config.json").write_text((folder / "config.json").read_text())
    (broken / "pytorch_model.bin").write_bytes(b"pickle would go here")
    with pytest.raises(ModelLoadError, match="missing model.safetensors"):
        load_model(broken, fallback=False)  # a pickle beside it is never used instead
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((folder / "config.json").read_text())
    (corrupt / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="Could not load"):
        load_model(corrupt, fallback=False)
    bad_cfg = tmp_path / "bad_cfg"
    bad_cfg.mkdir()
    (bad_cfg / "config.json").write_text("{not json")
    (bad_cfg / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="not a valid timm model config"):
        load_model(bad_cfg, fallback=False)


def test_hub_offline_fails_fast_then_falls_back(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(ModelLoadError, match="hf-hub:nobody/no-such-model"):
        load_model("hf-hub:nobody/no-such-model", fallback=False)
    assert time.time() - t < 30
    m = load_model("hf-hub:nobody/no-such-model", fallback=True)  # the shipped weights/
    assert m.source == str(M.DEFAULT_WEIGHTS)


def test_env_var_picks_the_model(saved, monkeypatch):
    _, folder = saved
    monkeypatch.setenv(M.ENV_VAR, str(folder))
    assert load_model().source == str(folder)


def test_weights_split_into_small_pieces_and_join_back(saved, tmp_path):
    from safetensors.torch import load_file

    from train import shards

    _, folder = saved
    (folder / "face_prior.npz").write_bytes(b"this model's face prior")
    (folder / "audit.json").write_text('{"of": "this model"}')
    pieces = shards.split(folder, tmp_path / "pieces", max_mb=15)
    assert len(pieces) >= 3 and all(p.stat().st_size < 16 * 2**20 for p in pieces)
    joined = shards.join(tmp_path / "pieces", tmp_path / "joined")
    a, b = load_file(folder / "model.safetensors"), load_file(joined)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_model(tmp_path / "joined", fallback=False).labels == CLASSES
    # the face prior and the audit travel with the weights they belong to
    assert (tmp_path / "joined" / "face_prior.npz").read_bytes() == b"this model's face prior"
    assert (tmp_path / "joined" / "audit.json").read_text() == '{"of": "this model"}'
    # joined over a folder that holds another model's prior and audit, pieces without them leave neither
    (tmp_path / "pieces" / "face_prior.npz").unlink()
    (tmp_path / "pieces" / "audit.json").unlink()
    shards.join(tmp_path / "pieces", tmp_path / "joined")
    assert not (tmp_path / "joined" / "face_prior.npz").exists() and not (tmp_path / "joined" / "audit.json").exists()
    (folder / "face_prior.npz").unlink()
    (folder / "audit.json").unlink()
    pieces[1].unlink()
    with pytest.raises(Exception):
        shards.join(tmp_path / "pieces", tmp_path / "again")


def test_a_model_made_elsewhere_gets_colour_input(saved, tmp_path, caplog):
    """Without our `preprocess` block, the input is what timm's pretrained_cfg describes (colour), and the
    log says which preprocessing is used."""
    _, folder = saved
    plain = tmp_path / "plain"
    plain.mkdir()
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["preprocess"]
    (plain / "config.json").write_text(json.dumps(cfg))
    (plain / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with caplog.at_level("INFO", logger="emotion.model"):
        m = load_model(plain, fallback=False)
    assert not m.prep.grayscale
    assert "colour 48x48" in caplog.text and "no preprocess block" in caplog.text
    red = np.zeros((48, 48, 3), np.uint8)
    red[..., 0] = 200
    x = m.prep.to_input([red])[0]
    assert not torch.allclose(x[0], x[1])  # the colour channels reach the net as they are
    assert load_model(folder, fallback=False).prep.grayscale  # ours says grey


def test_a_non_resnet_is_refused_when_loading(tmp_path):
    net = timm.create_model("mobilenetv3_small_050", num_classes=len(CLASSES)).eval()
    folder = save_model(net, tmp_path / "mobilenet", Preprocess(size=48))
    with pytest.raises(ModelLoadError, match="'mobilenetv3_small_050' is not a ResNet"):
        load_model(folder, fallback=False)


def test_a_picture_that_is_not_square_is_cropped_not_squashed():
    tall = np.zeros((80, 48, 3), np.uint8)
    tall[16:64] = 120  # the centred 48 x 48 square is flat grey; the strips above and below are black
    assert np.array_equal(M.face_pixels(tall, 32), np.full((32, 32), 120, np.uint8))
    assert M.centre_square(0, 0, 48, 80) == (0, 16, 48, 64) and M.centre_square(0, 0, 90, 40) == (25, 0, 65, 40)


# ---------------------------------------------------------------- the Hub: answers from a loopback server
class FakeHub(BaseHTTPRequestHandler):
    """Answers the Hub's model API as the Hub does for a missing repo (404 RepoNotFound), a refused token
    (401) and a forbidden repo (403)."""

    def do_GET(self):
        if "/nobody/no-such-model" in self.path:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("X-Error-Message", "Repository not found")
        elif "/someone/private-model" in self.path:
            self.send_response(401)
            self.send_header("X-Error-Message", "Invalid username or password.")
        else:
            self.send_response(403)
            self.send_header("X-Error-Message", "Access to this model is restricted")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


LOAD = """
import json, sys
import numpy as np
from emotion.model import ModelLoadError, load_model
for source in sys.argv[1:]:
    try:
        m = load_model(source, fallback=True)
        from emotion.pipeline import analyse
        from emotion.service import status
        a = analyse(np.full((48, 48, 3), 128, np.uint8), m, whole_image=True, with_heatmaps=False)
        print(json.dumps({"source": source, "loaded": m.describe(), "name": m.name(), "api": a.to_json()["model"],
                          "status": status(a)}))
    except ModelLoadError as e:
        print(json.dumps({"source": source, "error": str(e)}))
"""


def load_with_endpoint(endpoint: str, sources: list[str], home) -> list[dict]:
    """load_model(source, fallback=True) in a fresh Python whose huggingface_hub talks to `endpoint`."""
    env = {**__import__("os").environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(home),
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)
    out = subprocess.run([sys.executable, "-c", LOAD, *sources], env=env, capture_output=True, text=True,
                         timeout=300, cwd=M.DEFAULT_WEIGHTS.parent)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_hub_refusals_fail_with_the_hubs_reason(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        got = load_with_endpoint(f"http://127.0.0.1:{server.server_address[1]}",
                                 ["hf-hub:nobody/no-such-model", "hf-hub:someone/private-model",
                                  "hf-hub:someone/restricted-model"], tmp_path)
    finally:
        server.shutdown()
    assert [g.get("error") is not None for g in got] == [True, True, True], got  # never the shipped model instead
    assert "hf-hub:nobody/no-such-model: the Hub answered 404: Repository not found" in got[0]["error"]
    assert "the Hub answered 401: Invalid username or password" in got[1]["error"]
    assert "the Hub answered 403: Access to this model is restricted" in got[2]["error"]


def test_an_unreachable_hub_falls_back_and_says_so(tmp_path):
    with __import__("socket").socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (got,) = load_with_endpoint(f"http://127.0.0.1:{port}", ["hf-hub:nobody/no-such-model"], tmp_path)
    assert got["loaded"]["source"] == str(M.DEFAULT_WEIGHTS) and got["loaded"]["revision"] is None
    assert "could not be reached" in got["loaded"]["fallback_reason"]
    assert got["loaded"]["standing_in_for"] == "hf-hub:nobody/no-such-model"
    assert "standing in for hf-hub:nobody/no-such-model" in got["name"]
    assert got["api"] == got["loaded"] and f"Model: {got['name']}" in got["status"]  # the API and the app say so


def test_a_hub_model_is_named_with_its_revision(saved, tmp_path):
    """A Hub model already in the cache (offline): its source and commit name it."""
    _, folder = saved
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--emotion"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snap / name).write_bytes((folder / name).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = LOAD.replace("fallback=True", "fallback=False")
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = subprocess.run([sys.executable, "-c", code, "hf-hub:someone/emotion"], env=env, capture_output=True,
                         text=True, timeout=300, cwd=M.DEFAULT_WEIGHTS.parent)
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["loaded"] == {"source": "hf-hub:someone/emotion", "revision": commit, "decision_rule": "prior"}, \
        out.stderr
    name = "hf-hub:someone/emotion (revision 0123456789ab); probabilities read with the training class balance"
    assert got["name"] == name  # which model, and which decision rule gave its probabilities
    assert got["api"] == got["loaded"] and got["status"].endswith("Model: " + name)


def _card_code(results: dict, config: dict) -> str:
    """The code the model card rendered from `results` and `config` gives timm users ("Use with timm alone")."""
    from train.export import render_card

    return re.search(r"## Use with timm alone.*?```python\n(.*?)```", render_card(results, config), re.S).group(1)


def test_the_model_cards_timm_snippet_reads_faces_as_the_app_does(model):
    """The card's code for plain timm users (grey conversion, framing, resizing spelled out) gives the app's
    probabilities on the astronaut, who reads happy."""

    from emotion.faces import detect_faces
    from emotion.pipeline import analyse
    from tests import fixtures as fx
    from train.export import load_results

    code = _card_code(load_results(model.source), json.loads((M.DEFAULT_WEIGHTS / "config.json").read_text()))
    code = code.replace("hf-hub:OWNER/NAME", f"local-dir:{model.source}").replace("photo.jpg", str(fx.PORTRAIT))
    det = detect_faces(np.asarray(fx.portrait()))[0]
    scope = {"box": det.box, "right_eye": det.landmarks[0], "left_eye": det.landmarks[1]}
    exec(code, scope)  # what a timm user would run
    got = dict(zip(CLASSES, scope["probabilities"].tolist()))
    want = analyse(fx.PORTRAIT, model).faces[0].probabilities
    assert max(got, key=got.get) == "happy"
    assert got == pytest.approx(want, abs=1e-4)
    # Grace Hopper, whom the model reads less surely (so that mirror averaging, if the config has it, shows)
    det = detect_faces(np.asarray(Image.open(fx.SECOND_PORTRAIT).convert("RGB")))[0]
    scope = {"box": det.box, "right_eye": det.landmarks[0], "left_eye": det.landmarks[1]}
    exec(code.replace(str(fx.PORTRAIT), str(fx.SECOND_PORTRAIT)), scope)
    got = dict(zip(CLASSES, scope["probabilities"].tolist()))
    assert got == pytest.approx(analyse(fx.SECOND_PORTRAIT, model).faces[0].probabilities, abs=1e-4)
    # a colour model framed on the eyes gets its own steps, and they run too
    cfg = json.loads((M.DEFAULT_WEIGHTS / "config.json").read_text())
    cfg["preprocess"].update(grayscale=False, eye_distance=0.36, eye_line=0.37)
    code = _card_code({}, cfg)
    assert "face_square(box, right_eye, left_eye)" in code and "COLOR_RGB2GRAY" not in code
    scope = {"box": det.box, "right_eye": det.landmarks[0], "left_eye": det.landmarks[1]}
    exec(code.replace("hf-hub:OWNER/NAME", f"local-dir:{model.source}").replace("photo.jpg", str(fx.PORTRAIT)), scope)
    assert scope["x"].shape == (1, 3, model.prep.size, model.prep.size)


@pytest.mark.parametrize("preprocess, args, want", [
    # framed on the eyes (0.36 apart, 0.383 from the top): side 100.4 -> 100 first, then the corners; rounding
    # the far corner on its own would give 189 - 88 = 101 px across
    ({"eye_distance": 0.36, "eye_line": 0.383}, ((100, 100, 140, 150), (120.528, 150.0), (156.672, 150.0)),
     (88, 112, 188, 212)),
    # a turned head (eyes 36 px apart in a 100 px wide box): the square is 1.2 box widths, 120 px
    ({"eye_distance": 0.36, "eye_line": 0.383}, ((100, 100, 200, 220), (130.3, 150.2), (166.3, 150.2)),
     (88, 104, 208, 224)),
    # framed by the box grown by 25% a side: 41 x 1.5 = 61.5 -> 62 across, from (-0.25, 9.25) -> (0, 9)
    ({"eye_distance": None, "face_margin": 0.25}, ((10, 20, 51, 60),), (0, 9, 62, 71)),
])
def test_the_cards_face_square_is_the_apps_crop(preprocess, args, want):
    """The card's face_square, run as a timm user runs it, gives the app's square (emotion.framing.crop_box)."""
    from emotion.faces import Detection
    from emotion.framing import crop_box

    cfg = json.loads((M.DEFAULT_WEIGHTS / "config.json").read_text())
    cfg["preprocess"].update(preprocess)
    code = _card_code({}, cfg)
    scope = {}
    exec(re.search(r"^def face_square.*?\n\n", code, re.S | re.M).group(0), scope)
    box, *eyes = args
    assert (scope["face_square"](box, *eyes) if eyes else scope["face_square"](*box)) == want
    det = Detection(box=box, score=1.0, landmarks=tuple(eyes))
    assert crop_box(det, preprocess.get("face_margin", 0.25), (400, 400), preprocess["eye_distance"],
                    preprocess.get("eye_line", 0.385)) == want
