"""Where on the face a heatmap looks: its mass on the eyes and brows, nose, mouth, rest of face, outside.

Geometry
--------
Everything is built from the detector's 5 landmarks (right eye, left eye, nose tip, right and left mouth
corner) and its face box, in the picture's pixels. Let E be the midpoint of the eyes, d the distance
between the eyes, `across` the unit vector from the right to the left eye and `down` the unit vector
perpendicular to it that points towards the mouth. Each heatmap pixel (its centre, placed in the picture
through the crop square) goes to the first of these regions that holds it:

1. eyes_brows: one ellipse per eye, centred 0.15 d above the eye (along -down), semi-axes 0.45 d across
   and 0.42 d up/down: from the top of the brow (0.57 d above the eye) to the lower lid and cheek line
   (0.27 d below it), nearly meeting between the brows.
2. mouth: an ellipse centred 0.05 d below the middle of the mouth corners, along the corner-to-corner
   line, semi-axes half the mouth width + 0.2 d along it and 0.35 d across it (lips, an open mouth,
   the folds at the corners).
3. nose: every point within 0.28 d of the segment from 0.22 d below E (the bridge, between the eyes) to
   the nose tip: bridge, sides and tip of the nose.
4. rest_of_face: inside the ellipse inscribed in the detector's face box (forehead, cheeks, chin).
5. outside_face: everything else in the crop (hair, ears, background, padding).

The axes follow the landmarks, so a tilted or turned face gets tilted, shifted regions.

Faces without landmarks (a picture taken whole as the face, such as FER2013's 48 x 48 crops, which are
roughly aligned) use `TEMPLATE_LANDMARKS` and `TEMPLATE_BOX`, fractions of the crop's width and height.
"""
from __future__ import annotations

import numpy as np

REGIONS = ("eyes_brows", "nose", "mouth", "rest_of_face", "outside_face")
REGION_LABELS = {"eyes_brows": "eyes & brows", "nose": "nose", "mouth": "mouth", "rest_of_face": "rest of face",
                 "outside_face": "outside face"}
REGION_COLOURS = {"eyes_brows": (38, 139, 210), "nose": (133, 153, 0), "mouth": (220, 50, 47),
                  "rest_of_face": (181, 137, 0), "outside_face": (147, 161, 161)}  # RGB

# Measured: emotion.faces.detect_faces on 600 FER2013 PublicTest images (a seeded random sample over all
# classes; 574 faces found, the 48 px pictures enlarged to 320 px by detect_faces), each landmark divided
# by the picture's width and height and averaged (std ~0.07-0.10 of the side for every point).
# Order: right eye, left eye, nose tip, right mouth corner, left mouth corner (x, y).
TEMPLATE_LANDMARKS = ((0.318, 0.366), (0.673, 0.366), (0.490, 0.584), (0.349, 0.752), (0.644, 0.752))
# The mean face box of the same detections (clipped to the picture): x0, y0, x1, y1.
TEMPLATE_BOX = (0.099, 0.031, 0.904, 0.970)

# the geometry above, in units of the eye distance d
EYE_UP, EYE_ACROSS, EYE_UPDOWN = 0.15, 0.45, 0.42
MOUTH_DOWN, MOUTH_EXTRA, MOUTH_HALF_HEIGHT = 0.05, 0.2, 0.35
NOSE_START, NOSE_RADIUS = 0.22, 0.28


def template(crop_box: tuple[int, int, int, int]) -> tuple[tuple[tuple[float, float], ...], tuple[float, ...]]:
    """The template landmarks and face box placed in a crop square given in the picture's pixels."""
    x0, y0, x1, y1 = crop_box
    w, h = x1 - x0, y1 - y0
    marks = tuple((x0 + fx * w, y0 + fy * h) for fx, fy in TEMPLATE_LANDMARKS)
    bx0, by0, bx1, by1 = TEMPLATE_BOX
    return marks, (x0 + bx0 * w, y0 + by0 * h, x0 + bx1 * w, y0 + by1 * h)


