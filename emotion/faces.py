"""Find faces offline with YuNet (the `yuface` package, weights compiled in) and cut square crops.

Which square to cut for a face (framed as the training faces were) is emotion/framing.py's.

yuface wants BGR uint8, slows down sharply above ~960 px and misses faces under ~48 px, so frames
are scaled into [MIN_SIDE, DETECT_SIDE] for detection and the boxes scaled back. yuface is imported only
where a picture is searched, so a machine without its wheel can still read the rule (`rule`) and cut crops.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

# yuface carries its own OpenMP runtime; keep it from spinning against torch's threads for the 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from emotion.priority import LIVE_FIRST  # noqa: E402

DETECT_SIDE = 640  # longer side the detector sees at most
MIN_SIDE = 320  # small pictures (e.g. a 48 px face crop) are enlarged to this first
MIN_CONFIDENCE = 0.6
# When nothing reaches MIN_CONFIDENCE, one face filling at least CLOSE_UP_SHARE of the picture's shorter side
# is still taken down to CLOSE_UP_CONFIDENCE: YuNet is least sure of tight face crops (no head or shoulders
# around the face), while its false faces in scenes are small boxes. `python -m tools.detector` measures both.
CLOSE_UP_CONFIDENCE = 0.4
CLOSE_UP_SHARE = 0.5
# Before the close-up rule is tried, a picture with no sure face is looked at once more, set in a border of its
# own mean colour (BORDER_SHARE of its longer side on each side), and the faces YuNet finds there at
# BORDER_CONFIDENCE are taken. A face that fills the picture or is cut by its edge gets back the surroundings
# YuNet expects: the test suite's tight crops of one face score 40-50% bare and 93% bordered. The bordered look
# asks for more than MIN_CONFIDENCE: at 0.6 it found faces in more of the face-free test pictures, at 0.7 in
# none more than the bare rule. `python -m tools.detector` measures both errors for each.
BORDER_SHARE = 0.3
BORDER_CONFIDENCE = 0.7
MAX_FACES = 20  # the largest faces are kept; the app says when there were more


def rule() -> dict:
    """The settings that decide which faces `detect_faces` keeps, as now set: what a result made with the
    detector (such as training faces framed by it, train/framed.py) records, to be made again when they change."""
    return {"detect_side": DETECT_SIDE, "min_side": MIN_SIDE, "min_confidence": MIN_CONFIDENCE,
            "close_up": [CLOSE_UP_CONFIDENCE, CLOSE_UP_SHARE], "border": [BORDER_SHARE, BORDER_CONFIDENCE],
            "max_faces": MAX_FACES}


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the image's pixels (x1, y1 exclusive)
    score: float  # detector confidence 0..1, 1.0 for a whole image taken as the face
    landmarks: tuple[tuple[float, float], ...]  # right eye, left eye, nose tip, right and left mouth corner
    whole_image: bool = False  # the picture was taken as the face, not found by the detector

    @property
    def size(self) -> int:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def detect_faces(rgb: np.ndarray, min_confidence: float = MIN_CONFIDENCE, detect_side: int = DETECT_SIDE,
                 close_up_confidence: float = CLOSE_UP_CONFIDENCE,
                 border_confidence: float | None = BORDER_CONFIDENCE) -> list[Detection]:
    """The faces in an RGB image, largest first: the sure ones; else those found in the bordered picture (None:
    no second look); else one close-up (see `keep_faces`). Off a live webcam frame's thread, it waits while one
    is analysed (emotion/priority.py)."""
    LIVE_FIRST.wait_turn()
    found = find_candidates(rgb, min(min_confidence, close_up_confidence), detect_side)
    bordered = None if border_confidence is None else (
        lambda: find_candidates(rgb, border_confidence, detect_side, border=BORDER_SHARE))
    return keep_faces(found, rgb.shape, min_confidence, close_up_confidence, bordered)


def find_candidates(rgb: np.ndarray, floor: float, detect_side: int = DETECT_SIDE,
                    border: float = 0.0) -> list[Detection]:
    """Every box YuNet keeps at `floor`, in the image's pixels. YuNet cuts on its unrounded score and reports
    whole percent, so a box it reports at 40% may be cut at a floor of 0.4: `detect_faces` asks at the lowest
    level its rule uses, and anything measuring that rule must ask at the same level. `border` > 0 sets the
    picture in a frame of its mean colour, that share of its longer side wide, before YuNet looks; boxes are
    then clipped to the picture and landmarks may lie outside it."""
    import yuface  # here: where its wheel is missing (a GPU machine), the rest of this module still imports

    h, w = rgb.shape[:2]
    if min(h, w) < 8:
        return []
    framed = max(h, w) * (1 + 2 * border)  # the longer side YuNet is shown, before scaling
    s = min(detect_side / framed, max(1.0, MIN_SIDE / framed))
    small = rgb if s == 1.0 else cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                                            interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    pad = round(border * max(small.shape[:2]))
    if pad:
        mean = tuple(float(v) for v in small.reshape(-1, 3).mean(0))
        small = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=mean)
    bgr = np.ascontiguousarray(small[..., ::-1])
    confs, boxes, marks = yuface.detect(bgr, conf=floor)
    found = []
    for c, b, m in zip(confs, boxes.astype(np.float32), marks.astype(np.float32)):
        x, y, bw, bh = ((b[:2] - pad) / s).tolist() + (b[2:] / s).tolist()
        x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
        x1, y1 = min(w, int(round(x + bw))), min(h, int(round(y + bh)))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        pts = tuple((float((m[i] - pad) / s), float((m[i + 1] - pad) / s)) for i in range(0, 10, 2))
        found.append(Detection((x0, y0, x1, y1), float(c) / 100, pts))  # yuface scores in whole percent
    return found


def keep_faces(found: list[Detection], shape: tuple[int, ...], min_confidence: float = MIN_CONFIDENCE,
               close_up_confidence: float = CLOSE_UP_CONFIDENCE,
               bordered: Callable[[], list[Detection]] | None = None) -> list[Detection]:
    """The candidates that reach `min_confidence`, largest first; if none does, every box `bordered` gives (asked
    only then: YuNet's boxes in the bordered picture, each at the threshold it was asked at); if it gives none or
    is None, the most confident candidate that fills the picture (CLOSE_UP_SHARE of its shorter side) and
    reaches `close_up_confidence`."""
    faces = [f for f in found if f.score >= min_confidence]
    if not faces and bordered is not None:
        faces = bordered()
    if not faces:
        close_ups = [f for f in found if f.score >= close_up_confidence and f.size >= CLOSE_UP_SHARE * min(shape[:2])]
        faces = sorted(close_ups, key=lambda f: -f.score)[:1]
    return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def whole_image_face(rgb: np.ndarray) -> Detection:
    """Treat the whole picture as one face (for pictures that are already face crops, like FER2013's)."""
    h, w = rgb.shape[:2]
    return Detection((0, 0, w, h), 1.0, (), whole_image=True)


def cut(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Pixels inside `box`; parts outside the image are filled by repeating the edge."""
    x0, y0, x1, y1 = box
    h, w = rgb.shape[:2]
    inside = rgb[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    pad = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
    if any(pad) and inside.size:
        inside = cv2.copyMakeBorder(inside, *pad, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(inside)
