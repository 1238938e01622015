"""How a face is framed for the model: the training faces' framing, the crop square for a detection, and
measuring the framing of a set of face crops.

Geometry only, on a detection's box and eye landmarks (emotion.faces.Detection): importing it needs neither
the face detector nor the network. `measure_framing` alone runs the detector, imported when it is called,
so a machine without the yuface wheel (a GPU machine) can still load models and train.
"""
from __future__ import annotations

import numpy as np

# How FER2013's faces are framed: the eyes 0.362 of the picture's side apart, their midpoint 0.385 of the side
# from the top (medians measured by `measure_framing` on two samples of 2,000 training pictures at 64 px, 97%
# of faces found; 300-picture samples wander by about 0.005). Training measures it afresh; this is the fallback
# where the face detector cannot run (a GPU machine).
FER_FRAMING = (0.362, 0.385)

# Below this eye distance for its box width, a face is turned (the eyes come closer): frame it by its box.
MIN_SIDE_PER_BOX_WIDTH = 1.2
# A face whose square would cover at least this share of the picture is a picture already cropped to the face
# (a data set's crop, a cropped upload): its own centre square is read as it was framed, without the rows
# repeated past its edges and the landmarks' jitter on a few dozen pixels. Through the app's detector that
# read 83.0% of FER+ PublicTest against 82.0% framed on the eyes, and 80.2% of CK+48 against 77.6%
# (`python -m train.evaluate --detect-faces`); photos, whose faces leave room around them, are framed as before.
CLOSE_UP_COVER = 0.7


def centre_square(x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
    """The largest square centred in a box."""
    side = min(x1 - x0, y1 - y0)
    left, top = x0 + (x1 - x0 - side) // 2, y0 + (y1 - y0 - side) // 2
    return left, top, left + side, top + side


def covered(square: tuple[int, int, int, int], shape: tuple[int, ...]) -> float:
    """The share of a picture of `shape` (H, W, ...) that a square (x0, y0, x1, y1) covers."""
    h, w = shape[:2]
    x0, y0, x1, y1 = square
    inside = max(0, min(x1, w) - max(x0, 0)) * max(0, min(y1, h) - max(y0, 0))
    return inside / (h * w) if h * w else 0.0


def crop_box(det, margin: float, shape: tuple[int, ...], eye_distance: float | None = None,
             eye_line: float = FER_FRAMING[1]) -> tuple[int, int, int, int]:
    """The square the model sees for a detector's face (an emotion.faces.Detection; it may leave the image).
    A picture taken whole as the face is not framed: `emotion.model.Preprocess.square` keeps it as it is.

    With `eye_distance` (a share of the square's side, stored in the model's config.json from the training
    data), the square is framed on the eyes as the training faces were: side = eye distance / `eye_distance`
    (at least MIN_SIDE_PER_BOX_WIDTH box widths, for turned heads), centred across on the eyes' midpoint,
    which sits `eye_line` of the side from the top. Without it (or without landmarks), the square is the
    detector's box grown by `margin` of its size on each side. A square that would cover CLOSE_UP_COVER of the
    picture gives way to the picture's own centre square (the picture is the face's crop already).
    """
    x0, y0, x1, y1 = det.box
    if eye_distance and len(det.landmarks) >= 2:
        (rx, ry), (lx, ly) = det.landmarks[:2]
        side = max(float(np.hypot(lx - rx, ly - ry)) / eye_distance, MIN_SIDE_PER_BOX_WIDTH * (x1 - x0))
        left, top = (rx + lx) / 2 - side / 2, (ry + ly) / 2 - eye_line * side
    else:
        side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
        left, top = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2
    side, left, top = int(round(side)), int(round(left)), int(round(top))
    square = left, top, left + side, top + side
    if covered(square, shape) >= CLOSE_UP_COVER:
        return centre_square(0, 0, shape[1], shape[0])
    return square


def measure_framing(crops: list[np.ndarray]) -> tuple[float, float, int] | None:
    """(eye distance, eye line, faces measured) of face crops, as shares of their side; None if too few found.

    Training runs this on a sample of its pictures so the app frames faces the way the model learned them.
    Raises ImportError where the face detector (yuface) is not installed.
    """
    from emotion.faces import detect_faces

    dist, line = [], []
    for rgb in crops:
        faces = detect_faces(rgb)
        if not faces:
            continue
        h, w = rgb.shape[:2]
        (rx, ry), (lx, ly) = faces[0].landmarks[:2]
        dist.append(float(np.hypot((lx - rx) / w, (ly - ry) / h)))
        line.append((ry + ly) / 2 / h)
    if len(dist) < max(10, len(crops) // 4):
        return None
    return round(float(np.median(dist)), 3), round(float(np.median(line)), 3), len(dist)
