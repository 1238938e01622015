"""Many photos and videos at once (the command line): one row per face, side-by-side heatmaps if asked.

Each file goes through the same path as the app (emotion.service.checked for photos, emotion.clip for
videos). Written to the output folder:

    results.csv, results.jsonl   one row per face (emotion/table.py): photos' faces and videos' people per frame
    errors.csv                   the files that could not be read, and why (only when there were any)
    heatmaps/NAME_faceN.png      with `heatmaps`: each photo face as [face | heatmap | probabilities]
    NAME_annotated.mp4           with `heatmaps`: each video with its faces' labels and heatmaps drawn on
    NAME_timeline.png            each video's timeline (emotion/timeline.py)

A file that cannot be read is listed and skipped; the others are still analysed.
"""
from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from tqdm import tqdm

from emotion import table, timeline
from emotion.clip import CHECK_EVERY_S, analyse_video
from emotion.draw import face_panel
from emotion.explain import DEFAULT_LAYER, DEFAULT_METHOD
from emotion.model import EmotionModel
from emotion.service import checked
from emotion.video import DEFAULT_RATE, VIDEO_SUFFIXES, is_video

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class Summary:
    read: list[Path] = field(default_factory=list)  # files analysed (with or without faces)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # files that could not be read, and why
    skipped: list[Path] = field(default_factory=list)  # files in folders that are neither photos nor videos
    rows: int = 0
    video_seconds: float = 0.0  # seconds of video analysed
    video_time: float = 0.0  # seconds it took


def inputs(paths) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """(files to analyse, files in folders skipped by their type, paths not found). Folders are searched
    to any depth, in sorted order; hidden files are left out; a file named directly is always tried."""
    files, skipped, missing = [], [], []
    for p in map(Path, paths):
        if p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    f = Path(root) / name
                    if name.startswith("."):
                        continue
                    (files if f.suffix.lower() in PHOTO_SUFFIXES + VIDEO_SUFFIXES else skipped).append(f)
        elif p.is_file():
            files.append(p)
        else:
            missing.append((p, "not found"))
    return files, skipped, missing


class _Names:
    """A file-name stem for each input's outputs, unique within the run."""

    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, path: Path) -> str:
        stem, n = path.stem or "file", 1
        name = stem
        while name in self.used:
            n += 1
            name = f"{stem}-{n}"
        self.used.add(name)
        return name


def run(paths, out, model: EmotionModel, *, rate: float = DEFAULT_RATE, method: str = DEFAULT_METHOD,
        layer: str = DEFAULT_LAYER, whole_image: bool = False, heatmaps: bool = False,
        progress: bool = True, check_every: float = CHECK_EVERY_S) -> Summary:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files, skipped, missing = inputs(paths)
    summary = Summary(skipped=skipped, failed=list(missing))
    names = _Names()
    bar = tqdm(files, unit="file", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    with table.Writer(out / "results.csv", out / "results.jsonl", model.labels) as rows:
        for path in bar:
            bar.set_postfix_str(path.name[-40:], refresh=False)
            name = names(path)
            try:
                if is_video(path):
                    t = time.perf_counter()
                    step = lambda f, d: bar.set_postfix_str(f"{path.name[-30:]}: {d}")  # noqa: E731
                    r = analyse_video(path, model, rate, method=method, layer=layer, progress=step,
                                      clip_path=out / f"{name}_annotated.mp4" if heatmaps else None,
                                      check_every=check_every)
                    summary.video_time += time.perf_counter() - t
                    summary.video_seconds += r.duration
                    new = table.video_rows(r)
                    timeline.save_png(r, out / f"{name}_timeline.png")
                    notes = r.messages
                else:
                    a, _, result = checked(model, path, method, layer, None, whole_image, with_heatmap=False)
                    new = table.photo_rows(str(path), result)
                    if heatmaps and a.faces:
                        (out / "heatmaps").mkdir(exist_ok=True)
                        for i, face in enumerate(a.faces):
                            panel = face_panel(face, i + 1)
                            cv2.imwrite(str(out / "heatmaps" / f"{name}_face{i + 1}.png"),
                                        cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
                    notes = result["messages"]
            except ValueError as e:  # ImageError, VideoError: a message for the user
                summary.failed.append((path, str(e)))
                continue
            except Exception as e:  # noqa: BLE001 -- one bad file must not end the run
                summary.failed.append((path, f"could not be analysed ({type(e).__name__}: {e})"))
                continue
            for row in new:
                row["file"] = str(path)
            rows.write(new)
            summary.read.append(path)
            summary.rows += len(new)
            for note in notes:
                tqdm.write(f"{path}: {note}", file=sys.stderr)
    if summary.failed:
        with open(out / "errors.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["file", "error"])
            w.writerows((str(p), msg) for p, msg in summary.failed)
    return summary
