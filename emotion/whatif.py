"""What the model answers with each facial region hidden: the intervention beside the heatmap.

A heatmap says where the evidence lies and needs reading; hiding a region and asking again does not:
"hide the mouth: happy 99% becomes neutral 61%". For one face, each region the app draws
(emotion/regions.py: eyes and brows, nose, mouth, the rest of the face) is hidden in turn on the model's own
pixels and the batch of hidden faces goes through the network once (with the mirror, where the model's
config asks for it, as the face's own answer did).

How a region is hidden: it is filled in from the skin around it (OpenCV's Telea inpainting over the region,
grown by 0.15 of the eye distance, which takes in the folds and edges an expression leaves just outside
the region's outline), so its expression is gone rather than softened, and no colour or edge is added that
the model could read as a feature (a grey patch reads as something; a blur keeps the shape of an open mouth).
On a smiling face, hiding the mouth so lowers "happy" about as far as covering the smile with the skin above
it does (tests/test_whatif.py).
The same function hides regions on every path (photos, the API, the command line, videos, the audit).
"""
from __future__ import annotations

import cv2
import numpy as np

from emotion.model import EmotionModel
from emotion.regions import REGION_LABELS, face_box, region_masks

HIDDEN = ("eyes_brows", "nose", "mouth", "rest_of_face")  # the face's regions (not what lies outside it)
GROW = 0.15  # of the eye distance: how far the region is grown before it is filled in
RADIUS = 3  # px: the neighbourhood inpainting draws each pixel from


def hide(pixels: np.ndarray, mask: np.ndarray, grow: int = 0) -> np.ndarray:
    """The model's pixels (grey or RGB uint8) with the masked region, grown by `grow` px, filled in from its
    surroundings."""
    m = mask.astype(np.uint8) * 255
    if grow:
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    if not m.any():
        return pixels.copy()
    return cv2.inpaint(np.ascontiguousarray(pixels), m, RADIUS, cv2.INPAINT_TELEA)


def face_masks(face, scale: float, side: int) -> dict[str, np.ndarray]:
    """The masks of `HIDDEN` at the model's side over a `emotion.pipeline.FaceResult`'s crop (`scale`: its
    Analysis.scale, since face.box is in the original picture's pixels)."""
    masks = region_masks((side, side), face.crop_box, face.landmarks, face_box(face, scale))
    return {k: masks[k] for k in HIDDEN}


def what_if(model: EmotionModel, face, scale: float = 1.0, flip: bool | None = None) -> dict:
    """Each region of the face hidden in turn, and what the model answers then.

    Returns {"explained": the class followed, "before": its probability as shown, "label": the face's label,
    "regions": {region: {"label", "probability" (of the explained class), "drop" (before - probability),
    "changes_label", "probabilities"}}, "most": the region whose hiding lowers the explained class most,
    "sentence": that, in plain words}. `flip`: mirror averaging as for the face (None: the model's config).
    """
    pixels = model.prep.pixels(face.crop)
    masks = face_masks(face, scale, model.prep.size)
    eyes = model.prep.eye_distance or 0.36  # share of the side between the eyes in the app's framing
    grow = max(1, round(GROW * eyes * model.prep.size))
    hidden = [hide(pixels, masks[k], grow) for k in HIDDEN]
    probs = model.probabilities(model.prep.pixels_input(hidden), flip)
    k = model.labels.index(face.explained)
    before = float(face.probabilities[face.explained])
    regions = {}
    for name, p in zip(HIDDEN, probs):
        label = model.labels[int(p.argmax())]
        regions[name] = {"label": label, "probability": round(float(p[k]), 5),
                         "drop": round(before - float(p[k]), 5), "changes_label": label != face.label,
                         "probabilities": {c: round(float(v), 5) for c, v in zip(model.labels, p)}}
    most = max(HIDDEN, key=lambda r: regions[r]["drop"])
    any_change = any(r["changes_label"] for r in regions.values())
    return {"explained": face.explained, "before": round(before, 5), "label": face.label, "regions": regions,
            "most": most, "sentence": sentence(face.explained, before, face.label, most, regions[most], any_change)}


def sentence(explained: str, before: float, label: str, region: str, r: dict, any_change: bool) -> str:
    """The what-if in plain words, for the region hiding which lowers the explained class most: "Hide the
    mouth: happy 99% becomes neutral 61%."."""
    where = REGION_LABELS.get(region, region)
    now = r["probabilities"][r["label"]]
    if r["changes_label"] and explained == label:
        return f"Hide the {where}: {explained} {before:.0%} becomes {r['label']} {now:.0%}."
    if r["changes_label"]:
        return (f"Hide the {where}: {explained} {before:.0%} becomes {r['probability']:.0%}, and the answer "
                f"becomes {r['label']} {now:.0%}.")
    rest = "" if any_change else " No single region hidden changes the answer."
    return f"Hide the {where}: {explained} {before:.0%} becomes {r['probability']:.0%}; the answer stays {label}.{rest}"


def compact(w: dict) -> dict:
    """A what-if without the full probabilities (a video row's, a results.jsonl row's): per region the label
    and the explained class's probability, with the sentence."""
    return {"explained": w["explained"], "before": w["before"], "most": w["most"], "sentence": w["sentence"],
            "regions": {k: {f: r[f] for f in ("label", "probability", "changes_label")}
                        for k, r in w["regions"].items()}}
