"""The one path from a picture to labelled, explained faces. The app, the API and the evaluation call it.

    image --load_image--> upright RGB --detect_faces--> boxes --cut--> square crops
          --prep.to_input--> batch --explain--> logits + one heatmap per face --> Analysis
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from emotion.explain import (DEFAULT_LAYER, DEFAULT_METHOD, EVERY_CLASS, effective_precision, every_class, explain,
                             grid_side, heatmap_name, pick, resolve_layer, resolve_method)
from emotion.faces import DETECT_SIDE, MAX_FACES, MIN_CONFIDENCE, Detection, cut, detect_faces, whole_image_face
from emotion.images import Loaded, load_image
from emotion.model import EmotionModel, mirror_average, mirrored
from emotion.precision import DTYPES

PREDICTED = "predicted class"  # as a class to explain: each face's own prediction (the same as None)
NO_FACE = ("No face found. Try a photo where the face is larger, frontal and well lit, or tick "
           "\"the picture is one face\" for a photo that is already cropped to a face.")


@dataclass
class FaceResult:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the original picture's pixels (after EXIF rotation)
    detector_score: float
    label: str
    probabilities: dict[str, float]
    explained: str  # the class the heatmap is for
    heatmap: np.ndarray  # float32 0..1, model input size, over `crop`
    crop: np.ndarray  # the RGB square the model saw (before resizing)
    crop_box: tuple[int, int, int, int]  # that square in the analysed picture's pixels (may leave the picture)
    heatmap_box: tuple[int, int, int, int]  # `crop_box` in the original picture's pixels: what the heatmap covers
    landmarks: tuple[tuple[float, float], ...] = ()  # in the analysed picture's pixels
    # every class's map, where the method makes them all in the same passes (explain.EVERY_CLASS), else None
    class_maps: np.ndarray | None = None

    def to_json(self, with_heatmap: bool = True) -> dict:
        out = {"box": list(self.box), "heatmap_box": list(self.heatmap_box),
               "detector_score": round(self.detector_score, 3), "label": self.label,
               "probabilities": {k: round(v, 5) for k, v in self.probabilities.items()},
               "explained_class": self.explained}
        if with_heatmap:
            out["heatmap"] = np.round(self.heatmap, 3).tolist()
        return out


@dataclass
class Analysis:
    image: np.ndarray  # the RGB picture analysed (upright, scaled to at most WORK_SIDE)
    scale: float  # analysed size / original size
    faces: list[FaceResult]
    messages: list[str] = field(default_factory=list)
    method: str = DEFAULT_METHOD
    layer: str = DEFAULT_LAYER
    timings_ms: dict[str, float] = field(default_factory=dict)
    model: dict = field(default_factory=dict)  # which model answered: EmotionModel.describe()
    original_size: tuple[int, int] | None = None  # (width, height) of the picture given, after EXIF rotation
    precision: str = "fp32"  # what the network computed in: "fp32", or "bf16" (the webcam path's Grad-CAM)
    grid: int = 0  # cells across the heatmap's layer (explain.grid_side): its own resolution over the face

    @property
    def heatmap_name(self) -> str:
        """The heatmaps' method, layer and grid, as the app names them."""
        return heatmap_name(self.method, self.layer, self.grid)

    def to_json(self, with_heatmap: bool = True) -> dict:
        h, w = self.image.shape[:2]
        size = self.original_size or (round(w / self.scale), round(h / self.scale))
        return {"faces": [f.to_json(with_heatmap) for f in self.faces], "messages": self.messages,
                "method": self.method, "layer": self.layer.split()[0], "grid": [self.grid, self.grid],
                "image_size": list(size),
                "model": self.model}


def original_square(square: tuple[int, int, int, int], scale: float) -> tuple[int, int, int, int]:
    """A square in the analysed picture's pixels, in the original picture's (`scale`: analysed / original),
    still a square."""
    x0, y0, x1, _ = square
    left, top, side = (int(round(v / scale)) for v in (x0, y0, x1 - x0))
    return left, top, left + side, top + side


def resolve_class(name: str | None, labels) -> str | None:
    """The model's own spelling of a class name given in any case; None for the predicted class."""
    if name is None or name.strip().lower() == PREDICTED:
        return None
    for label in labels:
        if label.lower() == name.strip().lower():
            return label
    raise ValueError(f"Unknown class {name!r}; choose from {PREDICTED}, {', '.join(labels)}.")


