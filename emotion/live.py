"""Webcam mode: what each frame recomputes, and label smoothing over recent frames, one `LiveState` per session.

Gradio hands a streaming handler only the newest frame when it falls behind (frames that arrive while
one is being processed replace each other), so frames are dropped, never queued. What flickers is the
label: each face's probabilities are averaged over recent frames (an exponential moving average), and a
face is followed from frame to frame by emotion/track.py's tracker, as in video files.

Every frame is classified, but a face moves little from one frame to the next, so the two dearer steps are
spread over frames instead of being paid on each:
- the face detector runs every DETECT_EVERY frames. In between, each face's box and landmarks are moved by
  how far its patch moved since the detector's frame (`follow`: that frame's face found in the new frame by
  normalised cross-correlation, OpenCV's matchTemplate, on a small grey copy, to a fraction of a pixel;
  about half a millisecond). A face that cannot
  be found that way (it turned, left, or was covered) sends the frame to the detector at once, and so does
  a frame after one with no face. A face that comes into view beside others is found by the detector's next
  run, at most DETECT_EVERY - 1 frames later.
- the heatmap (Grad-CAM's pass) is made every EXPLAIN_EVERY frames, one frame after the detector's (so no
  frame pays for both); between, each face keeps its track's last map, moved with its box. A face with no
  map yet (new in view) and a change of method or layer get theirs on that very frame.
Video files (emotion/clip.py) follow faces between detector runs with the same `follow`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from emotion.faces import Detection
from emotion.pipeline import Analysis
from emotion.track import BLOCKED, Tracker, match_cost

ALPHA = 0.35  # weight of the newest frame; about the last 5 frames count
DETECT_EVERY = 3  # frames per run of the face detector (the others follow the faces it found)
EXPLAIN_EVERY = 3  # frames per heatmap (the others show their face's last one)
FOLLOW_SIDE = 160  # px: the longer side of the grey copy faces are followed on
MIN_MATCH = 0.6  # normalised cross-correlation below which a face counts as lost (the detector runs)


def small_grey(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """A grey copy of an RGB frame with its longer side FOLLOW_SIDE (never enlarged), and its scale."""
    h, w = frame.shape[:2]
    s = min(1.0, FOLLOW_SIDE / max(h, w))
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if s < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return grey, s


def follow(before: np.ndarray, now: np.ndarray, scale: float, dets: list[Detection],
           shape: tuple[int, ...]) -> list[Detection] | None:
    """`dets` of the frame whose small grey copy is `before`, moved to where each face's patch lies in `now`
    (the same copy of the new frame; `scale`: copy / frame, `shape`: the new frame's). None when a face is not
    found again (best match under MIN_MATCH, or too little of it in view)."""
    out = []
    gh, gw = now.shape[:2]
    for d in dets:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in d.box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(gw, x1), min(gh, y1)
        if x1 - x0 < 6 or y1 - y0 < 6:
            return None
        patch = before[y0:y1, x0:x1]
        m = max(x1 - x0, y1 - y0) // 2  # search half a face side around where it was
        sx0, sy0, sx1, sy1 = max(0, x0 - m), max(0, y0 - m), min(gw, x1 + m), min(gh, y1 + m)
        area = now[sy0:sy1, sx0:sx1]
        if area.shape[0] < patch.shape[0] or area.shape[1] < patch.shape[1] or float(patch.std()) < 1.0:
            return None
        scores = cv2.matchTemplate(area, patch, cv2.TM_CCOEFF_NORMED)
        _, best, _, (bx, by) = cv2.minMaxLoc(scores)
        if best < MIN_MATCH:
            return None
        dx = (sx0 + bx + _peak(scores[by, max(0, bx - 1):bx + 2], bx) - x0) / scale
        dy = (sy0 + by + _peak(scores[max(0, by - 1):by + 2, bx], by) - y0) / scale
        b = d.box
        h, w = shape[:2]
        box = (int(round(b[0] + dx)), int(round(b[1] + dy)), int(round(b[2] + dx)), int(round(b[3] + dy)))
        if box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h:
            return None
        marks = tuple((px + dx, py + dy) for px, py in d.landmarks)
        out.append(Detection(box, d.score, marks, d.whole_image))
    return out


def _peak(row: np.ndarray, at: int) -> float:
    """Where between the cells the correlation peaks (-0.5 .. 0.5 around cell `at`): the vertex of the parabola
    through it and its two neighbours (0 at the search area's edge)."""
    if len(row) < 3 or at == 0:
        return 0.0
    left, mid, right = (float(v) for v in row[:3])
    curve = left - 2 * mid + right
    return 0.0 if curve >= 0 else float(np.clip((left - right) / (2 * curve), -0.5, 0.5))


@dataclass
class LiveState:
    tracker: Tracker = field(default_factory=Tracker)  # a face unseen for one frame starts afresh
    frames: int = 0  # frames handled so far (the next one's index)
    timings_ms: dict[str, float] = field(default_factory=dict)  # stages of the last frame (for the benchmark)
    precision: str = ""  # what the last frame's network computed in, "bf16" or "fp32" (emotion/precision.py)
    detections: list[Detection] | None = None  # the faces of the last frame, detected or followed
    anchor: tuple[np.ndarray, list[Detection]] | None = None  # the detector's last frame (small grey) and faces
    detected_at: int = -1  # index of the last frame the detector ran on
    explained_at: int = -1  # index of the last frame that made its heatmaps
    explained_with: tuple[str, str] | None = None  # (method, layer) of the maps kept
    maps: dict[int, np.ndarray] = field(default_factory=dict)  # track id -> its face's last heatmap

    @property
    def tracks(self):
        """The faces followed now (emotion.track.Track)."""
        return self.tracker.tracks

    def faces_for(self, frame: np.ndarray) -> tuple[list[Detection] | None, np.ndarray]:
        """This frame's faces followed from where the detector last found them (None: run the detector on it),
        and the frame's small grey copy (`remember` it with the faces). Each frame is matched against the
        detector's frame itself, not the one before, so the small copy's rounding does not add up."""
        grey, scale = small_grey(frame)
        due = not self.detections or self.frames - self.detected_at >= DETECT_EVERY
        if due or self.anchor is None or self.anchor[0].shape != grey.shape:
            return None, grey
        return follow(self.anchor[0], grey, scale, self.anchor[1], frame.shape), grey

    def remember(self, dets: list[Detection], grey: np.ndarray, detected: bool) -> None:
        """This frame's faces (and, from the detector, its grey copy: what the next frames follow from)."""
        self.detections = dets
        if detected:
            self.anchor, self.detected_at = (grey, dets), self.frames

    def explain_due(self, dets: list[Detection], method: str, layer: str, detected: bool) -> bool:
        """Whether this frame makes its heatmaps: every EXPLAIN_EVERY frames, put off by one frame when the
        detector runs on this one; and at once when the method or layer changed or a face has no map yet."""
        if self.explained_with != (method, layer.split()[0]):
            return True
        mapped = [t for t in self.tracker.tracks if t.id in self.maps]
        for d in dets:  # a face that no open track with a map could take is new in view
            if not any(match_cost(t.box, d.box, self.tracker.max_shift) < BLOCKED for t in mapped):
                return True
        gap = self.frames - self.explained_at
        return gap > EXPLAIN_EVERY or (gap == EXPLAIN_EVERY and not detected)

    def update(self, analysis: Analysis, labels: tuple[str, ...], explained: bool = True) -> list[dict[str, float]]:
        """Smoothed probabilities for each face of this frame (same order as analysis.faces). Where this frame
        made no heatmaps (`explained` False), each face is given its track's last map."""
        out = []
        for face, track in zip(analysis.faces, self.tracker.update([f.box for f in analysis.faces])):
            p = track.smooth(np.array([face.probabilities[c] for c in labels], np.float32), ALPHA)
            out.append({c: float(v) for c, v in zip(labels, p)})
            if explained:
                self.maps[track.id] = face.heatmap
            elif track.id in self.maps:
                face.heatmap = self.maps[track.id]
        open_ids = {t.id for t in self.tracker.tracks}
        self.maps = {k: v for k, v in self.maps.items() if k in open_ids}
        if explained:
            self.explained_at = self.frames
            self.explained_with = (analysis.method, analysis.layer.split()[0])
        self.frames += 1
        return out
