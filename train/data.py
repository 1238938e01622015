"""Labelled face data sets, read by path and held in memory as one uint8 tensor per split.

Supported layouts (`--dataset`):
- `fer2013`: the Kaggle folder layout `train/<class>/*.jpg`, `test/<class>/{PublicTest,PrivateTest}_*.jpg`,
  or the original `fer2013.csv` (columns emotion, pixels, Usage). Splits: train, public_test, private_test.
- `rafdb`: the official `basic/` layout (`EmoLabel/list_patition_label.txt`, `Image/aligned/*_aligned.jpg`
  or `Image/original/*.jpg`) or the Kaggle `DATASET/{train,test}/1..7/` layout with `{train,test}_labels.csv`.
  Splits: train, test.
  RAF-DB's manual annotations (`basic/Annotation/manual/<image>_manu_attri.txt`, or the `manual.zip` it
  ships) give each face's gender, race and age group (`rafdb_attributes`), the audit's fairness groups.
- `ferplus`: FER2013's images with Microsoft's FER+ votes (ten taggers per face) instead of its own labels:
  either the published `fer2013new.csv` beside `fer2013.csv` (row-aligned), or the folder layout above with a
  per-file table (`--labels`, columns `file` relative to the root, `usage`, and the ten vote columns).
  Training targets are the vote distribution over our seven classes; test labels are the single top vote.
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
# RAF-DB's manual annotations: the codes on lines 6, 7 and 8 of each <image>_manu_attri.txt
RAFDB_ATTRIBUTES = {"gender": ("male", "female", "unsure"), "race": ("Caucasian", "African-American", "Asian"),
                    "age": ("0-3", "4-19", "20-39", "40-69", "70+")}
RAFDB_ANNOTATION = "_manu_attri.txt"
FER_SPLITS = {"train": "Training", "public_test": "PublicTest", "private_test": "PrivateTest"}
# FER+'s ten vote columns: our seven classes first (by name), then the three we do not model.
FERPLUS_EXTRA = ("contempt", "unknown", "not_face")
# fer2013new.csv spells them its own way
FERPLUS_CSV_COLUMNS = {"neutral": "neutral", "happy": "happiness", "surprise": "surprise", "sad": "sadness",
                       "angry": "anger", "disgust": "disgust", "fear": "fear", "contempt": "contempt",
                       "unknown": "unknown", "not_face": "NF"}
# Other spellings of our class names that folder data sets use.
ALIASES = {"anger": "angry", "happiness": "happy", "sadness": "sad", "surprised": "surprise",
           "fearful": "fear", "disgusted": "disgust", "contempt": None}


@dataclass
class Split:
    """Images N x C x H x W (uint8, C = 1 for grey, 3 for colour), labels N (int64), and where each came from."""

    images: torch.Tensor
    labels: torch.Tensor
    sources: list[str]
    targets: torch.Tensor | None = None  # N x 7 soft targets (FER+ vote shares), None for hard labels
    originals: torch.Tensor | None = None  # FER+ only: FER2013's own label of each face (-1 where unknown)

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


def rafdb_attributes(root: str | Path) -> tuple[str, dict[str, dict[str, str]]]:
    """Where RAF-DB's manual annotations were read, and {image file name: {"gender", "race", "age": group}}.

    Each `basic/Annotation/manual/<image>_manu_attri.txt` holds five landmark lines (x y), then the gender
    (0 male, 1 female, 2 unsure), race (0 Caucasian, 1 African-American, 2 Asian) and age group (0: 0-3,
    1: 4-19, 2: 20-39, 3: 40-69, 4: 70+) codes. The folder may also still be the `manual.zip` RAF-DB ships.
    Rows are keyed by both names of the image (`train_00001.jpg`, `train_00001_aligned.jpg`)."""
    root = Path(root)
    basic = root / "basic" if (root / "basic").is_dir() else root
    folder, packed = basic / "Annotation" / "manual", basic / "Annotation" / "manual.zip"
    if folder.is_dir():
        files = [(p.name, p.read_text) for p in sorted(folder.rglob("*" + RAFDB_ANNOTATION))]
        origin = folder
    elif packed.is_file():
        import zipfile

        z = zipfile.ZipFile(packed)
        files = [(Path(n).name, lambda n=n: z.read(n).decode()) for n in sorted(z.namelist())
                 if n.endswith(RAFDB_ANNOTATION)]
        origin = packed
    else:
        raise DatasetError(f"RAF-DB's manual annotations are not in {folder} (nor {packed.name}): no groups.")
    if not files:
        raise DatasetError(f"{origin} holds no *{RAFDB_ANNOTATION} files.")
    rows = {}
    for name, read in files:
        lines = [line.split() for line in read().splitlines() if line.strip()]
        try:
            codes = [int(lines[5 + k][0]) for k in range(len(RAFDB_ATTRIBUTES))]
        except (IndexError, ValueError) as e:
            raise DatasetError(f"{origin}/{name}: expected five landmark lines, then the gender, race and age codes "
                               f"({e})") from e
        row = {}
        for (attr, groups), code in zip(RAFDB_ATTRIBUTES.items(), codes):
            if not 0 <= code < len(groups):
                raise DatasetError(f"{origin}/{name}: {attr} code {code} is none of RAF-DB's "
                                   f"({', '.join(f'{i} {g}' for i, g in enumerate(groups))})")
            row[attr] = groups[code]
        stem = name[:-len(RAFDB_ANNOTATION)]
        rows[f"{stem}.jpg"] = rows[f"{stem}_aligned.jpg"] = row
    return str(origin), rows


def ferplus_rows(root: Path, split: str, labels: str | Path | None = None) -> list[tuple[object, list[int], int | None]]:
    """(source, ten votes in CLASSES + FERPLUS_EXTRA order, FER2013's own label as a class index or None) for
    every image of a FER2013 split. The table's own label is its `fer2013_label` column, else the class folder
    of its `file` (`train/<class>/...`); the csv's is its `emotion` column."""
    if split not in FER_SPLITS:
        raise DatasetError(f"FER+ split must be one of {', '.join(FER_SPLITS)}, not {split!r}.")
    order = CLASSES + FERPLUS_EXTRA
    if labels:  # per-file table beside the folder layout
        table = Path(labels)
        if not table.is_file():
            raise DatasetError(f"FER+ label table not found: {table}")
        with table.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["usage"].strip() == FER_SPLITS[split]]
        missing = [c for c in ("file",) + order if rows and c not in rows[0]]
        if missing:
            raise DatasetError(f"{table} lacks the columns {', '.join(missing)}.")
        def original(r):
            parts = Path(r["file"]).parts
            return class_index(r.get("fer2013_label") or (parts[-2] if len(parts) > 1 else ""))

        return [(root / r["file"], [int(float(r[c])) for c in order], original(r)) for r in rows]
    base = root.parent if root.suffix == ".csv" else root
    fer_csv, new_csv = (root if root.suffix == ".csv" else base / "fer2013.csv"), base / "fer2013new.csv"
    if not (fer_csv.is_file() and new_csv.is_file()):
        raise DatasetError(f"FER+ needs fer2013.csv and fer2013new.csv in {base}, or a label table (--labels) "
                           "for the folder layout.")
    pixels = {i: (row["pixels"], row["Usage"].strip(), row.get("emotion")) for i, row in
              enumerate(csv.DictReader(fer_csv.open(newline="")))}
    out = []
    with new_csv.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            usage = row["Usage"].strip()
            if usage != FER_SPLITS[split]:
                continue
            if pixels[i][1] != usage:
                raise DatasetError(f"{new_csv} row {i} is {usage} but {fer_csv} says {pixels[i][1]}: "
                                   "the two files are not row-aligned.")
            votes = [int(float(row[FERPLUS_CSV_COLUMNS[c]] or 0)) for c in order]
            own = pixels[i][2]
            out.append((np.array(pixels[i][0].split(), dtype=np.uint8).reshape(48, 48), votes,
                        class_index(FER_CSV_LABELS[int(own)]) if own not in (None, "") else None))
    return out


