"""Measure both decision rules on the validation split, and write the chosen one into a model folder.

    python -m train.decide --weights weights --data ../shared/datasets/fer2013 --dataset ferplus \\
        --labels ../shared/datasets/ferplus/ferplus_labels.csv               # print the table
    python -m train.decide ... --also ../shared/datasets/ckplus48           # and a second set's beside it
    python -m train.decide ... --write balanced --tau 1                     # and set the rule

The class prior is each class's share of the training split's labels (FER+: each face's top vote), the same
for every model read, so that models compare at equal tau; `--own-prior` reads a model by the prior it keeps
instead (config.json's `decision` block: training writes there the share of the targets it trained on, which
differ from the labels' when FER2013's own labels were blended in, `--fer2013-blend`). The validation split's
faces go once through the app's pipeline (as train.evaluate reads them); the same probabilities are then read
by the prior rule and by the balanced rule at each tau (emotion/decision.py), and accuracy and mean-class
accuracy are printed for each. `--also FOLDER` reads a second, cross-domain set (a `<class>/<image>` folder of
face crops, such as CK+48) the same way and prints both sets side by side, so that tau is chosen with both in
view. `--write` stores the prior, the rule and tau in config.json's `decision` block and renders the card
again; evaluate the model again afterwards (`train.evaluate --card`), since its results were read by the old
rule.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from emotion.decision import RULES, Decision, reread, training_prior
from emotion.model import CLASSES, CONFIG_FILE, load_model
from train.data import list_split
from train.evaluate import collect
from train.export import write_card
from train.metrics import NO_ANSWER, class_indices, scores
from train.train import VAL_SPLIT


def add_set_options(p: argparse.ArgumentParser, taus: list[float]) -> None:
    """The options that say which faces are read, at which taus (shared with train.paired)."""
    p.add_argument("--data", required=True)
    p.add_argument("--dataset", choices=["fer2013", "ferplus", "rafdb", "folder"], default="ferplus")
    p.add_argument("--labels", default=None, help="ferplus: the per-file vote table")
    p.add_argument("--train-split", default="train", help="the split whose targets give the class prior")
    p.add_argument("--split", default=None, help="the split to measure on (default: the validation split)")
    p.add_argument("--taus", type=float, nargs="+", default=taus)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--also", default=None, help="a second set to read beside it: a <class>/<image> folder of "
                   "face crops (e.g. CK+48), taken as given")
    p.add_argument("--detect-faces", action="store_true", help="find the face in each picture of the measured "
                   "split with the app's detector and read what it frames, as the app does (a picture where none "
                   "is found counts as wrong); --also's crops are still taken as given")
    p.add_argument("--no-progress", action="store_true")


def measured_items(args) -> tuple[str, list]:
    """The split `add_set_options` names (default: the validation split) and its pictures, the first --limit."""
    split = args.split or VAL_SPLIT[args.dataset]
    items = list_split(args.dataset, args.data, split, args.labels)
    return split, items[:args.limit] if args.limit else items


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.decide", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights")
    add_set_options(p, [0.25, 0.5, 0.75, 1.0])
    p.add_argument("--own-prior", action="store_true", help="divide out the prior the model keeps (its config's "
                   "decision block) instead of the training split's")
    p.add_argument("--write", choices=RULES, default=None, help="set this rule in the model folder")
    p.add_argument("--tau", type=float, default=1.0, help="with --write balanced: how much of the log prior")
    return p.parse_args(argv)


def prior_of(dataset: str, data: str, split: str, labels=None) -> dict[str, float]:
    """Each class's share of a split's labels (FER+: each face's top vote)."""
    items = list_split(dataset, data, split, labels)
    return training_prior(np.eye(len(CLASSES))[[it[1] for it in items]], CLASSES)


def predictions(model, items, prior: dict, taus, desc: str, quiet: bool,
                detect_faces: bool = False) -> tuple[list[int], list[dict]]:
    """The pictures' true classes, and their probabilities, collected once through the app's pipeline (with
    detect_faces, on the face its detector finds), read by the prior rule and by the balanced rule at each tau:
    {"rule", "tau", "y_pred"} for each (classes as indices of CLASSES, NO_ANSWER for a picture that could not be
    read or where no face was found)."""
    y_true, probs = collect(model, items, detect_faces, not quiet, desc)
    answered = [i for i, p in enumerate(probs) if isinstance(p, np.ndarray)]
    plain = (reread(np.stack([probs[i] for i in answered]), model.labels, model.decision, "prior")  # own scores
             if answered else np.zeros((0, len(model.labels)), np.float32))
    measured = Decision(prior=prior)
    to_ours = class_indices(model.labels)
    out = []
    for rule, tau in [("prior", 0.0)] + [("balanced", t) for t in taus]:
        p = reread(plain, model.labels, measured, rule, tau)
        y_pred = [NO_ANSWER] * len(probs)
        for i, row in zip(answered, p):
            y_pred[i] = to_ours[int(row.argmax())]
        out.append({"rule": rule, "tau": tau, "y_pred": y_pred})
    return y_true, out


def readings(model, items, prior: dict, taus, desc: str, quiet: bool, detect_faces: bool = False) -> list[dict]:
    """`predictions` scored: a row of scores for the prior rule and for the balanced rule at each tau."""
    y_true, read = predictions(model, items, prior, taus, desc, quiet, detect_faces)
    rows = []
    for r in read:
        m = scores(y_true, r["y_pred"], CLASSES)
        rows.append({"rule": r["rule"], "tau": r["tau"], "accuracy": m["accuracy"],
                     "mean_class_accuracy": m["mean_class_accuracy"], "per_class_accuracy": m["per_class_accuracy"]})
    return rows


def print_table(rows: list[dict]) -> None:
    print("| rule | tau | accuracy | mean-class | " + " | ".join(CLASSES) + " |")
    print("|---|---|---|---|" + "---|" * len(CLASSES))
    for r in rows:
        pc = r["per_class_accuracy"]
        print(f"| {r['rule']} | {r['tau']:g} | {r['accuracy']:.1%} | {r['mean_class_accuracy']:.1%} | "
              + " | ".join("n/a" if pc[c] is None else f"{pc[c]:.1%}" for c in CLASSES) + " |")


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    model = load_model(args.weights, fallback=False)
    if args.own_prior:
        if not model.decision.prior:
            raise SystemExit(f"{model.source} keeps no class prior (config.json has no decision block)")
        prior = {c: model.decision.prior[c] for c in CLASSES}
    else:
        prior = prior_of(args.dataset, args.data, args.train_split, args.labels)
    print(("the model's own prior: " if args.own_prior else "training prior: ")
          + ", ".join(f"{c} {v:.1%}" for c, v in prior.items()))
    split, items = measured_items(args)
    rows = readings(model, items, prior, args.taus, f"{args.dataset}/{split}", args.no_progress, args.detect_faces)
    seen = " through the detector" if args.detect_faces else ""
    print(f"\n{args.dataset} {split}{seen} (n={len(items)}), the model's probabilities read by each rule:\n")
    print_table(rows)
    if args.also:
        also = list_split("folder", args.also, None)
        other = readings(model, also, prior, args.taus, args.also, args.no_progress)
        print(f"\n{args.also} (n={len(also)}), read by each rule:\n")
        print_table(other)
        present = [c for c in CLASSES if other[0]["per_class_accuracy"][c] is not None]
        print(f"\nboth sets (first: {args.dataset} {split}; second: {Path(args.also).name}):\n")
        print("| rule | tau | accuracy | mean-class | second accuracy | mean-class | "
              + " | ".join(f"second {c}" for c in present) + " |")
        print("|---|---|---|---|---|---|" + "---|" * len(present))
        for r, o in zip(rows, other):
            print(f"| {r['rule']} | {r['tau']:g} | {r['accuracy']:.1%} | {r['mean_class_accuracy']:.1%} | "
                  f"{o['accuracy']:.1%} | {o['mean_class_accuracy']:.1%} | "
                  + " | ".join(f"{o['per_class_accuracy'][c]:.0%}" for c in present) + " |")
            r["also"] = o
    if args.write:
        folder = Path(model.source)
        cfg_file = folder / CONFIG_FILE
        cfg = json.loads(cfg_file.read_text())
        cfg["decision"] = Decision(rule=args.write, tau=args.tau, prior=prior).to_config()
        cfg_file.write_text(json.dumps(cfg, indent=2) + "\n")
        write_card(folder)
        print(f"\n{cfg_file}: decision rule {args.write}" + (f", tau {args.tau:g}" if args.write == "balanced" else "")
              + ". Evaluate it again (python -m train.evaluate ... --card): its results were read by the old rule.")
    return rows


if __name__ == "__main__":
    main()
