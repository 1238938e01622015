"""Results as rows, one per face: the same columns for photos and video frames, written as CSV and JSONL.

A row (dict): `file`, `kind` ("photo" or "video"), `time` (seconds into the video; None for a photo),
`face` (a photo's face number, 1 = largest, or a video's person id), `box` (x0, y0, x1, y1), `label`,
`probabilities` ({class: p}), `smoothed_label` (videos: the label averaged over time, as the clip shows it),
`checked` (whether the face's heatmap was checked: every photo face; a video's on its key frames, emotion/clip.py),
`level` and `verdict` (how far to trust the face's heatmap; None where not checked), `what_if` (the answer with each facial region
hidden, emotion/whatif.py: per region the label and the explained class's probability, and a sentence).
The CSV spreads the box and the probabilities over one column each, named by the model's classes, and
gives the what-if as its sentence and, per region, the explained class's probability with it hidden.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from emotion.whatif import HIDDEN, compact

FIELDS = ("file", "kind", "time", "face", "box", "label", "probabilities", "smoothed_label", "checked", "level",
          "verdict", "what_if")


def photo_rows(name: str, result: dict) -> list[dict]:
    """Rows of one photo from its API answer (emotion.service.predict's JSON)."""
    return [{"file": name, "kind": "photo", "time": None, "face": i + 1, "box": f["box"], "label": f["label"],
             "probabilities": f["probabilities"], "smoothed_label": None, "checked": "faithfulness" in f,
             "level": f.get("faithfulness", {}).get("level"), "verdict": f.get("faithfulness", {}).get("verdict"),
             "what_if": compact(f["what_if"]) if f.get("what_if") else None}
            for i, f in enumerate(result["faces"])]


def video_rows(result) -> list[dict]:
    """Rows of one video from its emotion.clip.VideoResult."""
    return [{"file": result.name, "kind": "video", "time": r["time"], "face": r["person"], "box": r["box"],
             "label": r["label"], "probabilities": r["probabilities"], "smoothed_label": r["smoothed_label"],
             "checked": r["checked"], "level": r["level"], "verdict": r["verdict"], "what_if": r.get("what_if")} for r in result.rows]


def csv_header(labels) -> list[str]:
    return ["file", "kind", "time", "face", "x0", "y0", "x1", "y1", "label", *labels, "smoothed_label", "checked",
            "verdict_level", "verdict", "what_if", *(f"without_{r}" for r in HIDDEN)]


def csv_row(row: dict, labels) -> list:
    blank = lambda v: "" if v is None else v  # noqa: E731
    w = row.get("what_if")
    return [row["file"], row["kind"], blank(row["time"]), row["face"], *row["box"], row["label"],
            *(row["probabilities"].get(c, "") for c in labels), blank(row["smoothed_label"]), row["checked"],
            blank(row["level"]), blank(row["verdict"]), blank(w and w["sentence"]),
            *(blank(w and w["regions"][r]["probability"]) for r in HIDDEN)]


class Writer:
    """CSV and JSONL files side by side, appended to as rows come (a long run keeps what it has done)."""

    def __init__(self, csv_path, jsonl_path, labels):
        self.labels = tuple(labels)
        self.paths = (Path(csv_path), Path(jsonl_path) if jsonl_path else None)
        self._csv_file = open(self.paths[0], "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(csv_header(self.labels))
        self._jsonl = open(self.paths[1], "w", encoding="utf-8") if self.paths[1] else None
        self.count = 0

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            self._csv.writerow(csv_row(row, self.labels))
            if self._jsonl is not None:
                self._jsonl.write(json.dumps({k: row[k] for k in FIELDS}) + "\n")
            self.count += 1
        self._csv_file.flush()
        if self._jsonl is not None:
            self._jsonl.flush()

    def close(self) -> None:
        self._csv_file.close()
        if self._jsonl is not None:
            self._jsonl.close()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_csv(rows: list[dict], path, labels) -> Path:
    with Writer(path, None, labels) as w:
        w.write(rows)
    return Path(path)
