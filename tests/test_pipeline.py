"""The pipeline on real photos with the shipped model: faces, labels, probabilities, heatmaps, drawings."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from emotion.draw import annotate, face_panel
from emotion.explain import CLASS_AGNOSTIC, DEFAULT_LAYER, DEFAULT_METHOD, LAYERS, METHODS, explain
from emotion.model import CLASSES, EmotionModel, Preprocess, create_net
from emotion.pipeline import NO_FACE, analyse
from tests import fixtures as fx


def test_the_smiling_astronaut_reads_happy(model):
    """examples/astronaut.jpg is a clearly smiling face: the shipped model must say so."""
    f = analyse(fx.PORTRAIT, model).faces[0]
    assert f.label == "happy"


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
    rule = json.loads((Path(model.source) / "config.json").read_text())["decision"]  # the shipped folder's rule
    assert j["model"] == {"source": str(model.source), "revision": None,  # the shipped folder answered
                          "decision_rule": rule["rule"], "decision_tau": rule["tau"]}


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
    with pytest.raises(ValueError, match="Unknown class 'contempt'; choose from predicted class, angry, disgust"):
        analyse(fx.PORTRAIT, model, explain_class="contempt")
    # any case; "predicted class" is the face's own prediction
    shouted = analyse(fx.PORTRAIT, model, explain_class=other.upper(), method=DEFAULT_METHOD.lower()).faces[0]
    assert shouted.explained == other and np.array_equal(shouted.heatmap, f.heatmap)
    assert analyse(fx.PORTRAIT, model, explain_class="Predicted Class").faces[0].explained == own.label


@pytest.mark.parametrize("method", [m for m in METHODS if m != "Occlusion"])  # captum's: tests/test_occlusion.py
def test_every_method_is_pytorch_grad_cams_and_follows_the_class(model, method):
    """Each method's map is pytorch-grad-cam's for the class asked about; asking about another class changes
    it, except for Eigen-CAM, whose map does not depend on the class."""
    own = analyse(fx.PORTRAIT, model, method=method).faces[0]
    probs = sorted(own.probabilities, key=own.probabilities.get)
    other = probs[-2]  # the runner-up: the likeliest to have evidence of its own
    f = analyse(fx.PORTRAIT, model, method=method, explain_class=other).faces[0]
    x = model.prep.to_input([own.crop])
    net = model.net
    with torch.enable_grad(), METHODS[method](model=net, target_layers=[LAYERS[DEFAULT_LAYER](net)]) as cam:
        ref = cam(input_tensor=x.repeat(2, 1, 1, 1), targets=[ClassifierOutputTarget(model.labels.index(c))
                                                             for c in (own.label, other)])
    net.zero_grad(set_to_none=True)
    assert np.abs(own.heatmap - ref[0]).max() < 1e-4 and np.abs(f.heatmap - ref[1]).max() < 1e-4
    if method in CLASS_AGNOSTIC:
        assert np.abs(f.heatmap - own.heatmap).max() < 1e-5
    else:
        assert np.abs(f.heatmap - own.heatmap).max() > 0.05


def test_methods_in_any_case_and_the_random_control_refused(model):
    assert analyse(fx.PORTRAIT, model, method="hirescam").method == "HiResCAM"
    with pytest.raises(ValueError, match="Unknown explanation method 'Random'; choose from Occlusion, Grad-CAM, Grad-CAM"):
        analyse(fx.PORTRAIT, model, method="Random")  # a control map that explains nothing: not an answer
    x = model.prep.to_input([np.full((64, 64, 3), 128, np.uint8)])
    assert explain(model, x, [None], "Random")[1].shape == (1, model.prep.size, model.prep.size)


@pytest.mark.parametrize("method", ["Grad-CAM", "HiResCAM"])
def test_a_class_index_out_of_range_is_named(model, method):
    x = model.prep.to_input([np.full((64, 64, 3), 128, np.uint8)])
    with pytest.raises(ValueError, match="Class index 7 out of range: the model has 7 classes"):
        explain(model, x, [7], method)


def upsampled_from(grid: int, size: int) -> np.ndarray:
    """The matrix (size*size x grid*grid) of cv2's bilinear resize from grid x grid to size x size."""
    cols = []
    for k in range(grid * grid):
        basis = np.zeros((grid, grid), np.float32)
        basis.flat[k] = 1
        cols.append(cv2.resize(basis, (size, size)).ravel())
    return np.stack(cols, 1)


