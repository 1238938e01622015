"""The webcam path's bfloat16 network answers as the float32 one does, and is used only where the CPU has bf16.

Agreement is measured on real faces: the four in the example photos, each cut 25 ways (the detector's square,
then shifted, resized, mirrored, brighter or darker, tilted), as a webcam sees one face from frame to frame.
"""
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from emotion import precision as P
from emotion import service
from emotion.explain import BF16_LAYERS, LAYERS, LIVE_LAYER, LIVE_METHOD, effective_precision, explain
from emotion.faces import cut, detect_faces
from emotion.pipeline import analyse
from tests import fixtures as fx

PHOTOS = (fx.PORTRAIT, fx.SECOND_PORTRAIT, fx.ROOT / "examples" / "two_faces.jpg")
VARIANTS = 25
NO_BF16 = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": False}
NATIVE = pytest.mark.skipif(not P.native_bf16(), reason="this CPU has no native bf16 instructions (avx512_bf16 "
                            "or amx_bf16), so the webcam path runs in float32 here")


def variants(rgb: np.ndarray, square, rng) -> list[np.ndarray]:
    x0, y0, x1, y1 = square
    out = []
    for k in range(VARIANTS):
        s = x1 - x0
        dx, dy = rng.integers(-s // 10, s // 10 + 1, 2) if k else (0, 0)
        side = int(s * rng.uniform(0.9, 1.15)) if k else s
        left, top = (x0 + x1 - side) // 2 + dx, (y0 + y1 - side) // 2 + dy
        c = cut(rgb, (left, top, left + side, top + side)).astype(np.float32)
        if k:
            if rng.random() < 0.5:
                c = c[:, ::-1]
            c = c * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)
            turn = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-12, 12), 1.0)
            c = cv2.warpAffine(np.ascontiguousarray(c), turn, (side, side), borderMode=cv2.BORDER_REFLECT)
        out.append(np.clip(c, 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def faces(model):
    rng = np.random.default_rng(0)
    crops = []
    for path in PHOTOS:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for det in detect_faces(rgb):
            crops += variants(rgb, model.prep.square(det, rgb.shape), rng)
    assert len(crops) == 4 * VARIANTS  # the astronaut, Grace Hopper and the two faces of two_faces.jpg
    return model.prep.to_input(crops)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@NATIVE
@pytest.mark.parametrize("layer", sorted(BF16_LAYERS))
def test_bf16_agrees_with_float32_on_real_faces(model, faces, layer, record_property):
    logits32, maps32 = explain(model, faces, [None] * len(faces), "Grad-CAM", layer)
    predicted = logits32.argmax(1)
    # the same class explained on both networks, so that the maps can be compared
    logits16, maps16 = explain(model, faces, predicted.tolist(), "Grad-CAM", layer, precision="bf16")
    assert logits16.dtype == torch.float32 and maps16.dtype == maps32.dtype == np.float32
    assert not torch.equal(logits16, logits32)  # the bf16 network did answer
    same = (logits16.argmax(1) == predicted).float().mean().item()
    corr = np.array([correlation(a, b) for a, b in zip(maps32, maps16)])
    gap = (logits16.softmax(1) - logits32.softmax(1)).abs().max().item()
    record_property("agreement", {"same_label": same, "corr_min": corr.min(), "corr_mean": corr.mean(),
                                  "prob_gap_max": gap})
    print(f"\n{layer}: same label on {same:.1%} of {len(faces)} faces; heatmap correlation min {corr.min():.4f}, "
          f"mean {corr.mean():.4f}; probabilities differ by at most {gap:.4f}")
    assert same >= 0.99
    assert corr.min() >= 0.98
    assert gap <= 0.02


@NATIVE
def test_the_live_path_runs_in_bf16_when_asked_and_photos_stay_float32(model, monkeypatch):
    monkeypatch.setenv(P.ENV_VAR, "bf16")  # "auto" takes it only with AMX: asked for outright here
    frame = np.asarray(fx.portrait())
    _, live, state = service.live_frame(model, frame, None)
    assert state.precision == "bf16"
    photo = analyse(frame, model, detect_side=service.LIVE_DETECT_SIDE, flip=False)  # as live, but a photo
    assert photo.precision == "fp32"
    # photo mode, with its honesty checks, is float32 whatever is asked
    checked, _, _ = service.checked(model, frame, LIVE_METHOD, LIVE_LAYER, None, False, with_heatmap=False)
    assert checked.precision == "fp32"
    gaps = [abs(live[c] - photo.faces[0].probabilities[c]) for c in model.labels]
    assert 0 < max(gaps) <= 0.02
    assert max(live, key=live.get) == photo.faces[0].label


def test_auto_takes_bf16_only_where_the_cpu_has_it(monkeypatch):
    monkeypatch.delenv(P.ENV_VAR, raising=False)
    for caps, want in ((NO_BF16, "fp32"), ({**NO_BF16, "avx512_bf16": True}, "fp32"),  # slower there: measured
                       ({**NO_BF16, "amx_bf16": True}, "bf16"), ({"architecture": "x86_64", "avx2": True}, "fp32")):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda caps=caps: caps)
        assert P.resolve_precision("auto") == P.resolve_precision() == want
        assert P.resolve_precision("auto", engine="torch") == want
        # ONNX Runtime's float32 path beat PyTorch's bf16 one on every CPU measured, AMX included
        assert P.resolve_precision("auto", engine="onnx") == P.resolve_precision(engine="onnx") == "fp32"
        assert P.resolve_precision("bf16", engine="onnx") == "bf16"  # asked for outright
    assert P.resolve_precision("FP32") == "fp32" and P.resolve_precision("bf16") == "bf16"  # asked for, not probed
    with pytest.raises(ValueError, match="fp16"):
        P.resolve_precision("fp16")


def test_emotion_precision_forces_float32(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {**NO_BF16, "amx_bf16": True})
    monkeypatch.setenv(P.ENV_VAR, "fp32")
    assert P.resolve_precision() == "fp32"
    assert P.resolve_precision("auto") == "bf16"  # a setting given outright is not the environment's
    monkeypatch.setenv(P.ENV_VAR, "half")
    with pytest.raises(ValueError, match=P.ENV_VAR):
        P.resolve_precision()


def test_without_bf16_the_live_path_is_the_float32_path(model, monkeypatch):
    """A CPU without bf16 instructions (the probe made to say so): the webcam path gives exactly the photo
    path's float32 answer and heatmap, with no bf16 network made for it."""
    monkeypatch.delenv(P.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: NO_BF16)
    monkeypatch.setattr(model, "_bf16", None)
    frame = np.asarray(fx.portrait())
    a = analyse(frame, model, detect_side=service.LIVE_DETECT_SIDE, flip=False)
    _, live, state = service.live_frame(model, frame, None)
    assert state.precision == "fp32" and model._bf16 is None
    assert live == a.faces[0].probabilities  # the first frame: nothing to smooth with


def test_bf16_serves_only_the_methods_and_layers_shown_to_agree():
    # Grad-CAM at layer3 (the webcam's default) and layer4; layer2, whose sparse maps once fell to 0.958, is float32
    assert [effective_precision("bf16", "Grad-CAM", layer.split()[0]) for layer in LAYERS] == ["bf16", "bf16", "fp32"]
    assert effective_precision("bf16", LIVE_METHOD, LIVE_LAYER) == "bf16" and LIVE_LAYER in BF16_LAYERS
    for layer in LAYERS:
        assert effective_precision("bf16", "grad-cam++", layer) == "fp32"  # through pytorch-grad-cam: float32
        assert effective_precision("fp32", "Grad-CAM", layer) == "fp32"
