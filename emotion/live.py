"""Webcam mode: label smoothing over recent frames, one `LiveState` per browser session.

Gradio hands a streaming handler only the newest frame when it falls behind (frames that arrive while
one is being processed replace each other), so frames are dropped, never queued. What flickers is the
label: each face's probabilities are averaged over recent frames (an exponential moving average), and a
face is followed from frame to frame by the overlap of its boxes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emotion.pipeline import Analysis

ALPHA = 0.35  # weight of the newest frame; about the last 5 frames count
MATCH_IOU = 0.3


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    box: tuple[int, int, int, int]
    probs: np.ndarray


@dataclass
class LiveState:
    tracks: list[Track] = field(default_factory=list)
    frames: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)  # stages of the last frame (for the benchmark)

    def update(self, analysis: Analysis, labels: tuple[str, ...]) -> list[dict[str, float]]:
        """Smoothed probabilities for each face of this frame (same order as analysis.faces)."""
        self.frames += 1
        new_tracks, out = [], []
        free = list(self.tracks)
        for face in analysis.faces:
            p = np.array([face.probabilities[c] for c in labels], np.float32)
            best = max(free, key=lambda t: iou(t.box, face.box), default=None)
            if best is not None and iou(best.box, face.box) >= MATCH_IOU:
                free.remove(best)
                p = ALPHA * p + (1 - ALPHA) * best.probs
            new_tracks.append(Track(face.box, p))
            out.append({c: float(v) for c, v in zip(labels, p)})
        self.tracks = new_tracks
        return out