def test_every_layer_and_finer_grids_earlier(model):
    """Each layer's map is an upsampled grid of that layer's resolution (1/32, 1/16, 1/8 of the input, or no
    coarser than the output stride config.json builds the network at), and no coarser grid can make it."""
    size = model.prep.size
    output_stride = model.config["model_args"].get("output_stride", 32)
    for layer, stride in zip(LAYERS, (min(32, output_stride), min(16, output_stride), 8)):
        hm = analyse(fx.PORTRAIT, model, method="Grad-CAM", layer=layer).faces[0].heatmap.astype(np.float64).ravel()
        assert hm.max() > 0
        residual = {}
        for grid in (size // stride, size // stride // 2):
            u = upsampled_from(grid, size).astype(np.float64)
            coef = np.linalg.lstsq(u, hm, rcond=None)[0]
            residual[grid] = np.abs(u @ coef - hm).max()
        assert residual[size // stride] < 1e-3, (layer, residual)
        assert residual[size // stride // 2] > 0.05, (layer, residual)
    with pytest.raises(ValueError, match="Unknown layer"):
        analyse(fx.PORTRAIT, model, layer="layer9")


def test_whole_picture_not_square_is_centre_cropped(model):
    tall = np.full((96, 64, 3), 255, np.uint8)
    tall[16:80] = np.asarray(fx.portrait().crop((160, 50, 290, 180)).resize((64, 64)))
    f = analyse(tall, model, whole_image=True).faces[0]
    assert f.crop_box == (0, 16, 64, 80) and np.array_equal(f.crop, tall[16:80])
    assert f.probabilities == pytest.approx(analyse(tall[16:80], model, whole_image=True).faces[0].probabilities,
                                            abs=1e-6)


@pytest.mark.parametrize("method", ["Grad-CAM", "Grad-CAM++"])  # the app's own Grad-CAM, and the library's path
def test_mirror_averaging_explains_the_label_shown(method):
    """With tta_flip, a face whose plain and mirrored predictions disagree: the heatmap is for the label
    shown (from the averaged prediction), not for the plain argmax."""
    torch.manual_seed(0)
    net = create_net().eval()
    prep = Preprocess(size=32, tta_flip=True)
    face = np.asarray(fx.portrait().crop((160, 50, 290, 180)).resize((32, 32)))
    x = prep.to_input([face])
    with torch.no_grad():  # solve fc so that plain says angry (3 vs 2) and mirrored says disgust (2.5 vs -3)
        f = net.forward_head(net.forward_features(torch.cat([x, torch.flip(x, dims=[3])])), pre_logits=True)
        a = torch.cat([f, torch.ones(2, 1)], 1).double()
        t = torch.full((2, len(CLASSES)), -5.0, dtype=torch.float64)
        t[0, :2] = torch.tensor([3.0, 2.0])
        t[1, :2] = torch.tensor([-3.0, 2.5])
        w = torch.linalg.lstsq(a, t).solution.float()
        net.fc.weight.copy_(w[:-1].T)
        net.fc.bias.copy_(w[-1])
    m = EmotionModel(net=net, labels=CLASSES, prep=prep, source="synthetic")
    plain = net(x).argmax(1).item()
    assert CLASSES[plain] == "angry"
    got = analyse(face, m, whole_image=True, method=method).faces[0]
    assert got.label == got.explained == "disgust"
    assert got.probabilities == pytest.approx(dict(zip(CLASSES, m.predict([face], flip=True)[0].tolist())), abs=1e-6)
    want = analyse(face, m, whole_image=True, method=method, explain_class="disgust").faces[0].heatmap
    assert np.array_equal(got.heatmap, want)
    other = analyse(face, m, whole_image=True, method=method, explain_class="angry").faces[0].heatmap
    assert not np.allclose(got.heatmap, other)
    assert analyse(face, m, whole_image=True, method=method, flip=False).faces[0].label == "angry"  # plain


def test_the_webcam_path_skips_the_mirrored_pass():
    """A model whose config asks for mirror averaging: photos get it, webcam frames (real time) do not."""
    from emotion.explain import LIVE_LAYER, LIVE_METHOD
    from emotion.precision import resolve_precision
    from emotion.service import LIVE_DETECT_SIDE, live_frame

    torch.manual_seed(0)
    m = EmotionModel(net=create_net().eval(), labels=CLASSES, prep=Preprocess(size=32, tta_flip=True),
                     source="synthetic")
    frame = np.asarray(fx.portrait().resize((480, 480)))
    # the webcam's map and number format (bf16 where PyTorch runs this model on AMX), so only the mirror differs
    live = dict(method=LIVE_METHOD, layer=LIVE_LAYER, detect_side=LIVE_DETECT_SIDE,
                precision=resolve_precision(engine=m.engine))
    plain = analyse(frame, m, flip=False, **live).faces[0].probabilities
    mirrored = analyse(frame, m, **live).faces[0].probabilities
    assert not np.allclose(list(plain.values()), list(mirrored.values()), atol=1e-3)
    _, live, _ = live_frame(m, frame, None)
    assert np.allclose(list(live.values()), list(plain.values()), atol=1e-6)


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
    held = []  # for every forward pass (each starts at conv1, the direct Grad-CAM path too): was the lock held?
    hook = model.net.conv1.register_forward_pre_hook(lambda *_: held.append(model.lock._is_owned()))
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda job: service.predict(model, *job), jobs))
    finally:
        hook.remove()
    # (ONNX Runtime's passes never reach the network: those seen are PyTorch's, the hooked method's at least)
    assert len(held) >= sum(m == "Grad-CAM++" for _, m in jobs) and all(held), \
        f"{held.count(False)} of {len(held)} passes without the lock"
    for k, got in enumerate(answers):
        want = reference[k % 4]
        assert len(got["faces"]) == len(want["faces"])
        for g, w in zip(got["faces"], want["faces"]):
            assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-4)
            assert np.abs(np.array(g["heatmap"]) - np.array(w["heatmap"])).max() < 1e-3
            assert g["faithfulness"]["score"] == pytest.approx(w["faithfulness"]["score"], abs=1e-4)
