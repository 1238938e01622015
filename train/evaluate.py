"""Score a model folder on a labelled split, through the same pipeline the app uses.

    python -m train.evaluate --weights weights --data ../shared/datasets/fer2013 --dataset fer2013 \\
        --split private_test --out eval/private_test

Writes OUT/metrics.json (accuracy, mean_class_accuracy, per_class_accuracy, confusion_matrix, n, ...)
and OUT/confusion_matrix.png, and prints the per-class table. Images are taken as already-cropped
faces unless --detect-faces is given (for uncropped photos: the largest face found is classified, and
a picture with no face found counts as wrong). --card records the result in the model card.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emotion.images import ImageError
from emotion.model import load_model
from emotion.pipeline import analyse
from train.data import list_split
from train.export import write_card
from train.metrics import scores

DEFAULT_SPLIT = {"fer2013": "private_test", "ferplus": "private_test", "rafdb": "test", "folder": None}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights", help="model folder, local-dir:PATH or hf-hub:owner/name")
    p.add_argument("--data", required=True)
    p.add_argument("--dataset", choices=["fer2013", "ferplus", "rafdb", "folder"], default="fer2013")
    p.add_argument("--labels", default=None, help="ferplus: per-file FER+ vote table for the folder layout "
                   "(without it, fer2013new.csv beside fer2013.csv)")
    p.add_argument("--split", default=None, help="fer2013: train, public_test, private_test; rafdb: train, test")
    p.add_argument("--detect-faces", action="store_true", help="find the face first (uncropped photos)")
    p.add_argument("--out", required=True, help="folder for metrics.json and confusion_matrix.png")
    p.add_argument("--limit", type=int, default=None, help="a fixed random subset of N images (quick checks)")
    p.add_argument("--card", action="store_true", help="add the result to the model folder's card")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def plot_confusion(cm: np.ndarray, labels, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    ConfusionMatrixDisplay(norm, display_labels=labels).plot(ax=ax, cmap="Blues", values_format=".2f",
                                                             colorbar=False)
    ax.set_title(title)
    ax.set_ylabel("true class (rows sum to 1)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    model = load_model(args.weights, fallback=False)
    split = args.split or DEFAULT_SPLIT[args.dataset]
    items = list_split(args.dataset, args.data, split, args.labels)
    if args.limit and args.limit < len(items):
        items = random.Random(0).sample(items, args.limit)
    y_true, y_pred, no_face, unreadable = [], [], 0, 0
    t0 = time.time()
    for source, label in tqdm(items, desc=f"{args.dataset}/{split}", disable=args.no_progress):
        y_true.append(label)
        try:
            a = analyse(source, model, whole_image=not args.detect_faces, with_heatmaps=False)
        except ImageError:
            unreadable += 1
            y_pred.append(-1)
            continue
        if not a.faces:
            no_face += 1
            y_pred.append(-1)  # nothing found counts as a wrong answer
        else:
            y_pred.append(model.labels.index(a.faces[0].label))
    m = scores(y_true, y_pred, model.labels)
    m.update({"dataset": args.dataset, "split": split, "detect_faces": args.detect_faces, "no_face": no_face,
              "unreadable": unreadable, "weights": model.source, "tta_flip": model.prep.tta_flip,
              "seconds": round(time.time() - t0, 1)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
    title = f"{args.dataset} {split}: accuracy {m['accuracy']:.1%}, mean-class {m['mean_class_accuracy']:.1%}"
    plot_confusion(np.array(m["confusion_matrix"]), model.labels, out / "confusion_matrix.png", title)
    print(title + f" (n={m['n']}{', no face: %d' % no_face if args.detect_faces else ''})")
    print("| class | accuracy | n |\n|---|---|---|")
    support = np.array(m["confusion_matrix"]).sum(1)
    for (c, v), n in zip(m["per_class_accuracy"].items(), support):
        print(f"| {c} | {'n/a' if v is None else f'{v:.1%}'} | {n} |")
    if args.card:
        name = f"{args.dataset} {split}" + (" (faces detected)" if args.detect_faces else "")
        write_card(model.source, evaluation=(name, {k: m[k] for k in
                   ("accuracy", "mean_class_accuracy", "per_class_accuracy", "confusion_matrix", "n")}))
    return m


if __name__ == "__main__":
    main()