def ferplus_label(votes: list[int], strict: bool) -> int | None:
    """The face's class from its ten votes, or None when FER+ does not give it one of our seven.

    The top vote over all ten categories must be one of our classes (so not-a-face, unknown and contempt
    faces are left out). `strict` (test sets) also leaves out ties between classes, as the FER+ test set does.
    """
    ours, other = votes[:len(CLASSES)], votes[len(CLASSES):]
    top = max(ours)
    if top == 0 or top <= max(other):
        return None
    if strict and ours.count(top) > 1:
        return None
    return ours.index(top)


def ferplus_target(votes: list[int]) -> list[float]:
    """The vote distribution over our seven classes, with single votes dropped as noise (as FER+'s own code)."""
    ours = [v if v > 1 else 0 for v in votes[:len(CLASSES)]]
    if sum(ours) == 0:
        ours = list(votes[:len(CLASSES)])
    total = sum(ours)
    return [v / total for v in ours]


def list_ferplus(root: Path, split: str, labels=None) -> list[tuple[object, int, list[float], int | None]]:
    """(source, top-vote class, soft target, FER2013's own label) for the faces FER+ labels with one of our
    classes."""
    strict = split != "train"
    items = []
    for source, votes, own in ferplus_rows(root, split, labels):
        label = ferplus_label(votes, strict)
        if label is not None:
            items.append((source, label, ferplus_target(votes), own))
    return items


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


