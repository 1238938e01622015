"""Pictures of an Analysis: the frame with labelled boxes, and one panel per face
(face crop | heatmap over it | the seven probabilities as bars). OpenCV only, fast enough per webcam frame.
"""
from __future__ import annotations

import cv2
import numpy as np

from emotion.explain import CLASS_AGNOSTIC, overlay
from emotion.pipeline import Analysis, FaceResult

# one colour per class (RGB), used for boxes and bars
COLOURS = {"angry": (220, 50, 47), "disgust": (133, 153, 0), "fear": (108, 113, 196), "happy": (255, 190, 0),
           "neutral": (147, 161, 161), "sad": (38, 139, 210), "surprise": (211, 54, 130)}
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _colour(label: str) -> tuple[int, int, int]:
    return COLOURS.get(label, (0, 200, 0))


def _text(img, text, org, scale, colour, thickness=1, bg=None):
    (w, h), base = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = org
    if bg is not None:
        cv2.rectangle(img, (x, y - h - base), (x + w + 4, y + base), bg, -1)
    cv2.putText(img, text, (x + 2, y), FONT, scale, colour, thickness, cv2.LINE_AA)


def annotate(analysis: Analysis, heatmaps: bool = False,
             probabilities: list[dict[str, float]] | None = None, ids: list[int] | None = None) -> np.ndarray:
    """The analysed picture with each face boxed, numbered and labelled (RGB uint8).

    `heatmaps` blends each face's heatmap over it, fading out at its edge, and leaves the box out so no hard
    square frames the face (the webcam view: the label sits where the box's corner would be), with a second
    line under the label naming the class the heatmap is for (`HEATMAP_CAPTION`): `probabilities` replaces
    each face's own (the webcam's smoothed ones) for the label shown, so the label may name another class
    than this frame's heatmap does; `ids` numbers
    the faces (a video's person ids) instead of 1, 2, ... (and always, even for one face).
    """
    img = analysis.image.copy()
    s = analysis.scale
    thick = max(1, round(max(img.shape[:2]) / 300))  # labels stay legible when the photo is shown small
    scale = 0.45 * thick
    for i, face in enumerate(analysis.faces):
        x0, y0, x1, y1 = (int(round(v * s)) for v in face.box)
        probs = probabilities[i] if probabilities else face.probabilities
        label = max(probs, key=probs.get)
        colour = _colour(label)
        number = ids[i] if ids else i + 1 if len(analysis.faces) > 1 else None
        text = f"{label} {probs[label]:.0%}" if number is None else f"{number}: {label} {probs[label]:.0%}"
        lines = [(text, colour)]
        if heatmaps:
            _blend_heatmap(img, face)
            agnostic = analysis.method in CLASS_AGNOSTIC
            lines.append((HEATMAP_CAPTION.format(ANY_CLASS if agnostic else face.explained),
                          (90, 90, 90) if agnostic else _colour(face.explained)))
        else:
            cv2.rectangle(img, (x0, y0), (x1, y1), colour, thick)
        _caption(img, lines, x0, y0 - 4, scale, thick)
    return img


def _caption(img, lines: list[tuple[str, tuple]], x: int, bottom: int, scale: float, thick: int) -> None:
    """Lines of white text on their colours, one under the other (their backgrounds touching), the last
    line's baseline at `bottom`, all moved down as far as needed to stay inside the picture."""
    sizes = [cv2.getTextSize(line, FONT, scale, thick) for line, _ in lines]
    baselines = [bottom]
    for k in range(len(lines) - 1, 0, -1):  # upwards: each background ends where the one below begins
        (_, h), base = sizes[k]
        baselines.insert(0, baselines[0] - h - base - sizes[k - 1][1] - 1)
    (_, h0), base0 = sizes[0]
    down = max(0, h0 + base0 - baselines[0])
    for (line, bg), y in zip(lines, baselines):
        _text(img, line, (x, y + down), scale, (255, 255, 255), thick, bg=bg)


HEATMAP_CAPTION = "heatmap: {}"  # under a live label: the class this frame's heatmap is for
ANY_CLASS = "any class"  # ... for a method whose map is the same for every class (Eigen-CAM)


FEATHER = 0.2  # share of the square's side over which the live heatmap fades out towards its edge


def feather(side_y: int, side_x: int, share: float = FEATHER) -> np.ndarray:
    """A float32 weight over a side_y x side_x square: 0 on its edge, rising smoothly to 1 at `share` of the
    side inside, so a blended square has no hard edge."""
    def ramp(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n), np.arange(n)[::-1]) / max(1.0, share * n)
        d = np.clip(d, 0, 1)
        return d * d * (3 - 2 * d)  # smoothstep
    return np.outer(ramp(side_y), ramp(side_x)).astype(np.float32)


def _blend_heatmap(img: np.ndarray, face: FaceResult) -> None:
    """Blend the face's heatmap, in place, over the square the model saw (the part inside the picture),
    fading out towards the square's edge."""
    h, w = img.shape[:2]
    cx0, cy0, cx1, cy1 = face.crop_box
    x0, y0, x1, y1 = max(0, cx0), max(0, cy0), min(w, cx1), min(h, cy1)
    if x1 <= x0 or y1 <= y0 or face.heatmap.size == 0:  # (a face with no map: nothing to blend)
        return
    hm = cv2.resize(face.heatmap, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_LINEAR)
    inside = (slice(y0 - cy0, y1 - cy0), slice(x0 - cx0, x1 - cx0))
    region = img[y0:y1, x0:x1]
    blended = overlay(region, hm[inside], 0.6).astype(np.float32)
    a = feather(cy1 - cy0, cx1 - cx0)[inside][..., None]
    img[y0:y1, x0:x1] = np.rint(blended * a + region.astype(np.float32) * (1 - a)).astype(np.uint8)


def face_panel(face: FaceResult, index: int | None = None, side: int = 224,
               extra: np.ndarray | None = None) -> np.ndarray:
    """[face crop | heatmap over the crop | probability bars | `extra`], RGB uint8, `side` pixels high.

    `extra` (any RGB picture, e.g. the region chart) is scaled to the panel's height and added on the right.
    """
    crop = cv2.resize(face.crop, (side, side), interpolation=cv2.INTER_AREA if face.crop.shape[0] > side
                      else cv2.INTER_LINEAR)
    heat = overlay(crop, face.heatmap)
    bars = np.full((side, side + 40, 3), 255, np.uint8)
    names = list(face.probabilities)
    row = (side - 30) / len(names)
    title = f"{'#%d ' % index if index else ''}{face.label}; map: {face.explained}"
    _text(bars, title, (4, 18), 0.45, (0, 0, 0))
    for k, name in enumerate(names):
        p = face.probabilities[name]
        y = int(30 + k * row)
        _text(bars, name, (2, y + int(row * 0.7)), 0.4, (0, 0, 0))
        x_start, x_max = 72, side + 40 - 52
        cv2.rectangle(bars, (x_start, y + 3), (x_start + int(p * (x_max - x_start)), y + int(row) - 3),
                      _colour(name), -1)
        _text(bars, f"{p:.0%}", (x_max + 2, y + int(row * 0.7)), 0.4, (0, 0, 0))
    gap = np.full((side, 4, 3), 255, np.uint8)
    parts = [crop, gap, heat, gap, bars]
    if extra is not None:
        h, w = extra.shape[:2]
        parts += [gap, cv2.resize(extra, (max(1, round(w * side / h)), side), interpolation=cv2.INTER_AREA)]
    return np.concatenate(parts, axis=1)
