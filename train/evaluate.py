"""Score a model folder on a labelled split, through the same pipeline the app uses.

    python -m train.evaluate --weights weights --data ../shared/datasets/fer2013 --dataset fer2013 \\
        --split private_test --out eval/private_test

Writes OUT/metrics.json (accuracy, mean_class_accuracy, per_class_accuracy, confusion_matrix, n, ...)
and OUT/confusion_matrix.png, and prints the per-class table. Images are taken as already-cropped
faces unless --detect-faces is given (for uncropped photos: the largest face found is classified).
The figures of record are read by the model's decision rule (config.json, emotion/decision.py); the same
probabilities read by the other rule are reported beside them. A picture with no face found, a file that
cannot be read, or a class the model has that is not one of ours counts as wrong in every figure: the confusion matrix has a row per true class and a column per
predicted class plus a last "no answer" column. Classes are matched by name, whatever order the model
lists them in. --card records the result in the model card.

`torchrun --nproc_per_node N -m train.evaluate ...` splits the images into N blocks, one per process, and
gathers the answers on rank 0, which writes the same figures as one process would (`world_size` in
metrics.json says how many did the work).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emotion.decision import RULES, reread
from emotion.images import ImageError
from emotion.model import CLASSES, load_model
from emotion.pipeline import analyse
from train import distributed
from train.data import list_split
from train.export import write_card
from train.metrics import NO_ANSWER, NO_ANSWER_NAME, class_indices, scores

UNREADABLE = "unreadable"  # collect()'s entry for a file that could not be read (None: no face found)
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
    """Rows: true classes (each sums to 1); columns: predicted classes, then "no answer" (no face found,
    file unreadable, or a class outside ours), which counts as wrong."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    columns = list(labels) + [NO_ANSWER_NAME] * (cm.shape[1] - len(labels))
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(7.5, 6), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(norm):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > 0.5 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_title(title)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (rows sum to 1)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def card_names(dataset: str, data: str, split: str | None, detect_faces: bool) -> tuple[str, str]:
    """The model card's row name and confusion-matrix file for an evaluation: "ferplus private_test", or for
    a class-folder set the folder's own name ("ckplus48"), so that sets from other collections stay apart."""
    if dataset == "folder":
        base = Path(data).resolve().name + (f" {split}" if split else "")
    else:
        base = f"{dataset} {split}"
    slug = base.replace(" ", "_")
    return (base + (" (faces detected)" if detect_faces else ""),
            f"confusion_matrix_{slug}{'_detected' if detect_faces else ''}.png")


def answer(model, source, detect_faces: bool):
    """The probabilities the app gives the picture's face (`model.labels` order, read by the model's decision
    rule), None where no face was found, or UNREADABLE."""
    try:
        a = analyse(source, model, whole_image=not detect_faces, with_heatmaps=False)
    except ImageError:
        return UNREADABLE
    return np.array([a.faces[0].probabilities[c] for c in model.labels], np.float32) if a.faces else None


def collect(model, items, detect_faces: bool, progress: bool = True, desc: str = "",
            world: distributed.World | None = None) -> tuple[list[int], list]:
    """Each picture's true class and its `answer`, in the pictures' order. Under torchrun, each process answers
    its own block of the pictures and every process gets all the answers."""
    world = world or distributed.World()
    mine = world.share(len(items))  # this process's block of the images (all of them for one process)
    answers = [answer(model, items[i][0], detect_faces)
               for i in tqdm(mine, desc=desc, disable=not progress or not world.main)]
    answers = [a for part in world.all_gather(answers) for a in part]
    return [it[1] for it in items], answers


def readings(model, y_true, probs) -> dict:
    """Scores of the same probabilities under every decision rule the model's config allows (emotion/decision.py):
    {rule: scores(...)}, the model's own rule first. Without a known class prior, only the model's own rule."""
    to_ours = class_indices(model.labels)  # the model's label order may not be ours: compare by name
    answered = [i for i, p in enumerate(probs) if isinstance(p, np.ndarray)]
    stacked = np.stack([probs[i] for i in answered]) if answered else np.zeros((0, len(model.labels)), np.float32)
    rules = [model.decision.rule] + ([r for r in RULES if r != model.decision.rule] if model.decision.prior else [])
    out = {}
    for rule in rules:
        p = stacked if rule == model.decision.rule else reread(stacked, model.labels, model.decision, rule)
        y_pred = [NO_ANSWER] * len(probs)  # nothing found, or unreadable, counts as a wrong answer
        for i, row in zip(answered, p):
            y_pred[i] = to_ours[int(row.argmax())]
        out[rule] = scores(y_true, y_pred, CLASSES)
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    world = distributed.start()
    model = load_model(args.weights, fallback=False)
    split = args.split or DEFAULT_SPLIT[args.dataset]
    items = list_split(args.dataset, args.data, split, args.labels)
    if args.limit and args.limit < len(items):
        items = random.Random(0).sample(items, args.limit)
    t0 = time.time()
    y_true, probs = collect(model, items, args.detect_faces, not args.no_progress, f"{args.dataset}/{split}", world)
    distributed.stop()
    by_rule = readings(model, y_true, probs)
    m = dict(by_rule[model.decision.rule])  # the app's reading: the figures of record
    m.update({"dataset": args.dataset, "split": split, "detect_faces": args.detect_faces,
              "no_face": sum(p is None for p in probs), "unreadable": sum(isinstance(p, str) for p in probs),
              "weights": model.source, "tta_flip": model.prep.tta_flip, "decision_rule": model.decision.rule,
              "readings": {r: {k: v[k] for k in ("accuracy", "accuracy_ci95", "mean_class_accuracy", "per_class_accuracy")}
                           for r, v in by_rule.items()},
              "seconds": round(time.time() - t0, 1), "world_size": world.size})
    no_face = m["no_face"]
    if not world.main:
        return m
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
    title = f"{card_names(args.dataset, args.data, split, False)[0]}: accuracy {m['accuracy']:.1%}, mean-class {m['mean_class_accuracy']:.1%}"
    plot_confusion(np.array(m["confusion_matrix"]), CLASSES, out / "confusion_matrix.png", title)
    lo, hi = m["accuracy_ci95"]
    print(title + f" (95% interval {lo:.1%} to {hi:.1%}; n={m['n']}{', no face: %d' % no_face if args.detect_faces else ''}; "
          f"decision rule {model.decision.rule})")
    for rule, r in m["readings"].items():
        if rule != model.decision.rule:
            lo, hi = r["accuracy_ci95"]
            print(f"read with the {rule} rule instead: accuracy {r['accuracy']:.1%} (95% interval {lo:.1%} to "
                  f"{hi:.1%}), mean-class {r['mean_class_accuracy']:.1%}")
    print(f"| class | accuracy | n | {NO_ANSWER_NAME} |\n|---|---|---|---|")
    cm = np.array(m["confusion_matrix"])
    for (c, v), n, none in zip(m["per_class_accuracy"].items(), cm.sum(1), cm[:, -1]):
        print(f"| {c} | {'n/a' if v is None else f'{v:.1%}'} | {n} | {none} |")
    if args.card:
        name, picture = card_names(args.dataset, args.data, split, args.detect_faces)
        shutil.copy2(out / "confusion_matrix.png", Path(model.source) / picture)
        write_card(model.source, evaluation=(name, {**{k: m[k] for k in (
            "accuracy", "mean_class_accuracy", "per_class_accuracy", "confusion_matrix", "n", "no_face",
            "decision_rule", "readings")},
            "picture": picture}))
    return m


if __name__ == "__main__":
    main()
