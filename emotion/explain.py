"""Heatmaps of which part of the face drove a class score: pytorch-grad-cam's CAM methods and captum's Occlusion.

`explain()` runs one method on a batch of faces and returns, in the same forward pass, the model's
logits and one heatmap (0..1, at the model's input size) per face for the class asked about.

Occlusion, the default for photos and videos (emotion/occlusion.py), blurs each cell of the layer's grid in
turn and needs forward passes only (in ONNX Runtime where it runs). Grad-CAM, the webcam's, takes a direct
path: the model gives its ingredients, the logits, the layer's activations and their gradient
(`EmotionModel.gradcam_parts`, the one place that decides where they are computed: one ONNX Runtime call
where it runs, else PyTorch without autograd up to the layer read and with it only above, with respect to
that layer's activations alone; emotion/engine.py), and `cam_maps` weighs them. Both give pytorch-grad-cam's
GradCAM map to float precision (tests/test_explain.py and tests/test_engine.py check it) at the cost of little
more than the forward pass. The webcam path may run it on a bfloat16 copy of the network
(emotion/precision.py; tests/test_precision.py holds its labels, probabilities and maps to the float32 ones).
The other methods go through pytorch-grad-cam, whose hooks live on the shared network: every PyTorch pass
therefore runs under the model's lock, or another request's hooks would record its activations (the load
test caught exactly that). ONNX Runtime's passes (Grad-CAM's one call, Occlusion's forward passes) never
touch that network and hold no lock (`EmotionModel.guard`).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from captum.attr import Occlusion
from pytorch_grad_cam import (EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, RandomCAM,
                              XGradCAM)
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from emotion.engine import torch_gradcam
from emotion.model import EmotionModel, mirror_average
from emotion.occlusion import every_class_maps

# Offered in the app: pytorch-grad-cam's CAM methods and captum's Occlusion (emotion/occlusion.py: each cell
# of the layer's grid blurred in turn, one forward pass a cell). ScoreCAM and AblationCAM are left out: one
# forward pass per channel of the layer (hundreds a face) on a CPU.
METHODS = {
    "Occlusion": Occlusion,
    "Grad-CAM": GradCAM,
    "Grad-CAM++": GradCAMPlusPlus,
    "HiResCAM": HiResCAM,
    "XGrad-CAM": XGradCAM,
    "LayerCAM": LayerCAM,
    "Eigen-CAM": EigenCAM,
}
# Methods whose map does not depend on the class asked about (Eigen-CAM: the first principal component of
# the layer's activations): they cannot answer "why not X?".
CLASS_AGNOSTIC = frozenset({"Eigen-CAM"})
# A map with no information, for judging other maps against: explain() takes it, the app and the API do not
# (analyse() refuses it), since it explains nothing.
CONTROL_METHODS = {"Random": RandomCAM}

# Where the heatmap is read: the output of a ResNet stage (its last block). The last stage sees the most
# abstract features; earlier stages give less class-specific maps. Each map is a grid of its stage's cells
# (`grid_side`): input / 32, / 16, / 8 for layer4, layer3, layer2 of a plain ResNet; a dilated one (timm's
# `output_stride=8`, set in config.json's model_args) keeps layer3 and layer4 at input / 8 with the same weights.
LAYERS = {
    "layer4 (last block)": lambda net: net.layer4[-1],
    "layer3": lambda net: net.layer3[-1],
    "layer2": lambda net: net.layer2[-1],
}
# The default method and layer are the ones the shipped model's audit (`python -m train.audit`, kept as
# weights/audit.json) was run for; its figures for them and for the other layers are in docs/trust.md's verdict
# section, generated from that file (tests/test_verdict_figures.py holds both to it).
DEFAULT_METHOD = "Occlusion"
DEFAULT_LAYER = "layer2"
# The webcam's: one forward and one partial backward pass a face fit its frame budget; Occlusion's 64 do not.
LIVE_METHOD = "Grad-CAM"
LIVE_LAYER = "layer3"
# Where `explain` may run on the bfloat16 network (the webcam path, emotion/precision.py): the direct Grad-CAM
# path (pytorch-grad-cam reads activations as float32 numpy arrays), at the layers whose maps agree with
# float32's on every face of tests/test_precision.py (correlation at least 0.998 at layer3, 1.000 at layer4).
# layer2 passed that set too (0.990), but on another draw of 100 such faces one map, 89% zero, fell to 0.958:
# layer2 stays float32.
BF16_METHODS = frozenset({"Grad-CAM"})
BF16_LAYERS = frozenset({"layer3", "layer4 (last block)"})


def resolve_layer(name: str) -> str:
    """Accept the full label or its first word ("layer3")."""
    if name in LAYERS:
        return name
    for key in LAYERS:
        if key.split()[0] == name:
            return key
    raise ValueError(f"Unknown layer {name!r}; choose from {', '.join(k.split()[0] for k in LAYERS)}.")


def resolve_method(name: str, controls: bool = True) -> str:
    """A method's name as given in any case ("grad-cam++"), spelled as in METHODS; the controls only if asked."""
    known = {**METHODS, **CONTROL_METHODS} if controls else METHODS
    for key in known:
        if key.lower() == str(name).strip().lower():
            return key
    raise ValueError(f"Unknown explanation method {name!r}; choose from {', '.join(known)}.")


