"""Labelled face data sets, read by path and held in memory as one uint8 tensor per split.

Supported layouts (`--dataset`):
- `fer2013`: the Kaggle folder layout `train/<class>/*.jpg`, `test/<class>/{PublicTest,PrivateTest}_*.jpg`,
  or the original `fer2013.csv` (columns emotion, pixels, Usage). Splits: train, public_test, private_test.
- `rafdb`: the official `basic/` layout (`EmoLabel/list_patition_label.txt`, `Image/aligned/*_aligned.jpg`
  or `Image/original/*.jpg`) or the Kaggle `DATASET/{train,test}/1..7/` layout with `{train,test}_labels.csv`.
  Splits: train, test.
- `folder`: `<class>/<image>` under the root, or under `root/<split>/`.
Every layout yields the same class order, `emotion.model.CLASSES`.
"""
from __future__ import annotations

import csv
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from emotion.model import CLASSES, face_pixels

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# FER2013's integer labels (fer2013.csv) and RAF-DB's 1..7, as names in our vocabulary.
FER_CSV_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
RAFDB_LABELS = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}
FER_SPLITS = {"train": "Training", "public_test": "PublicTest", "private_test": "PrivateTest"}
# Other spellings of our class names that folder data sets use.
ALIASES = {"anger": "angry", "happiness": "happy", "sadness": "sad", "surprised": "surprise",
           "fearful": "fear", "disgusted": "disgust", "contempt": None}


@dataclass
class Split:
    """Images N x C x H x W (uint8, C = 1 for grey, 3 for colour), labels N (int64), and where each came from."""

    images: torch.Tensor
    labels: torch.Tensor
    sources: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(CLASSES)).tolist()


class DatasetError(ValueError):
    """The data set is not where or what the caller said."""


