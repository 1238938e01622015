"""Class-activation heatmaps through pytorch-grad-cam: which part of the face drove a class score.

`explain()` runs one CAM method on a batch of faces and returns, in the same forward pass, the model's
logits and one heatmap (0..1, at the model's input size) per face for the class asked about. The CAM
objects register hooks on the shared network, so it runs under the model's lock.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from pytorch_grad_cam import (EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, RandomCAM,
                              XGradCAM)
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from emotion.model import EmotionModel

# Offered in the app; ScoreCAM and AblationCAM are left out: hundreds of forward passes a face on a CPU.
METHODS = {
    "Grad-CAM": GradCAM,
    "Grad-CAM++": GradCAMPlusPlus,
    "HiResCAM": HiResCAM,
    "XGrad-CAM": XGradCAM,
    "LayerCAM": LayerCAM,
    "Eigen-CAM": EigenCAM,
}
CONTROL_METHODS = {"Random": RandomCAM}  # a map with no information, the baseline faithfulness is judged against
DEFAULT_METHOD = "Grad-CAM"

# Where the heatmap is read. The last block sees the most abstract features at the coarsest grid
# (input / 32); earlier stages give finer but less class-specific maps.
LAYERS = {
    "layer4 (last block, 1/32)": lambda net: net.layer4[-1],
    "layer3 (1/16)": lambda net: net.layer3[-1],
    "layer2 (1/8)": lambda net: net.layer2[-1],
}
DEFAULT_LAYER = "layer4 (last block, 1/32)"


def resolve_layer(name: str) -> str:
    """Accept the full label or its first word ("layer3")."""
    if name in LAYERS:
        return name
    for key in LAYERS:
        if key.split()[0] == name:
            return key
    raise ValueError(f"Unknown layer {name!r}; choose from {', '.join(k.split()[0] for k in LAYERS)}.")


def explain(model: EmotionModel, x: torch.Tensor, classes: list[int | None], method: str = DEFAULT_METHOD,
            layer: str = DEFAULT_LAYER) -> tuple[torch.Tensor, np.ndarray]:
    """Logits (N x C) and heatmaps (N x H x W, each scaled to 0..1) for `classes[i]` of face i.

    A class of None means "the predicted class". Maps that are zero everywhere mean the method found no
    positive evidence for that class (common when asking about an unlikely class).
    """
    cam_cls = {**METHODS, **CONTROL_METHODS}.get(method)
    if cam_cls is None:
        raise ValueError(f"Unknown explanation method {method!r}; choose from {', '.join(METHODS)}.")
    net = model.net
    target_layer = LAYERS[resolve_layer(layer)](net)
    with model.lock, torch.enable_grad(), cam_cls(model=net, target_layers=[target_layer]) as cam:
        if all(c is None for c in classes):
            targets = None  # pytorch-grad-cam explains each face's top class from the same forward pass
        else:
            if any(c is None for c in classes):  # mixed: the predicted classes need a pass of their own
                with torch.no_grad():
                    predicted = net(x).argmax(1).tolist()
                classes = [p if c is None else c for c, p in zip(classes, predicted)]
            targets = [ClassifierOutputTarget(int(c)) for c in classes]
        maps = cam(input_tensor=x, targets=targets)
        logits = cam.outputs.detach()
        net.zero_grad(set_to_none=True)  # drop the weight gradients the backward pass left behind
    return logits, maps.astype(np.float32)


def overlay(rgb: np.ndarray, heatmap: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """The heatmap (0..1, any size) blended over an RGB uint8 image of any size, as RGB uint8."""
    h, w = rgb.shape[:2]
    mask = cv2.resize(heatmap, (w, h), interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(rgb.astype(np.float32) / 255, np.clip(mask, 0, 1), use_rgb=True, image_weight=weight)
