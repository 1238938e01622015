"""Grad-CAM beside the default map: a second heatmap of the same face, and how far the two agree.

Photos and videos are explained by Occlusion by default (emotion/occlusion.py), the webcam by Grad-CAM. A map
read alone hides how much it depends on its method, so each photo face also gets Grad-CAM's map (the webcam's
method and layer), and the two are compared where both have cells: each map is averaged into the coarser
grid's cells and the cells are ranked (Spearman's rank correlation, scipy). Two maps that rank the cells the
same way agree at 1; a map and its inverse at -1; maps that point at different parts of the face near 0.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.stats import spearmanr

from emotion.explain import LIVE_LAYER, LIVE_METHOD, explain, grid_side, resolve_layer
from emotion.model import EmotionModel

SECOND_METHOD, SECOND_LAYER = LIVE_METHOD, LIVE_LAYER  # Grad-CAM, at the layer the webcam reads
DISAGREE = 0.3  # rank correlation under which the maps are said to disagree
AGREE = 0.6  # ... and at or over which they are said to agree


def cells(heatmap: np.ndarray, grid: int) -> np.ndarray:
    """A map (H x W) averaged into `grid` x `grid` cells."""
    m = np.nan_to_num(np.asarray(heatmap, np.float32))
    return cv2.resize(m, (grid, grid), interpolation=cv2.INTER_AREA)


def agreement(a: np.ndarray, grid_a: int, b: np.ndarray, grid_b: int) -> float | None:
    """Spearman's rank correlation of two maps of one face over the coarser of their grids' cells; None when
    either map is flat there (nothing to rank)."""
    g = max(1, min(grid_a, grid_b))
    ca, cb = cells(a, g).ravel(), cells(b, g).ravel()
    if np.ptp(ca) <= 1e-6 or np.ptp(cb) <= 1e-6:
        return None
    return float(spearmanr(ca, cb).statistic)


def sentence(first: str, second: str, rho: float | None, grid: int) -> str:
    """How far the two maps agree, in plain words."""
    if rho is None:
        return f"One of the two maps is flat, so {first} and {second} cannot be compared on this face."
    over = f"rank correlation {rho:.2f} over {grid} x {grid} cells"
    if rho < DISAGREE:
        return (f"{first} and {second} disagree on this face ({over}): they point at different parts of it, so "
                "read neither map alone.")
    if rho < AGREE:
        return f"{first} and {second} partly agree on this face ({over})."
    return f"{first} and {second} agree on this face ({over})."


def second_map(model: EmotionModel, face, method: str, layer: str) -> dict | None:
    """Grad-CAM's map of `face` (an emotion.pipeline.FaceResult) for the class its own map explains, and its
    agreement with that map (made by `method` at `layer`); None when the face's map is Grad-CAM's already.

    Returns {"method", "layer", "grid", "heatmap" (model input size, 0..1), "agreement", "cells" (the grid
    compared over), "sentence"}."""
    layer = resolve_layer(layer)
    if method == SECOND_METHOD and layer.split()[0] == SECOND_LAYER:
        return None
    x = model.prep.to_input([face.crop])
    _, maps = explain(model, x, [model.labels.index(face.explained)], SECOND_METHOD, SECOND_LAYER)
    side = model.prep.size
    own, other = grid_side(model.net, layer, side), grid_side(model.net, SECOND_LAYER, side)
    rho = agreement(face.heatmap, own, maps[0], other)
    g = min(own, other)
    return {"method": SECOND_METHOD, "layer": SECOND_LAYER, "grid": [other, other], "heatmap": maps[0],
            "agreement": None if rho is None else round(rho, 4), "cells": [g, g],
            "sentence": sentence(method, SECOND_METHOD, rho, g)}
