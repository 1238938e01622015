"""Occlusion maps: how far a class's logit falls when each cell of the face is blurred away (captum's Occlusion).

Grad-CAM and its relatives read a layer's activations and estimate, from a gradient, what each cell adds to
the class score. An occlusion map (Zeiler & Fergus 2014) measures it instead: each cell of a grid over the
face is replaced in turn by the same cell of a heavily blurred copy of the face (`blurred`: brightness and
outline stay, the detail an expression is read from goes),
and the cell's value is z_c(face) - z_c(face with that cell blurred). The grid is a layer's (`explain.grid_side`):
at layer2 of a 64 px model, 8 x 8 cells of 8 x 8 px, so the map's resolution is its own, not an upsampling
of a coarse layer. The price is one forward pass per cell (64 at layer2, batched: about 0.2 s a face on two
CPU cores with ONNX Runtime), against about one for Grad-CAM, so the webcam keeps Grad-CAM.

The faithfulness check (emotion/faithfulness.py) deletes pixels another way (inpainting them from the rest of
the face), so it does not favour this map by construction; the audit (train/audit.py) also scores every map
with ROAD, a third way of removing pixels (noisy linear imputation), and reports how often the two agree.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch
from captum.attr import Occlusion
from pytorch_grad_cam.utils.image import scale_cam_image

BLUR_SIGMA = 1 / 8  # of the input side
PER_EVAL = 64  # perturbed faces per forward pass


def blurred(x: torch.Tensor, sigma_fraction: float = BLUR_SIGMA) -> torch.Tensor:
    """A Gaussian blur (sigma = `sigma_fraction` of the side, edges reflected) of each face of a batch
    (N x C x H x W, or one face C x H x W), in the space it is given in (the model's normalised input)."""
    one = x.ndim == 3
    batch = (x[None] if one else x).detach().cpu().float().numpy()
    out = np.empty_like(batch)
    for i, img in enumerate(batch):
        arr = np.ascontiguousarray(img.transpose(1, 2, 0))  # H, W, C
        b = cv2.GaussianBlur(arr, (0, 0), sigma_fraction * arr.shape[0], borderType=cv2.BORDER_REFLECT)
        out[i] = b.reshape(arr.shape).transpose(2, 0, 1)  # OpenCV drops a single channel's axis
    y = torch.from_numpy(out).to(x.dtype)
    return y[0] if one else y


def windows(side: int, grid: int) -> tuple[int, int]:
    """(window, stride) in pixels of `grid` windows across `side` px, the first at 0 and the last ending at
    the edge: a stride of side // grid, and windows that long plus what is left over (they overlap by that
    much where the side is not a multiple of the grid)."""
    step = side // grid
    return side - (grid - 1) * step, step


def occlusion_maps(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, classes: list[int],
                   grid: int) -> np.ndarray:
    """Occlusion maps (N x H x W, each scaled to 0..1 as pytorch-grad-cam scales its maps; zero where no cell
    raises the class) of faces `x` (N x C x H x W) for `classes[i]` of face i, over a `grid` x `grid` grid of
    cells. `forward` gives a batch's logits (N x classes), without autograd."""
    every = every_class_maps(forward, x, grid)
    return every[np.arange(len(x)), np.asarray(classes, int)]


def every_class_maps(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grid: int) -> np.ndarray:
    """Occlusion maps of faces `x` for every class at once (N x classes x H x W, each scaled as
    `occlusion_maps`'s): each occluded face's forward pass gives every class's logit, so the map of every
    class costs the passes of one (captum attributes each output of the forward function when no target is
    named). The faithfulness check's other-class control and "why not X?" read theirs from here."""
    n, c, h, w = x.shape
    (wy, sy), (wx, sx) = windows(h, grid), windows(w, grid)
    occlusion = Occlusion(forward)
    base = blurred(x)
    maps = []
    with torch.no_grad():
        for i in range(n):
            a = occlusion.attribute(x[i:i + 1], sliding_window_shapes=(c, wy, wx), strides=(c, sy, sx),
                                    baselines=base[i:i + 1], target=None, perturbations_per_eval=PER_EVAL)
            drops = a.float().mean(1).numpy()  # classes x H x W (a window spans the channels)
            maps.append(scale_cam_image(np.maximum(drops, 0), (w, h)))  # each class's map scaled on its own
    return np.stack(maps).astype(np.float32)