def region_masks(size: tuple[int, int] | int, crop_box, landmarks=(), face_box=None) -> dict[str, np.ndarray]:
    """One boolean mask per region (H x W, disjoint, covering every pixel) over the crop square.

    `size` is the mask's (H, W) (the heatmap's shape), `crop_box` the square the heatmap covers and
    `landmarks`/`face_box` the detector's output, all in the same picture's pixels. With no landmarks
    the template is used (and `face_box` ignored); with no face box, the template's box is used.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if not landmarks:
        landmarks, face_box = template(crop_box)
    elif face_box is None:
        face_box = template(crop_box)[1]
    pts = np.asarray(landmarks, np.float64).reshape(5, 2)
    r_eye, l_eye, nose, r_mouth, l_mouth = pts
    cx0, cy0, cx1, cy1 = (float(v) for v in crop_box)
    # pixel centres in the picture's coordinates
    xs = cx0 + (np.arange(w) + 0.5) * (cx1 - cx0) / w
    ys = cy0 + (np.arange(h) + 0.5) * (cy1 - cy0) / h
    px, py = np.meshgrid(xs, ys)
    p = np.stack([px, py], -1)  # H x W x 2

    eyes_mid = (r_eye + l_eye) / 2
    d = float(np.linalg.norm(l_eye - r_eye))
    if d < 1e-6:  # degenerate landmarks: fall back to a size from the face box
        d = 0.35 * max(face_box[2] - face_box[0], face_box[3] - face_box[1], 1e-6)
        across = np.array([1.0, 0.0])
    else:
        across = (l_eye - r_eye) / d
    down = np.array([-across[1], across[0]])
    mouth_mid = (r_mouth + l_mouth) / 2
    if np.dot(mouth_mid - eyes_mid, down) < 0:
        down = -down

    def ellipse(centre, axis, a, b):
        rel = p - centre
        u = rel @ axis
        v = rel @ np.array([-axis[1], axis[0]])
        return (u / a) ** 2 + (v / b) ** 2 <= 1

    eyes = np.zeros((h, w), bool)
    for eye in (r_eye, l_eye):
        eyes |= ellipse(eye - EYE_UP * d * down, across, EYE_ACROSS * d, EYE_UPDOWN * d)

    mouth_vec = l_mouth - r_mouth
    mouth_w = float(np.linalg.norm(mouth_vec))
    mouth_axis = mouth_vec / mouth_w if mouth_w > 1e-6 else across
    mouth = ellipse(mouth_mid + MOUTH_DOWN * d * down, mouth_axis, mouth_w / 2 + MOUTH_EXTRA * d,
                    MOUTH_HALF_HEIGHT * d)

    a, b = eyes_mid + NOSE_START * d * down, nose
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0, 1)
    nose_mask = np.linalg.norm(p - (a + t[..., None] * ab), axis=-1) <= NOSE_RADIUS * d

    fx0, fy0, fx1, fy1 = (float(v) for v in face_box)
    fcx, fcy, frx, fry = (fx0 + fx1) / 2, (fy0 + fy1) / 2, max((fx1 - fx0) / 2, 1e-6), max((fy1 - fy0) / 2, 1e-6)
    face = ((px - fcx) / frx) ** 2 + ((py - fcy) / fry) ** 2 <= 1

    taken = np.zeros((h, w), bool)
    out = {}
    for name, m in (("eyes_brows", eyes), ("mouth", mouth), ("nose", nose_mask), ("rest_of_face", face)):
        out[name] = m & ~taken
        taken |= m
    out["outside_face"] = ~taken
    return {name: out[name] for name in REGIONS}


def region_shares(heatmap: np.ndarray, crop_box, landmarks=(), face_box=None) -> dict[str, float]:
    """Share of the heatmap's mass on each region in `REGIONS` (floats summing to 1).

    `heatmap` (H x W, >= 0) covers `crop_box`; `landmarks` and `face_box` are the detector's, in the same
    picture's pixels as `crop_box` (for `emotion.pipeline.FaceResult`s use `face_region_shares`). An empty
    map (no mass) gives 0.0 for every region.
    """
    hm = np.clip(np.nan_to_num(np.asarray(heatmap, np.float64)), 0, None)
    masks = region_masks(hm.shape, crop_box, landmarks, face_box)
    total = hm.sum()
    if total <= 0:
        return {name: 0.0 for name in REGIONS}
    return {name: float(hm[m].sum() / total) for name, m in masks.items()}


def face_box(face, scale: float = 1.0) -> tuple[float, ...] | None:
    """A `FaceResult`'s detector box in the analysed picture's pixels, as its crop box and landmarks are
    (`scale`: its `Analysis.scale`; face.box is in the original picture's); None for a face without
    landmarks (the template's box is used then)."""
    return tuple(v * scale for v in face.box) if face.landmarks else None


def face_region_shares(face, scale: float = 1.0, heatmap: np.ndarray | None = None) -> dict[str, float]:
    """`region_shares` of a `FaceResult`; `scale` is its `Analysis.scale` (face.box is in original pixels).

    `heatmap` replaces the face's own map (e.g. another method's map over the same crop).
    """
    return region_shares(face.heatmap if heatmap is None else heatmap, face.crop_box, face.landmarks,
                         face_box(face, scale))


def face_region_areas(face, scale: float = 1.0) -> dict[str, float]:
    """Each region's share of the crop's area: what a flat, uninformative map would give (the baseline
    to read `face_region_shares` against; e.g. ~41 % of a FER2013 crop lies outside the face ellipse)."""
    return face_region_shares(face, scale, np.ones((32, 32), np.float32))


def draw_regions(rgb: np.ndarray, crop_box=None, landmarks=(), face_box=None, alpha: float = 0.35) -> np.ndarray:
    """The regions tinted over an RGB crop (uint8), e.g. to show what the breakdown measures.

    `crop_box` defaults to the whole crop (0, 0, w, h) in its own pixels, with the template landmarks.
    """
    h, w = rgb.shape[:2]
    masks = region_masks((h, w), crop_box or (0, 0, w, h), landmarks, face_box)
    out = rgb.astype(np.float32).copy()
    for name, m in masks.items():
        if name != "outside_face":
            out[m] = out[m] * (1 - alpha) + np.array(REGION_COLOURS[name], np.float32) * alpha
    return np.clip(out, 0, 255).astype(np.uint8)