def class_index(name: str) -> int | None:
    """Our class index for a folder or label name, None for classes we do not model (e.g. contempt)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return CLASSES.index(key) if key in CLASSES else None


# ---------------------------------------------------------------- listing: (source, label) per layout
def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folders(root: Path) -> list[tuple[Path, int]]:
    found = [(d, class_index(d.name)) for d in sorted(root.iterdir()) if d.is_dir()]
    return [(d, i) for d, i in found if i is not None]


def list_fer2013(root: Path, split: str) -> list[tuple[object, int]]:
    if split not in FER_SPLITS:
        raise DatasetError(f"FER2013 split must be one of {', '.join(FER_SPLITS)}, not {split!r}.")
    csv_file = root if root.suffix == ".csv" else root / "fer2013.csv"
    if csv_file.is_file():
        items = []
        with csv_file.open(newline="") as f:
            for row in csv.DictReader(f):
                if row["Usage"].strip() == FER_SPLITS[split]:
                    pixels = np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48)
                    items.append((pixels, CLASSES.index(FER_CSV_LABELS[int(row["emotion"])])))
        return items
    folder = root / ("train" if split == "train" else "test")
    if not folder.is_dir():
        raise DatasetError(f"No fer2013.csv and no {folder}/ : {root} is not a FER2013 folder.")
    prefix = FER_SPLITS[split] + "_"
    return [(p, label) for d, label in _class_folders(folder) for p in _images_in(d)
            if split == "train" or p.name.startswith(prefix)]


def list_rafdb(root: Path, split: str) -> list[tuple[object, int]]:
    if split not in ("train", "test"):
        raise DatasetError(f"RAF-DB split must be train or test, not {split!r}.")
    basic = root / "basic" if (root / "basic").is_dir() else root
    label_file = basic / "EmoLabel" / "list_patition_label.txt"
    if label_file.is_file():  # official layout
        aligned = basic / "Image" / "aligned"
        items = []
        for line in label_file.read_text().splitlines():
            if not line.strip():
                continue
            name, label = line.split()[:2]
            if not name.startswith(split + "_"):
                continue
            stem = Path(name).stem
            path = aligned / f"{stem}_aligned.jpg" if aligned.is_dir() else basic / "Image" / "original" / name
            items.append((path, CLASSES.index(RAFDB_LABELS[int(label)])))
        return items
    dataset = root / "DATASET" if (root / "DATASET").is_dir() else root
    labels_csv = dataset.parent / f"{split}_labels.csv"
    if not labels_csv.is_file():
        labels_csv = dataset / f"{split}_labels.csv"
    if labels_csv.is_file():  # Kaggle layout with its label file: image,label
        with labels_csv.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return [(dataset / split / r["label"].strip() / r["image"].strip(),
                 CLASSES.index(RAFDB_LABELS[int(r["label"])])) for r in rows]
    folder = dataset / split
    if not folder.is_dir():
        raise DatasetError(f"{root} has neither basic/EmoLabel/list_patition_label.txt nor DATASET/{split}/1..7.")
    return [(p, CLASSES.index(RAFDB_LABELS[int(d.name)])) for d in sorted(folder.iterdir())
            if d.is_dir() and d.name.isdigit() and int(d.name) in RAFDB_LABELS for p in _images_in(d)]


def list_folder(root: Path, split: str | None) -> list[tuple[object, int]]:
    """`root/<class>/*`, or `root/<split>/<class>/*`; no split means root/train when it exists, else root."""
    if split:
        base = root / split
        if not base.is_dir():
            raise DatasetError(f"No {split}/ folder under {root}.")
    else:
        base = root / "train" if (root / "train").is_dir() else root
    classes = _class_folders(base)
    if not classes:
        raise DatasetError(f"{base} holds no folders named after the classes ({', '.join(CLASSES)}).")
    return [(p, label) for d, label in classes for p in _images_in(d)]


def list_split(dataset: str, root: str | Path, split: str | None) -> list[tuple[object, int]]:
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"Data set path not found: {root}")
    if dataset == "fer2013":
        items = list_fer2013(root, split or "train")
    elif dataset == "rafdb":
        items = list_rafdb(root, split or "train")
    elif dataset == "folder":
        items = list_folder(root, split)
    else:
        raise DatasetError(f"Unknown data set kind {dataset!r}: use fer2013, rafdb or folder.")
    if not items:
        raise DatasetError(f"No images found for {dataset} split {split!r} under {root}.")
    return items


# ---------------------------------------------------------------- loading into memory
def _read(source: object, size: int, grayscale: bool) -> np.ndarray:
    """One picture as C x size x size uint8, resized exactly as the app resizes a face crop."""
    if isinstance(source, np.ndarray):
        img = Image.fromarray(source)
    else:
        with Image.open(source) as f:
            img = ImageOps.exif_transpose(f)
            img.load()
    arr = face_pixels(np.asarray(img.convert("RGB")), size, grayscale)
    return arr[None] if grayscale else arr.transpose(2, 0, 1)


def load_split(dataset: str, root: str | Path, split: str | None, size: int, grayscale: bool = True,
               limit: int | None = None, seed: int = 0, workers: int = 8) -> Split:
    """Read a split into memory at `size` x `size`. `limit` keeps a random subset (for quick runs)."""
    items = list_split(dataset, root, split)
    if limit and limit < len(items):
        items = random.Random(seed).sample(items, limit)
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(pool.map(lambda it: _read(it[0], size, grayscale), items))
    images = torch.from_numpy(np.stack(arrays))
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    sources = [str(s) if not isinstance(s, np.ndarray) else f"{dataset}.csv:{split}:{i}" for i, (s, _) in enumerate(items)]
    return Split(images, labels, sources)


def native_size(dataset: str, root: str | Path, split: str | None) -> int | None:
    """The side of the data set's images when they are all one square size (48 for FER2013), else None."""
    items = list_split(dataset, root, split)[:50]
    sizes = set()
    for source, _ in items:
        if isinstance(source, np.ndarray):
            sizes.add(source.shape[:2])
        else:
            with Image.open(source) as f:
                sizes.add(f.size[::-1])
    if len(sizes) == 1:
        h, w = sizes.pop()
        return h if h == w else None
    return None


def split_off(split: Split, fraction: float, seed: int = 0) -> tuple[Split, Split]:
    """A stratified random hold-out, for folder data sets that ship no validation split."""
    g = torch.Generator().manual_seed(seed)
    held = []
    for c in range(len(CLASSES)):
        idx = (split.labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        held.append(idx[: max(1, round(len(idx) * fraction))] if len(idx) > 1 else idx[:0])
    held = torch.cat(held)
    mask = torch.ones(len(split), dtype=torch.bool)
    mask[held] = False
    keep = mask.nonzero().flatten()

    def take(idx):
        return Split(split.images[idx], split.labels[idx], [split.sources[i] for i in idx.tolist()])

    return take(keep), take(held)
