"""ONNX Runtime runs the shipped model's float32 passes without gradient (emotion/engine.py): its answers,
activations, heatmaps and faithfulness scores are PyTorch's to float tolerance; a network changed after the
export is run by PyTorch again; and without onnxruntime the app falls back to PyTorch (or refuses, if asked
for ONNX Runtime)."""
import copy
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from emotion.engine import EngineError, OnnxNet, cache_dir, split_forward
from emotion.explain import LAYERS, explain
from emotion.faces import cut, detect_faces
from emotion.faithfulness import face_faithfulness
from emotion.model import DEFAULT_WEIGHTS, EmotionModel, load_model
from emotion.pipeline import analyse
from tests import fixtures as fx


@pytest.fixture(scope="module")
def torch_model():
    return load_model(DEFAULT_WEIGHTS, fallback=False, engine="torch")


@pytest.fixture(scope="module")
def crops(model):
    out = []
    for path in (fx.PORTRAIT, fx.SECOND_PORTRAIT, fx.ROOT / "examples" / "two_faces.jpg"):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        out += [cut(rgb, model.prep.square(d, rgb.shape)) for d in detect_faces(rgb)]
    return out


def test_onnx_runtime_answers_as_pytorch_does(model, torch_model, crops):
    assert model.engine == "onnx" and torch_model.engine == "torch"
    assert len(crops) == 4
    for flip in (False, True):
        assert np.abs(model.predict(crops, flip=flip) - torch_model.predict(crops, flip=flip)).max() < 1e-5
    x = model.prep.to_input(crops)
    for layer in ("layer2", "layer3", "layer4"):  # Grad-CAM's ingredients, against PyTorch's autograd
        logits, acts, grads = model.gradcam_parts(x, layer, [None, 0, 6, None])
        a, ref_logits = split_forward(torch_model.net, x, layer)
        target = [int(ref_logits[0].argmax()), 0, 6, int(ref_logits[3].argmax())]
        (ref,) = torch.autograd.grad(ref_logits.gather(1, torch.tensor(target).view(-1, 1)).sum(), a)
        assert torch.allclose(acts, a.detach(), atol=1e-4) and torch.allclose(logits, ref_logits.detach(), atol=1e-4)
        assert torch.allclose(grads, ref, atol=1e-6, rtol=1e-4), layer
        assert grads.abs().max() > 1e-3  # (not trivially zero)
    assert torch.allclose(model.logits(x), torch_model.logits(x), atol=1e-4)


@pytest.mark.parametrize("layer", list(LAYERS))
def test_heatmaps_and_their_check_are_pytorchs(model, torch_model, crops, layer):
    x = model.prep.to_input(crops)
    logits, maps = explain(model, x, [None, 3, 5, None], "Grad-CAM", layer)
    ref_logits, ref_maps = explain(torch_model, x, [None, 3, 5, None], "Grad-CAM", layer)
    assert torch.allclose(logits, ref_logits, atol=1e-4) and np.abs(maps - ref_maps).max() < 1e-4
    face = analyse(fx.PORTRAIT, model, layer=layer).faces[0]
    ref = analyse(fx.PORTRAIT, torch_model, layer=layer).faces[0]
    assert face.label == ref.label and np.abs(face.heatmap - ref.heatmap).max() < 1e-4
    got = face_faithfulness(model, face, layer=layer)
    want = face_faithfulness(torch_model, ref, layer=layer)
    assert got["level"] == want["level"] and got["score"] == pytest.approx(want["score"], abs=1e-3)
    assert got["controls"] == pytest.approx(want["controls"], abs=1e-3)


def test_the_export_is_cached_and_a_changed_network_runs_in_pytorch(model, crops):
    mine = cache_dir() / f"logits-{model.onnx._hash}.onnx"
    assert mine.is_file(), "the shipped model's export is cached"
    cached = sorted(cache_dir().glob("*.onnx"))
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    net = copy.deepcopy(model.net)
    other = EmotionModel(net=net, labels=model.labels, prep=model.prep, source="copy", onnx=OnnxNet(net, 64))
    assert other.engine == "onnx"  # the same weights: the cached export, not a new one
    assert {p: p.stat().st_mtime_ns for p in sorted(cache_dir().glob("*.onnx"))} == stamps  # nothing written
    before = other.predict(crops, flip=False)
    with torch.no_grad():
        net.get_classifier().bias[2] += 5.0  # changed in place after the export: fear gains 5 logits
    assert other.engine == "torch"
    after = other.predict(crops, flip=False)
    assert (after[:, 2] > before[:, 2]).all()  # PyTorch answers with the changed network


