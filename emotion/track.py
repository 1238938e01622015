"""Follow faces from frame to frame: one id per person while they stay in view, and their smoothed probabilities.

Each frame's face boxes are matched to the open tracks by the assignment that moves the boxes least
(scipy's `linear_sum_assignment` on the distance between box centres, in box sides), allowing only pairs
whose boxes overlap (`MATCH_IOU`) or whose centres moved less than `max_shift` box sides and whose sizes
differ by less than `MAX_GROWTH` times: two people passing each other keep their own ids. A face with no
match starts a new track with the next id; a track unseen for more than `max_missed` frames is closed, and
its id is never used again. The webcam (emotion/live.py) and video files (emotion/clip.py) both use it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

MATCH_IOU = 0.3
MAX_SHIFT = 1.0  # centre moved by at most this many box sides between two frames
MAX_GROWTH = 2.0  # a box grew or shrank by less than this factor
BLOCKED = 1e6  # assignment cost of a pair that may not match


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _side(box) -> float:
    return max(1.0, ((box[2] - box[0]) * (box[3] - box[1])) ** 0.5)


def match_cost(a, b, max_shift: float = MAX_SHIFT) -> float:
    """How far box `b` lies from box `a`: centre distance in mean box sides; BLOCKED when they cannot be the
    same face."""
    sa, sb = _side(a), _side(b)
    if max(sa, sb) / min(sa, sb) >= MAX_GROWTH:
        return BLOCKED
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    shift = float(np.hypot(dx, dy)) / ((sa + sb) / 2)
    return shift if shift <= max_shift or iou(a, b) >= MATCH_IOU else BLOCKED


@dataclass
class Track:
    id: int  # 1, 2, ... in order of first appearance
    box: tuple[int, int, int, int]
    probs: np.ndarray | None = None  # smoothed probabilities (an exponential moving average)
    missed: int = 0  # frames since it was last seen

    def smooth(self, probs: np.ndarray, alpha: float) -> np.ndarray:
        """Blend this frame's probabilities in with weight `alpha` (1: no smoothing); returns the average."""
        probs = np.asarray(probs, np.float32)
        self.probs = probs if self.probs is None else alpha * probs + (1 - alpha) * self.probs
        return self.probs


class Tracker:
    """`max_missed`: frames a track waits unseen; `max_shift`: box sides a face may move between two frames
    (more for frames further apart)."""

    def __init__(self, max_missed: int = 0, max_shift: float = MAX_SHIFT):
        self.max_missed, self.max_shift = max_missed, max_shift
        self.tracks: list[Track] = []
        self.next_id = 1

    def update(self, boxes) -> list[Track]:
        """The track of each box of this frame, in the boxes' order (new tracks for new faces)."""
        boxes = [tuple(int(v) for v in b) for b in boxes]
        out: list[Track | None] = [None] * len(boxes)
        if self.tracks and boxes:
            cost = np.array([[match_cost(t.box, b, self.max_shift) for b in boxes] for t in self.tracks])
            for ti, bi in zip(*linear_sum_assignment(cost)):
                if cost[ti, bi] < BLOCKED:
                    out[bi] = self.tracks[ti]
        seen = {id(t) for t in out if t is not None}
        for t in self.tracks:
            if id(t) not in seen:
                t.missed += 1
        for i, box in enumerate(boxes):
            if out[i] is None:
                out[i] = Track(self.next_id, box)
                self.next_id += 1
                self.tracks.append(out[i])
            out[i].box, out[i].missed = box, 0
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return out
