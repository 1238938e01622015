"""Webcam mode: label smoothing over recent frames, one `LiveState` per browser session.

Gradio hands a streaming handler only the newest frame when it falls behind (frames that arrive while
one is being processed replace each other), so frames are dropped, never queued. What flickers is the
label: each face's probabilities are averaged over recent frames (an exponential moving average), and a
face is followed from frame to frame by emotion/track.py's tracker, as in video files.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emotion.pipeline import Analysis
from emotion.track import Tracker

ALPHA = 0.35  # weight of the newest frame; about the last 5 frames count


@dataclass
class LiveState:
    tracker: Tracker = field(default_factory=Tracker)  # a face unseen for one frame starts afresh
    frames: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)  # stages of the last frame (for the benchmark)
    precision: str = ""  # what the last frame's network computed in, "bf16" or "fp32" (emotion/precision.py)

    @property
    def tracks(self):
        """The faces followed now (emotion.track.Track)."""
        return self.tracker.tracks

    def update(self, analysis: Analysis, labels: tuple[str, ...]) -> list[dict[str, float]]:
        """Smoothed probabilities for each face of this frame (same order as analysis.faces)."""
        self.frames += 1
        out = []
        for face, track in zip(analysis.faces, self.tracker.update([f.box for f in analysis.faces])):
            p = track.smooth(np.array([face.probabilities[c] for c in labels], np.float32), ALPHA)
            out.append({c: float(v) for c, v in zip(labels, p)})
        return out