def list_split(dataset: str, root: str | Path, split: str | None, labels=None) -> list[tuple[object, int]]:
    """(source, class index) for every image of a split; `labels` is FER+'s per-file table (ferplus only)."""
    return [it[:2] for it in _list(dataset, root, split, labels)]


def _list(dataset: str, root: str | Path, split: str | None, labels=None) -> list[tuple]:
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"Data set path not found: {root}")
    if dataset == "ferplus":
        items = list_ferplus(root, split or "train", labels)
    elif dataset == "fer2013":
        items = list_fer2013(root, split or "train")
    elif dataset == "rafdb":
        items = list_rafdb(root, split or "train")
    elif dataset == "folder":
        items = list_folder(root, split)
    else:
        raise DatasetError(f"Unknown data set kind {dataset!r}: use fer2013, ferplus, rafdb or folder.")
    if not items:
        raise DatasetError(f"No images found for {dataset} split {split!r} under {root}.")
    return items


# ---------------------------------------------------------------- loading into memory
def _read(source: object, size: int, grayscale: bool, native_size: int | None = None) -> np.ndarray:
    """One picture as C x size x size uint8, resized exactly as the app resizes a face crop (for a model whose
    training pictures were `native_size` pixels: see emotion.model.face_pixels)."""
    if isinstance(source, np.ndarray):
        img = Image.fromarray(source)
    else:
        with Image.open(source) as f:
            img = ImageOps.exif_transpose(f)
            img.load()
    arr = face_pixels(np.asarray(img.convert("RGB")), size, grayscale, native_size)
    return arr[None] if grayscale else arr.transpose(2, 0, 1)


def load_split(dataset: str, root: str | Path, split: str | None, size: int, grayscale: bool = True,
               limit: int | None = None, seed: int = 0, workers: int = 8, labels=None,
               native_size: int | None = None) -> Split:
    """Read a split into memory at `size` x `size`. `limit` keeps a random subset (for quick runs).
    `native_size`: the training pictures' side, so a validation split is read as the app reads faces."""
    items = _list(dataset, root, split, labels)
    if limit and limit < len(items):
        items = random.Random(seed).sample(items, limit)
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(pool.map(lambda it: _read(it[0], size, grayscale, native_size), items))
    images = torch.from_numpy(np.stack(arrays))
    classes = torch.tensor([it[1] for it in items], dtype=torch.int64)
    sources = [str(it[0]) if not isinstance(it[0], np.ndarray) else f"{dataset}.csv:{split}:{i}"
               for i, it in enumerate(items)]
    targets = torch.tensor([it[2] for it in items], dtype=torch.float32) if len(items[0]) > 2 else None
    originals = torch.tensor([-1 if it[3] is None else it[3] for it in items]) if len(items[0]) > 3 else None
    return Split(images, classes, sources, targets, originals)


def native_size(dataset: str, root: str | Path, split: str | None, labels=None) -> int | None:
    """The side of the data set's images when they are all one square size (48 for FER2013), else None."""
    items = list_split(dataset, root, split, labels)[:50]
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
        targets = None if split.targets is None else split.targets[idx]
        originals = split.originals[idx] if split.originals is not None else None
        return Split(split.images[idx], split.labels[idx], [split.sources[i] for i in idx.tolist()], targets, originals)

    return take(keep), take(held)
