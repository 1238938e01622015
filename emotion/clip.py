"""A video file, analysed: its sampled frames through the one pipeline, each face followed, one row per face a frame.

    file --video.probe, video.sample_frames--> (time, RGB frame) --faces: the detector, or followed--> boxes
         --pipeline.analyse (the fast map)--> label, probabilities, heatmap --track.Tracker--> a person id per face
         --on key frames: pipeline.analyse (the method asked for), faithfulness, what-if--> the heatmap's verdict
         --draw.annotate--> video.ClipWriter --> the clip with labels and heatmaps (when asked for)

Every face of every analysed frame gets the label and probabilities a photo of that frame would get (the same
model, decision rule and mirror averaging, `pipeline.analyse`), but the dearer steps are spread over frames
as the webcam's are (emotion/live.py):
- the face detector runs on a frame `DETECT_EVERY_S` or more after its last run (at 25 frames a second, every
  fifth; at 5 or fewer, every frame); between, faces are followed from the detector's frame by template
  matching (`live.follow`), and a face lost that way, or a frame after one with no face, sends the frame to
  the detector;
- the heatmap drawn on the clip is the webcam's (`LIVE_METHOD` at `LIVE_LAYER`, in float32 as a photo's),
  about a forward pass a face;
- the full check (the map of the method and layer asked for, its faithfulness verdict and the what-if) runs
  on key frames only: a person's first frame, then at most once every `check_every` seconds per person
  (`CHECK_EVERY_S` unless told; 0 checks every face of every frame, drawing the asked-for map as before).
  Rows say which were checked (`checked`); the others have no verdict or what-if.

Labels shown on the clip and the timeline are smoothed over time (an exponential moving average with time
constant `SMOOTH_S`, so the same at any frame rate); each row keeps the model's own probabilities too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from emotion.draw import annotate
from emotion.explain import (DEFAULT_LAYER, DEFAULT_METHOD, LIVE_LAYER, LIVE_METHOD, grid_side, heatmap_name,
                             resolve_layer, resolve_method)
from emotion.faces import DETECT_SIDE, MIN_CONFIDENCE, detect_faces
from emotion.faithfulness import face_faithfulness
from emotion.images import Loaded
from emotion.live import follow, small_grey
from emotion.model import EmotionModel
from emotion.pipeline import NO_FACE, analyse
from emotion.track import MAX_SHIFT, Tracker
from emotion.video import DEFAULT_RATE, EVERY_FRAME, ClipWriter, check_rate, fit_side, probe, sample_frames
from emotion.whatif import compact, what_if

SMOOTH_S = 0.5  # seconds: time constant of the smoothed labels
MAX_MISSED_S = 1.0  # a person out of view (or missed by the detector) for longer gets a new id on return
SHIFT_PER_S = 2.0  # box sides a face may move in a second between analysed frames (at least track.MAX_SHIFT)
CHECK_EVERY_S = 1.0  # seconds: a person's full check (verdict, what-if) at most this often; 0: every frame
DETECT_EVERY_S = 0.2  # seconds: the detector runs at most this long after its last run (faces followed between)
NO_FACE_IN_CLIP = ("No face found in any of the {n} frames analysed. Faces need to be at least about 50 pixels "
                   "high, fairly frontal and lit; analysing more frames a second may help with short glimpses.")

Progress = Callable[[float, str], None]


@dataclass
class VideoResult:
    name: str
    duration: float  # seconds: as the file says, else up to the last frame analysed
    rate: float  # frames analysed a second (the clip's own rate when every frame was)
    every_frame: bool
    frames: int  # frames analysed
    labels: tuple[str, ...]
    rows: list[dict]  # one per face and analysed frame; see `analyse_video`
    changes: list[dict]  # {"person", "time", "from", "to"}: where a person's smoothed label changes
    messages: list[str] = field(default_factory=list)
    method: str = DEFAULT_METHOD  # the checked heatmaps' method and layer (the verdicts are theirs)
    layer: str = DEFAULT_LAYER
    model: dict = field(default_factory=dict)
    clip: Path | None = None  # the annotated clip, when one was written
    grid: int = 0  # cells across the heatmaps' layer (explain.grid_side)
    frame_size: tuple[int, int] | None = None  # (width, height) of the video's frames, upright: the boxes' pixels
    check_every: float = CHECK_EVERY_S  # seconds between a person's checks (0: every frame)
    clip_heatmaps: str = ""  # the heatmaps drawn on the clip (explain.heatmap_name)

    @property
    def heatmap_name(self) -> str:
        return heatmap_name(self.method, self.layer, self.grid)

    @property
    def people(self) -> list[int]:
        return sorted({r["person"] for r in self.rows})

    @property
    def frames_checked(self) -> int:
        """Analysed frames with at least one face checked (verdict and what-if)."""
        return len({r["frame"] for r in self.rows if r.get("checked")})

    def to_json(self) -> dict:
        keep = ("time", "person", "box", "label", "probabilities", "smoothed_label", "checked", "level", "verdict",
                "what_if")
        return {"file": self.name, "duration": round(self.duration, 3), "frames_analysed": self.frames,
                "frames_per_second": "every frame" if self.every_frame else self.rate,
                "frames_checked": self.frames_checked, "check_every": self.check_every,
                "people": [{"person": p, "first_seen": min(r["time"] for r in self.rows if r["person"] == p),
                            "last_seen": max(r["time"] for r in self.rows if r["person"] == p),
                            "frames": sum(r["person"] == p for r in self.rows)} for p in self.people],
                "rows": [{k: r[k] for k in keep} for r in self.rows], "changes": self.changes,
                "messages": self.messages, "method": self.method, "layer": self.layer.split()[0],
                "grid": [self.grid, self.grid], "clip_heatmaps": self.clip_heatmaps,
                "frame_size": list(self.frame_size) if self.frame_size else None,
                "model": self.model}


def tracker_for(rate: float) -> Tracker:
    """The tracker for frames analysed `rate` times a second."""
    return Tracker(max_missed=max(1, math.ceil(MAX_MISSED_S * rate)), max_shift=max(MAX_SHIFT, SHIFT_PER_S / rate))


class _Faces:
    """Each frame's faces (at `t` seconds): the detector's (at a photo's detection side), or followed from the
    detector's last frame (`live.follow`, on small grey copies) while that frame is under DETECT_EVERY_S back."""

    def __init__(self):
        self.anchor = None  # (small grey copy, detections, time) of the detector's last frame

    def __call__(self, rgb, t: float):
        grey, scale = small_grey(rgb)
        dets, a = None, self.anchor
        if a is not None and a[1] and t + 1e-6 < a[2] + DETECT_EVERY_S and a[0].shape == grey.shape:
            dets = follow(a[0], grey, scale, a[1], rgb.shape)
        if dets is None:  # due, a face lost, or no face last time: the detector
            dets = detect_faces(rgb, MIN_CONFIDENCE, DETECT_SIDE)
            self.anchor = (grey, dets, t)
        return dets


def analyse_video(path, model: EmotionModel, rate: float = DEFAULT_RATE, *, method: str = DEFAULT_METHOD,
                  layer: str = DEFAULT_LAYER, clip_path=None, verdicts: bool = True,
                  check_every: float = CHECK_EVERY_S, progress: Progress | None = None) -> VideoResult:
    """Every face in the frames of `path` taken `rate` times a second (EVERY_FRAME: every frame).

    Each row: `time` (seconds), `frame` (analysed frame number, from 0), `person` (track id), `box` (x0, y0,
    x1, y1 in the video frame's own pixels, upright, as a photo's box is: frames are analysed scaled down to
    at most video.FRAME_SIDE, and the boxes scaled back; the result's `frame_size` is that frame's size),
    `label` and `probabilities` (the model's, this frame, as a photo of it gets), `smoothed` and
    `smoothed_label` (averaged over time, as drawn on the clip), `checked` (whether this face had the full
    check on this frame: its first frame, then at most once every `check_every` seconds; every frame for 0),
    `level` and `verdict` (how far to trust the heatmap of `method` at `layer`; None when not checked or
    `verdicts` is False), `what_if` (each region hidden: the label and the explained class's probability
    then, emotion/whatif.py; None likewise). `clip_path` writes the annotated clip there, with the webcam's
    heatmaps (`check_every` 0: the asked-for ones).
    Raises emotion.video.VideoError (a message for the user) for a file that cannot be analysed.
    """
    method, layer = resolve_method(method, controls=False), resolve_layer(layer)
    if not check_every >= 0:
        raise ValueError(f"check_every must be 0 (every frame) or more seconds, not {check_every!r}.")
    info = probe(path)
    rate = check_rate(info, rate)
    every = rate == EVERY_FRAME
    step_rate = info.fps if every else min(rate, info.fps)
    tracker, faces_of = tracker_for(step_rate), _Faces()
    # the map drawn on every frame: the webcam's (float32); with every frame checked, the one asked for
    fast_method, fast_layer = (method, layer) if check_every == 0 else (LIVE_METHOD, resolve_layer(LIVE_LAYER))
    same = (fast_method, fast_layer) == (method, layer)  # the fast map is the checked one: reused
    messages, rows, changes = list(info.notes), [], []
    last_seen: dict[int, tuple[float, str]] = {}  # person -> (time, smoothed label)
    last_check: dict[int, float] = {}  # person -> time of their last check
    expected = info.frames_at(rate)
    writer = ClipWriter(clip_path, step_rate) if clip_path is not None else None
    k, t, size = -1, 0.0, None
    try:
        for k, (t, full) in enumerate(sample_frames(path, info, rate, messages, side=None)):
            size = (full.shape[1], full.shape[0])
            rgb = Loaded(fit_side(full), size)  # analysed at most FRAME_SIDE, boxes in the frame's own pixels
            if progress is not None:
                done = (k / expected) if expected else (t / info.duration if info.duration else 0.0)
                progress(min(0.99, done), f"frame {k + 1}{f' of {expected}' if expected else ''} ({t:.1f} s)")
            dets = faces_of(rgb.rgb, t)
            a = analyse(rgb, model, method=fast_method, layer=fast_layer, detections=dets)  # float32, as photos
            for m in a.messages:
                if m != NO_FACE and m not in messages:
                    messages.append(m)
            tracks = tracker.update([f.box for f in a.faces])
            due = [i for i, track in enumerate(tracks) if verdicts and (
                track.id not in last_check or t + 1e-6 >= last_check[track.id] + check_every)]
            checked = {}  # face index -> (FaceResult with the asked-for map, its Analysis)
            if due:
                full_a = a if same else analyse(rgb, model, method=method, layer=layer,
                                                detections=[dets[i] for i in due])
                for j, i in enumerate(due):
                    checked[i] = (full_a.faces[i if same else j], full_a)
            shown = []
            for i, (face, track) in enumerate(zip(a.faces, tracks)):
                check, hidden = {}, None
                if i in checked:
                    face, full_a = checked[i]  # its label and probabilities: the same, from the checked map's pass
                    check = face_faithfulness(model, face, method=full_a.method, layer=full_a.layer)
                    hidden = compact(what_if(model, face, full_a.scale))
                    last_check[track.id] = t
                before = last_seen.get(track.id)
                alpha = 1.0 if before is None else 1 - math.exp(-max(t - before[0], 0.0) / SMOOTH_S)
                smoothed = track.smooth([face.probabilities[c] for c in model.labels], alpha)
                smooth = {c: round(float(v), 5) for c, v in zip(model.labels, smoothed)}
                label = max(smooth, key=smooth.get)
                if before is not None and before[1] != label:
                    changes.append({"person": track.id, "time": round(t, 3), "from": before[1], "to": label})
                last_seen[track.id] = (t, label)
                shown.append(smooth)
                rows.append({"time": round(t, 3), "frame": k, "person": track.id, "box": list(face.box),
                             "label": face.label,
                             "probabilities": {c: round(v, 5) for c, v in face.probabilities.items()},
                             "smoothed": smooth, "smoothed_label": label, "checked": i in checked,
                             "level": check.get("level"), "verdict": check.get("verdict"), "what_if": hidden})
            if writer is not None:
                writer.write(annotate(a, heatmaps=True, probabilities=shown, ids=[tr.id for tr in tracks]))
    finally:
        if writer is not None:
            writer.close()
    frames = k + 1
    if not rows:
        messages.append(NO_FACE_IN_CLIP.format(n=frames))
    if progress is not None:
        progress(1.0, f"{frames} frames analysed")
    side = model.prep.size
    return VideoResult(info.name, info.duration or t, step_rate, every, frames, tuple(model.labels), rows, changes,
                       messages, method, layer, model.describe(), Path(clip_path) if writer is not None else None,
                       grid_side(model.net, layer, side), size, check_every,
                       heatmap_name(fast_method, fast_layer, grid_side(model.net, fast_layer, side)))