def analyse(image, model: EmotionModel, *, method: str = DEFAULT_METHOD, layer: str = DEFAULT_LAYER,
            explain_class: str | None = None, whole_image: bool = False, max_faces: int = MAX_FACES,
            min_confidence: float = MIN_CONFIDENCE, with_heatmaps: bool = True,
            detect_side: int = DETECT_SIDE, flip: bool | None = None, precision: str = "fp32",
            detections: list[Detection] | None = None) -> Analysis:
    """Find, classify and explain every face in `image` (path, bytes, PIL image or numpy array).

    `explain_class` names the class every heatmap is for ("why not X?"); None explains each face's own
    prediction. `with_heatmaps=False` (evaluation) skips the explanation and leaves heatmaps empty.
    `detect_side` is the longer side the face detector sees (smaller is faster, but misses small faces).
    `flip` averages each prediction with the mirrored face's (one more forward pass a face); None: as the
    model's config says (`tta_flip`). `precision` "bf16" (the webcam path, emotion/precision.py) classifies
    and explains with the model's bfloat16 copy where emotion.explain.effective_precision allows, else in
    "fp32"; the Analysis says which. `detections` (in the decoded picture's pixels: give the `Loaded`
    picture they were found on) stand in for the detector's (the webcam path follows faces between its runs).
    Raises `emotion.images.ImageError` for input that is not a usable picture.
    """
    layer = resolve_layer(layer)
    flip = model.prep.tta_flip if flip is None else flip
    method = resolve_method(method, controls=False)
    explain_class = resolve_class(explain_class, model.labels)
    if precision not in DTYPES:
        raise ValueError(f"Unknown precision {precision!r}; choose from {', '.join(DTYPES)}.")
    if with_heatmaps:  # one network for the label and its heatmap
        precision = effective_precision(precision, method, layer)
    t = {"start": time.perf_counter()}
    loaded: Loaded = image if isinstance(image, Loaded) else load_image(image)
    rgb, messages = loaded.rgb, list(loaded.notes)
    t["decode"] = time.perf_counter()
    if detections is not None:
        dets: list[Detection] = list(detections)
    else:
        dets = [whole_image_face(rgb)] if whole_image else detect_faces(rgb, min_confidence, detect_side)
    t["detect"] = time.perf_counter()
    if not dets:
        messages.append(NO_FACE)
    elif len(dets) > max_faces:
        messages.append(f"{len(dets)} faces found; the {max_faces} largest were analysed.")
        dets = dets[:max_faces]
    faces = []
    if dets:
        squares = [model.prep.square(d, rgb.shape) for d in dets]
        crops = [cut(rgb, sq) for sq in squares]
        x = model.prep.to_input(crops)
        t["preprocess"] = time.perf_counter()
        target = None if explain_class is None else model.labels.index(explain_class)
        if with_heatmaps:
            mirror = model.logits(mirrored(x), precision) if flip else None
            # with the mirror, the label shown (and explained) comes from the averaged prediction
            if method in EVERY_CLASS:  # every class's map from the same passes: the checks reuse them
                logits, every = every_class(model, x, layer)
                maps = pick(every, logits, [target] * len(crops), mirror)
            else:
                logits, maps = explain(model, x, [target] * len(crops), method, layer, mirror_logits=mirror,
                                       precision=precision)
                every = [None] * len(crops)
            probs = mirror_average(logits, mirror).softmax(1).numpy()
        else:
            probs = model.predict(crops, flip=flip, precision=precision)
            maps = np.zeros((len(crops), 0, 0), np.float32)
            every = [None] * len(crops)
        t["classify_explain"] = time.perf_counter()
        for d, sq, crop, p, m, all_maps in zip(dets, squares, crops, probs, maps, every):
            label = model.labels[int(p.argmax())]
            faces.append(FaceResult(
                box=tuple(int(round(v / loaded.scale)) for v in d.box), detector_score=d.score, label=label,
                probabilities={c: float(v) for c, v in zip(model.labels, p)},
                explained=explain_class or label, heatmap=m, crop=crop, crop_box=sq,
                heatmap_box=original_square(sq, loaded.scale), landmarks=d.landmarks, class_maps=all_maps))
    stamps = list(t.items())
    timings = {name: (stamps[i][1] - stamps[i - 1][1]) * 1000 for i, (name, _) in enumerate(stamps) if i}
    timings["total"] = (stamps[-1][1] - stamps[0][1]) * 1000
    return Analysis(rgb, loaded.scale, faces, messages, method, layer, timings, model.describe(),
                    tuple(loaded.original_size), precision,
                    grid_side(model.net, layer, model.prep.size) if with_heatmaps else 0)