def stride(net: torch.nn.Module, layer: str) -> int:
    """Input pixels per cell of `layer`'s activations in this network, as it is built (timm's `feature_info`:
    a stage's stride, or the stride it keeps when dilated)."""
    name = resolve_layer(layer).split()[0]
    for info in getattr(net, "feature_info", None) or []:
        if info.get("module") == name:
            return int(info["reduction"])
    raise ValueError(f"The network does not say the stride of {name} (no timm feature_info for it).")


def grid_side(net: torch.nn.Module, layer: str, side: int) -> int:
    """Cells across `layer`'s activations for a `side` px input: the map's own resolution, before it is
    resized to the face (each stride-2 step halves the side, rounding up)."""
    return -(-side // stride(net, layer))


def heatmap_name(method: str, layer: str, grid: int) -> str:
    """What a heatmap is, for the user: its method, the layer it reads and that layer's grid over the face
    (`grid_side`), e.g. "Grad-CAM at layer3, 4 x 4 cells"."""
    return f"{method} at {resolve_layer(layer).split()[0]}, {grid} x {grid} cells"


def effective_precision(precision: str, method: str = DEFAULT_METHOD, layer: str = DEFAULT_LAYER) -> str:
    """What `explain` computes in when asked for `precision`: "bf16" only for BF16_METHODS at BF16_LAYERS."""
    if precision == "bf16" and (resolve_method(method) not in BF16_METHODS or resolve_layer(layer) not in BF16_LAYERS):
        return "fp32"
    return precision


def explain(model: EmotionModel, x: torch.Tensor, classes: list[int | None], method: str = DEFAULT_METHOD,
            layer: str = DEFAULT_LAYER, mirror_logits: torch.Tensor | None = None,
            precision: str = "fp32") -> tuple[torch.Tensor, np.ndarray]:
    """Logits (N x C, float32) and heatmaps (N x H x W, each scaled to 0..1) for `classes[i]` of face i.

    A class of None means "the predicted class": the argmax of the logits, or, given the mirrored faces'
    `mirror_logits`, of their sum with them (mirror averaging). Maps that are zero everywhere mean the method
    found no positive evidence for that class (common when asking about an unlikely class).
    `precision` "bf16" runs on the model's bfloat16 copy (`EmotionModel.network`; the webcam path,
    emotion/precision.py) where `effective_precision` allows it, else on the float32 network.
    """
    cam_cls = {**METHODS, **CONTROL_METHODS}[resolve_method(method)]
    n = len(model.labels)
    bad = [c for c in classes if c is not None and not 0 <= int(c) < n]
    if bad:  # checked here: pytorch-grad-cam's context manager would swallow the IndexError
        raise ValueError(f"Class index {bad[0]} out of range: the model has {n} classes (0 to {n - 1}).")
    if cam_cls is GradCAM:  # the model decides where its ingredients are computed (EmotionModel.gradcam_parts)
        logits, a, grads = model.gradcam_parts(x, resolve_layer(layer).split()[0], classes, mirror_logits,
                                               effective_precision(precision, method, layer))
        return logits, cam_maps(a, grads, x)
    if cam_cls is Occlusion:  # forward passes only: ONNX Runtime where it runs (model.logits), with no lock
        logits, every = every_class(model, x, layer)
        return logits, pick(every, logits, classes, mirror_logits)
    net = model.net
    target_layer = LAYERS[resolve_layer(layer)](net)
    model.turns.wait_turn()
    with model.lock, torch.enable_grad(), cam_cls(model=net, target_layers=[target_layer]) as cam:
        if all(c is None for c in classes) and mirror_logits is None:
            targets = None  # pytorch-grad-cam explains each face's top class from the same forward pass
        else:
            if any(c is None for c in classes):  # the predicted classes need a pass of their own
                with torch.no_grad():
                    predicted = mirror_average(net(x), mirror_logits).argmax(1).tolist()
                classes = [p if c is None else c for c, p in zip(classes, predicted)]
            targets = [ClassifierOutputTarget(int(c)) for c in classes]
        maps = cam(input_tensor=x, targets=targets)
        logits = cam.outputs.detach()
        net.zero_grad(set_to_none=True)  # drop the weight gradients the backward pass left behind
    return logits, maps.astype(np.float32)


EVERY_CLASS = frozenset({"Occlusion"})  # methods whose passes give every class's map at once (`every_class`)


def every_class(model: EmotionModel, x: torch.Tensor, layer: str = DEFAULT_LAYER) -> tuple[torch.Tensor, np.ndarray]:
    """Logits (N x C) and Occlusion maps for every class (N x C x H x W) from one set of occluded passes
    (emotion/occlusion.py): what the face's map, its faithfulness check's other-class control and "why not
    X?" all read, so none of them pays for the passes again."""
    with model.guard(), torch.no_grad():
        logits = model.logits(x)
        return logits, every_class_maps(model.logits, x, grid_side(model.net, layer, x.shape[-1]))


def pick(every: np.ndarray, logits: torch.Tensor, classes: list[int | None],
         mirror_logits: torch.Tensor | None = None) -> np.ndarray:
    """Each face's map for `classes[i]` out of its every-class maps (`every_class`); a class of None is the
    predicted one (with `mirror_logits`, of the mirror average), as `explain` reads classes."""
    predicted = mirror_average(logits, mirror_logits).argmax(1).tolist()
    return every[np.arange(len(every)), [p if c is None else int(c) for c, p in zip(classes, predicted)]]


def gradcam(net: torch.nn.Module, x: torch.Tensor, classes: list[int | None], layer: str = DEFAULT_LAYER,
            mirror_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Grad-CAM of a timm ResNet in PyTorch, in one forward pass: logits and maps, as `explain` returns them.

    Grad-CAM weighs each channel k of the layer's activations A by the mean over positions of
    d(score of class c) / dA_k, sums, keeps the positive part, and pytorch-grad-cam then scales each map to
    0..1 and resizes it to the input: the same steps here, on the same activations (`engine.torch_gradcam`).
    """
    logits, a, grads = torch_gradcam(net, x, resolve_layer(layer).split()[0], classes, mirror_logits)
    return logits, cam_maps(a, grads, x)


def cam_maps(a: torch.Tensor, grads: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """Grad-CAM maps (N x H x W, 0..1, at the input's size) from a layer's activations and the gradients of
    each face's class logit with respect to them."""
    # a bf16 network's activations and gradients are weighed and summed in float32 (a no-op for float32 ones)
    weights = grads.float().mean(dim=(2, 3), keepdim=True)
    cam = (weights * a.float()).sum(1).clamp_(min=0).numpy()
    # pytorch-grad-cam scales per layer (0..1, resized), then again after averaging its layers: so do we
    return scale_cam_image(scale_cam_image(cam, (x.shape[-1], x.shape[-2])))


def overlay(rgb: np.ndarray, heatmap: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """The heatmap (0..1, any size) blended over an RGB uint8 image of any size, as RGB uint8."""
    h, w = rgb.shape[:2]
    mask = cv2.resize(heatmap, (w, h), interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(rgb.astype(np.float32) / 255, np.clip(mask, 0, 1), use_rgb=True, image_weight=weight)