def test_the_same_weights_at_another_output_stride_are_another_export(model):
    """A dilated copy of the network (timm's output_stride=8: no stride in layer3 and layer4, their
    convolutions dilated instead) has the very same weights but another graph: its cache key must differ,
    or it would be answered by the other network's export."""
    import timm

    from emotion.engine import _weights_hash

    dense = timm.create_model("resnet50", num_classes=len(model.labels), output_stride=8).eval()
    dense.load_state_dict(model.net.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(dense.state_dict().values(), model.net.state_dict().values()))
    assert _weights_hash(dense, 64) != _weights_hash(model.net, 64)
    assert _weights_hash(copy.deepcopy(model.net), 64) == _weights_hash(model.net, 64)


BLOCKED = """
import json, sys
sys.modules["onnxruntime"] = None  # as if onnxruntime were not installed
from emotion.engine import EngineError
from emotion.model import load_model
m = load_model("weights", fallback=False, engine="auto")
p = m.predict([__import__("numpy").full((64, 64, 3), 128, "uint8")])
try:
    load_model("weights", fallback=False, engine="onnx")
    refused = None
except EngineError as e:
    refused = str(e)
print(json.dumps({"engine": m.engine, "sum": float(p.sum()), "refused": refused}))
"""


def test_without_onnxruntime_the_app_runs_pytorch(tmp_path):
    env = {**os.environ, "EMOTION_ONNX_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", BLOCKED], cwd=fx.ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["engine"] == "torch" and got["sum"] == pytest.approx(1.0, abs=1e-5)
    assert got["refused"] and "ONNX Runtime cannot run this model" in got["refused"]
    assert "ONNX Runtime unavailable" in out.stderr  # the fallback is said, not silent


def test_the_app_runs_onnx_runtime_and_answers_as_pytorch(served, torch_model):
    """The app as users start it takes ONNX Runtime (its log says so) and its /predict answers, heatmap
    included, are PyTorch's."""
    from gradio_client import Client, handle_file

    url, cache = served
    assert "passes without gradient in onnx" in (cache.parent / "app.log").read_text()
    r = Client(url, verbose=False).predict(image=handle_file(str(fx.PORTRAIT)), api_name="/predict")
    ref = analyse(fx.PORTRAIT, torch_model)
    assert len(r["faces"]) == len(ref.faces) == 1
    got, want = r["faces"][0], ref.faces[0]
    assert got["label"] == want.label
    assert got["probabilities"] == pytest.approx(want.probabilities, abs=1e-4)
    heat = np.asarray(got["heatmap"], np.float32)
    assert heat.shape == want.heatmap.shape and np.abs(heat - want.heatmap).max() < 2e-3


def test_onnx_runtime_passes_do_not_wait_for_pytorchs_lock(model, crops):
    """While another request's PyTorch pass holds the model's lock, ONNX Runtime's passes (a prediction,
    Grad-CAM's one call, an occlusion map) go on: they never touch the shared network."""
    x = model.prep.to_input(crops[:1])
    done = {}

    def work():
        done["predict"] = model.predict(crops[:1])
        done["grad-cam"] = explain(model, x, [None], "Grad-CAM", "layer3")
        done["occlusion"] = explain(model, x, [None], "Occlusion", "layer2")

    with model.lock:  # held, as a PyTorch pass elsewhere holds it
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        worker.join(120)
        assert not worker.is_alive() and set(done) == {"predict", "grad-cam", "occlusion"}


