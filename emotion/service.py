"""What the app's events and API endpoints do, free of Gradio layout: inputs in, displayable results out.

`app.py` wires these to components; tests and other front ends can call them directly.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion import table, timeline
from emotion.clip import CHECK_EVERY_S, Progress, VideoResult, analyse_video
from emotion.compare import second_map
from emotion.draw import annotate
from emotion.explain import (CLASS_AGNOSTIC, DEFAULT_LAYER, DEFAULT_METHOD, LIVE_LAYER, LIVE_METHOD,
                             effective_precision, resolve_layer, resolve_method)
from emotion.faces import DETECT_SIDE, MAX_FACES, MIN_CONFIDENCE, Detection, detect_faces, whole_image_face
from emotion.faithfulness import face_faithfulness
from emotion.images import load_image
from emotion.regions import face_region_areas, face_region_shares
from emotion.live import LiveState
from emotion.model import EmotionModel, model_name
from emotion.pipeline import PREDICTED, Analysis, analyse
from emotion.precision import resolve_precision
from emotion.video import DEFAULT_RATE
from emotion.view import faces_html
from emotion.whatif import what_if

LIVE_DETECT_SIDE = 320  # webcam faces are large: detect on a 320 px frame (4x fewer pixels than 640)


def _explain_class(choice: str | None) -> str | None:
    return None if not choice or choice.strip().lower() == PREDICTED else choice


@dataclass
class PhotoView:
    annotated: np.ndarray | None  # the picture with numbered, labelled boxes
    faces: str  # HTML: heatmap legend, then per face its crop and heatmap side by side, bars, verdict, regions
    status: str  # markdown: what was found, and any message for the user
    result: dict  # the API's JSON (without heatmaps)


FAITH_FIELDS = ("level", "verdict", "score", "curve", "controls", "random_mean", "beats_random", "n_random",
                "beats", "other_class", "class_agnostic", "quantity", "target", "margin", "calibration")


def honesty(model: EmotionModel, a: Analysis) -> list[dict]:
    """For each face: how faithful its heatmap is (against the face prior, another class's map and random
    maps; emotion/faithfulness.py), where its mass lies, where a flat map's would (`region_baseline`: each
    region's share of the crop's area, what the shares are read against), what the model answers with
    each region hidden (`what_if`, emotion/whatif.py), and Grad-CAM's map beside this one with how far the
    two agree (`second_map`, emotion/compare.py; None when the map is Grad-CAM's at that layer already)."""
    out = []
    for face in a.faces:
        f = face_faithfulness(model, face, method=a.method, layer=a.layer)
        out.append({"faithfulness": {k: f[k] for k in FAITH_FIELDS},
                    "regions": face_region_shares(face, scale=a.scale),
                    "region_baseline": face_region_areas(face, scale=a.scale),
                    "what_if": what_if(model, face, a.scale),
                    "second_map": second_map(model, face, a.method, a.layer)})
    return out


def _refuse_why_not(method: str, explain_for: str | None) -> None:
    """ValueError for "why not X?" with a class-agnostic method, whose map is the same for every class."""
    if method in CLASS_AGNOSTIC and _explain_class(explain_for) is not None:
        raise ValueError(f"{method} draws the same map for every class, so it cannot answer \"why not X?\": "
                         f"ask for the predicted class, or pick a class-specific method such as {DEFAULT_METHOD}.")


def checked(model: EmotionModel, image, method, layer, explain_for, whole_image,
            with_heatmap: bool, detections: list[Detection] | None = None) -> tuple[Analysis, list[dict], dict]:
    """analyse(), the honesty checks of every face, and the JSON answer with those checks in it.
    `detections`: the faces found already on this (loaded) picture, for analyse() to reuse.

    Raises ValueError for "why not X?" with a class-agnostic method, whose map is the same for every class.
    """
    method = resolve_method(method, controls=False)
    _refuse_why_not(method, explain_for)
    a = analyse(image, model, method=method, layer=layer, explain_class=_explain_class(explain_for),
                whole_image=whole_image, detections=detections)
    checks = honesty(model, a)
    result = a.to_json(with_heatmap=with_heatmap)
    for face_json, c in zip(result["faces"], checks):
        face_json.update(c)
        second = c["second_map"]
        if second is not None:  # its map as the face's own is given: a list, and only when heatmaps are asked
            face_json["second_map"] = {k: v for k, v in second.items() if k != "heatmap"}
            if with_heatmap:
                face_json["second_map"]["heatmap"] = np.round(second["heatmap"], 3).tolist()
    return a, checks, result


def photo(model: EmotionModel, image, method: str = DEFAULT_METHOD, layer: str = DEFAULT_LAYER,
          explain_for: str | None = PREDICTED, whole_image: bool = False) -> PhotoView:
    """Analyse an uploaded picture for display. Raises ImageError / ValueError with a user message."""
    *_, view = photo_steps(model, image, method, layer, explain_for, whole_image, first=False)
    return view


# The first answer's map: one forward and one partial backward pass a face, as on the webcam
FIRST_METHOD, FIRST_LAYER = LIVE_METHOD, LIVE_LAYER
# What a client is told when the server is too busy to take its photo: Gradio's own words for a full queue, which
# app.py also says past its workers' waiting room, so that a client meets one message either way.
BUSY = "Queue is full! Please try again."
PENDING = "Checking this heatmap: the chosen map, its verdict and the what-if follow in a moment."


def photo_steps(model: EmotionModel, image, method: str = DEFAULT_METHOD, layer: str = DEFAULT_LAYER,
                explain_for: str | None = PREDICTED, whole_image: bool = False, first: bool = True):
    """Analyse an uploaded picture for display in two steps: yields a PhotoView with the faces, labels,
    probabilities and Grad-CAM at layer3 (`FIRST_METHOD` at `FIRST_LAYER`: a pass a face, the verdict still
    to come), then the full one: the chosen map, its verdict, regions, what-if and Grad-CAM beside it (the
    verdicts are in the face cards, so the status line only says what was found). The faces are found once.
    `first=False` yields the full view only. Raises ImageError / ValueError with a user message."""
    method = resolve_method(method, controls=False)
    _refuse_why_not(method, explain_for)
    loaded = load_image(image)
    dets = [whole_image_face(loaded.rgb)] if whole_image else detect_faces(loaded.rgb, MIN_CONFIDENCE, DETECT_SIDE)
    if first and dets:
        quick = analyse(loaded, model, method=FIRST_METHOD, layer=FIRST_LAYER,
                        explain_class=_explain_class(explain_for), detections=dets)
        pending = [{"faithfulness": {"level": "pending", "verdict": PENDING},
                    "regions": face_region_shares(f, scale=quick.scale),
                    "region_baseline": face_region_areas(f, scale=quick.scale)} for f in quick.faces]
        yield PhotoView(annotate(quick), faces_html(quick.faces, pending, quick.method, quick.heatmap_name),
                        status(quick) + "\n\n_Checking the heatmaps..._", quick.to_json(with_heatmap=False))
    a, checks, result = checked(model, loaded, method, layer, explain_for, whole_image, with_heatmap=False,
                                detections=dets)
    yield PhotoView(annotate(a), faces_html(a.faces, checks, a.method, a.heatmap_name), status(a), result)


def status(a: Analysis) -> str:
    """The photo's status line: the faces and their labels, the method and layer of the heatmaps, the
    pipeline's messages and the model (each face's verdict is on its card, `emotion.view.face_card`)."""
    n = len(a.faces)
    lines = []
    if n:
        found = ", ".join(f"**{i + 1}.** {f.label} ({f.probabilities[f.label]:.0%})" for i, f in enumerate(a.faces))
        lines.append(f"{n} face{'s' if n > 1 else ''}: {found}. Heatmaps: {a.heatmap_name}.")
    lines += [f"_{m}_" for m in a.messages]
    if a.model:
        lines.append(f"Model: {model_name(a.model)}")
    return "\n\n".join(lines)


def predict(model: EmotionModel, image, method: str = DEFAULT_METHOD, layer: str = DEFAULT_LAYER,
            explain_for: str | None = PREDICTED, whole_image: bool = False) -> dict:
    """The API's answer: every face's box, label, seven probabilities, heatmap (model input size, 0..1),
    the heatmap's faithfulness against random maps, its share on each facial region, the answer with
    each region hidden (`what_if`), and Grad-CAM's map beside it with their agreement (`second_map`)."""
    return checked(model, image, method, layer, explain_for, whole_image, with_heatmap=True)[2]


def live_frame(model: EmotionModel, frame: np.ndarray | None, state: LiveState | None,
               method: str = LIVE_METHOD, layer: str = LIVE_LAYER, precision: str | None = None):
    """One webcam frame -> (frame with heatmaps and smoothed labels, smoothed probabilities, state).

    `precision` is resolved by emotion.precision.resolve_precision for this model's engine: None reads
    $EMOTION_PRECISION, else "auto" (float32 in ONNX Runtime; bf16 only where PyTorch runs it on AMX)."""
    state = state or LiveState()
    if frame is None:
        return None, None, state
    with model.turns.live():  # photos and videos wait between their batches while this frame is analysed
        return _live_frame(model, frame, state, method, layer, precision)


def _live_frame(model: EmotionModel, frame: np.ndarray, state: LiveState, method: str, layer: str,
                precision: str | None):
    # the detector every few frames, the faces followed between; the heatmaps every few frames, each face
    # keeping its last map between (emotion/live.py)
    loaded = load_image(frame)  # (an odd colour mode made RGB; a huge frame brought down to the working size)
    rgb = loaded.rgb
    t = time.perf_counter()
    followed, grey = state.faces_for(rgb)
    detected = followed is None
    dets = detect_faces(rgb, MIN_CONFIDENCE, LIVE_DETECT_SIDE)[:MAX_FACES] if detected else followed
    find_ms = (time.perf_counter() - t) * 1000
    method, layer = resolve_method(method, controls=False), resolve_layer(layer)
    explained = state.explain_due(dets, method, layer, detected)
    # one number format on every frame, heatmap or not
    precision = effective_precision(resolve_precision(precision, engine=model.engine), method, layer)
    # no mirror averaging (the config's tta_flip) on the live path: it costs one more forward pass a face
    a = analyse(loaded, model, method=method, layer=layer, detect_side=LIVE_DETECT_SIDE, flip=False,
                precision=precision, detections=dets, with_heatmaps=explained)
    a.timings_ms["detect"] = find_ms  # the detector's run, or following the faces on the other frames
    a.timings_ms["total"] += find_ms
    state.remember(dets, grey, detected)
    t = time.perf_counter()
    smoothed = state.update(a, model.labels, explained)
    img = annotate(a, heatmaps=True, probabilities=smoothed)
    state.timings_ms = {**a.timings_ms, "draw": (time.perf_counter() - t) * 1000}
    state.precision = a.precision
    return img, (smoothed[0] if smoothed else None), state


@dataclass
class VideoView:
    clip: str | None  # the clip with each face's label and heatmap drawn on it (H.264 MP4)
    timeline: str  # HTML: the probabilities over time per person, label changes marked
    csv: str | None  # one row per face and analysed frame
    status: str  # markdown: what was found, and any message for the user
    result: dict  # the API's JSON


KEEP_RESULTS_S = 3600  # a video's result files are deleted an hour after they were made


def result_folder(root) -> Path:
    """A new folder of its own under `root` for one request's files; folders older than KEEP_RESULTS_S go."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        try:
            if old.is_dir() and time.time() - old.stat().st_mtime > KEEP_RESULTS_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # another request removed it first
            pass
    return Path(tempfile.mkdtemp(prefix="video-", dir=root))


def video(model: EmotionModel, path, frames_per_second: float = DEFAULT_RATE, method: str = DEFAULT_METHOD,
          layer: str = DEFAULT_LAYER, folder=None, progress: Progress | None = None,
          check_every: float = CHECK_EVERY_S) -> VideoView:
    """Analyse an uploaded clip for display: the annotated clip and the CSV are written to `folder` (a new
    temporary folder when None); each person's full check at most every `check_every` seconds (emotion.clip).
    Raises VideoError / ValueError with a user message."""
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="emotion-video-"))
    stem = Path(str(path)).stem[:60] or "video"
    r = analyse_video(path, model, frames_per_second, method=method, layer=layer,
                      clip_path=folder / f"{stem}_annotated.mp4", progress=progress, check_every=check_every)
    csv_path = table.write_csv(table.video_rows(r), folder / f"{stem}_emotions.csv", r.labels)
    return VideoView(str(r.clip) if r.clip else None, timeline.svg_html(r), str(csv_path), video_status(r),
                     r.to_json())


def predict_video(model: EmotionModel, path, frames_per_second: float = DEFAULT_RATE,
                  method: str = DEFAULT_METHOD, layer: str = DEFAULT_LAYER,
                  progress: Progress | None = None, check_every: float = CHECK_EVERY_S) -> dict:
    """The API's answer for a video: per analysed frame and person, box, label, seven probabilities and, on
    the frames checked (a person's first, then every `check_every` seconds), the heatmap's verdict; the people
    seen and where their labels change (VideoResult.to_json)."""
    return analyse_video(path, model, frames_per_second, method=method, layer=layer, progress=progress,
                         check_every=check_every).to_json()


def video_status(r: VideoResult) -> str:
    every = "every frame" if r.every_frame else f"{r.rate:g} a second"
    lines = [f"**{r.name}**: {r.frames} frames analysed ({every}) over {r.duration:.1f} s."]
    people = r.people
    if people:
        parts = []
        for p in people:
            labels = Counter(row["smoothed_label"] for row in r.rows if row["person"] == p)
            top, n = labels.most_common(1)[0]
            parts.append(f"**person {p}** mostly {top} ({n / sum(labels.values()):.0%} of their frames)")
        changes = len(r.changes)
        lines.append(f"{len(people)} {'person' if len(people) == 1 else 'people'}: " + "; ".join(parts)
                     + f". {changes} change{'' if changes == 1 else 's'} of label.")
        levels = Counter(row["level"] for row in r.rows if row["level"])
        if levels:
            when = "every frame" if r.check_every == 0 else \
                f"each person's first frame, then every {r.check_every:g} s"
            lines.append(f"Checked on {r.frames_checked} of {r.frames} frames ({when}): {r.heatmap_name}; verdicts: "
                         + ", ".join(f"{n} {lvl}" for lvl, n in levels.most_common()) + ". "
                         + f"Heatmaps on the clip: {r.clip_heatmaps}.")
    lines += [f"_{m}_" for m in r.messages]
    if r.model:
        lines.append(f"Model: {model_name(r.model)}")
    return "\n\n".join(lines)