def test_a_graph_that_cannot_be_had_leaves_only_its_own_passes_to_pytorch(model, torch_model, crops, tmp_path,
                                                                            monkeypatch):
    """layer4's Grad-CAM graph is a damaged file: that pass runs in PyTorch (and gives PyTorch's map) while the
    forward pass stays on ONNX Runtime; with ONNX Runtime required, every call that needs it says so."""
    real = cache_dir()
    monkeypatch.setenv("EMOTION_ONNX_CACHE", str(tmp_path))
    key = model.onnx._hash
    shutil.copy(real / f"logits-{key}.onnx", tmp_path / f"logits-{key}.onnx")
    (tmp_path / f"gradcam-layer4-{key}.onnx").write_bytes(b"not an ONNX graph")
    x = model.prep.to_input(crops)
    other = EmotionModel(net=model.net, labels=model.labels, prep=model.prep, source="copy",
                         onnx=OnnxNet(model.net, model.prep.size))
    assert other.engine == "onnx"
    assert other.onnx.gradcam(x, "layer4", [None] * len(x)) is None
    assert list(other.onnx.failures()) == ["gradcam-layer4"]
    assert other.engine == "onnx"  # the forward pass is still ONNX Runtime's
    logits, maps = explain(other, x, [None] * len(x), "Grad-CAM", "layer4")
    ref_logits, ref_maps = explain(torch_model, x, [None] * len(x), "Grad-CAM", "layer4")
    assert torch.allclose(logits, ref_logits, atol=1e-4) and np.abs(maps - ref_maps).max() < 1e-4
    strict = OnnxNet(model.net, model.prep.size, required=True)
    assert strict.available()
    for _ in range(2):  # not only the first time
        with pytest.raises(EngineError, match="ONNX Runtime cannot run this model"):
            strict.gradcam(x, "layer4", [None] * len(x))
    assert strict.logits(x).shape == (len(x), len(model.labels))


def test_grad_cams_graph_is_used_only_where_its_backward_pass_is_right():
    """The graph spreads the classifier's weight evenly over the layer's cells: right for global average
    pooling only. A timm ResNet pooled otherwise gets no graph (its Grad-CAM runs in PyTorch)."""
    import timm

    from emotion.engine import _GradCamGraph, supports_gradcam

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    for pool, right in (("avg", True), ("max", False), ("avgmax", False)):
        net = timm.create_model("resnet50", num_classes=7, global_pool=pool).eval()
        _, a, grads = _GradCamGraph(net, "layer3")(x, torch.tensor([1, 4]), torch.zeros(2, 7))
        ref_a, logits = split_forward(net, x, "layer3")
        (ref,) = torch.autograd.grad(logits[0, 1] + logits[1, 4], ref_a)
        assert torch.allclose(grads, ref, atol=1e-6, rtol=1e-3) == right, pool  # (why the check is needed)
        assert supports_gradcam(net) == right, pool
        if not right:
            assert OnnxNet(net, 64).gradcam(x, "layer3", [None, None]) is None  # left to PyTorch


def test_the_network_answers_while_its_graph_is_exported(model, crops, tmp_path, monkeypatch):
    """The app exports Grad-CAM's graphs in the background on a fresh machine while requests arrive. The
    exporter traces a copy (tracing the app's network failed a request with "Cannot access data pointer of
    Tensor") under the model's lock (its hooks on every module's forward failed PyTorch passes made meanwhile in
    other threads): every pass gives the network's own answer and the export is still made."""
    real = cache_dir()
    monkeypatch.setenv("EMOTION_ONNX_CACHE", str(tmp_path))  # the forward pass's graph only: Grad-CAM's is made now
    key = model.onnx._hash
    shutil.copy(real / f"logits-{key}.onnx", tmp_path / f"logits-{key}.onnx")
    x = model.prep.to_input(crops)
    with torch.no_grad():
        want = model.net(x)
    assert model.onnx._guard is model.lock  # as load_model wires it
    fresh = OnnxNet(model.net, model.prep.size, guard=model.lock)
    assert fresh.usable(model.net)
    exporting = threading.Thread(target=fresh._session, args=("gradcam-layer3",))
    exporting.start()
    passes, errors = 0, []
    while exporting.is_alive():
        try:
            # ONNX Runtime's passes take no lock: they, and the check of the live weights' fingerprint before
            # each, run all through the export
            for _ in range(20):
                assert fresh.usable(model.net)
                assert torch.allclose(fresh.logits(x), want, atol=1e-4)
            with model.lock, torch.no_grad():  # PyTorch's wait for the export
                got = model.net(x)
            assert torch.allclose(got, want, atol=1e-4)
            passes += 1
        except Exception as e:  # noqa: BLE001 - collected, asserted below
            errors.append(f"{type(e).__name__}: {e}")
    exporting.join()
    assert errors == [] and passes > 0
    assert fresh.failures() == {} and (tmp_path / f"gradcam-layer3-{key}.onnx").is_file()
    logits, _, _ = fresh.gradcam(x, "layer3", [None] * len(x))
    assert torch.allclose(logits, want, atol=1e-4)
