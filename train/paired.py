"""Compare two models on the same faces: which faces each reads right that the other does not, and whether the
difference is more than chance (an exact McNemar test).

    python -m train.paired weights runs/candidate/best --data ../shared/datasets/fer2013 --dataset ferplus \\
        --labels ../shared/datasets/ferplus/ferplus_labels.csv --taus 0.6 0.75 --also ../shared/datasets/ckplus48

Accuracies of two models on one validation split differ by sampling alone; since both read the same faces,
only the faces where they disagree on right and wrong say which is better. Each model is read as
`train.decide` reads it (the training split's prior divided out by the balanced rule at each tau, and the
prior rule), and for every reading this prints both accuracies, the faces only the first model (A) reads
right, those only the second (B) reads right, and the two-sided exact McNemar p-value: the chance of a split
of the disagreements at least that uneven if both models were equally good. `--also FOLDER` does the same on a
`<class>/<image>` folder of crops (e.g. CK+48). `--detect-faces` reads the split's pictures as the app does,
on the face its detector finds (a picture where it finds none counts as wrong for both). Faces of the same
person are not independent draws, so on a set of few people (CK+48: about 120) the p-values are optimistic.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from scipy.stats import binomtest

from emotion.model import load_model
from train.data import list_split
from train.decide import add_set_options, measured_items, predictions, prior_of


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.paired", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="the first model (e.g. the shipped one): a folder or local-dir:PATH")
    p.add_argument("b", help="the second model (the candidate)")
    add_set_options(p, [0.6])
    return p.parse_args(argv)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: how likely a split of the only_a + only_b disagreements at least this
    uneven is when each falls to either model with chance one half (1.0 when they never disagree)."""
    n = only_a + only_b
    return 1.0 if n == 0 else float(binomtest(only_b, n, 0.5).pvalue)


def compare(y_true, pred_a, pred_b) -> dict:
    """Counts of the faces both, only A, only B and neither read right, both accuracies and the McNemar p."""
    right_a = [p == y for p, y in zip(pred_a, y_true)]
    right_b = [p == y for p, y in zip(pred_b, y_true)]
    n = len(y_true)
    c = {"n": n,
         "both": sum(a and b for a, b in zip(right_a, right_b)),
         "only_a": sum(a and not b for a, b in zip(right_a, right_b)),
         "only_b": sum(b and not a for a, b in zip(right_a, right_b)),
         "neither": sum(not a and not b for a, b in zip(right_a, right_b))}
    c["accuracy_a"] = (c["both"] + c["only_a"]) / n if n else 0.0
    c["accuracy_b"] = (c["both"] + c["only_b"]) / n if n else 0.0
    c["p"] = mcnemar_p(c["only_a"], c["only_b"])
    return c


def compare_on(model_a, model_b, items, prior: dict, taus, desc: str, quiet: bool,
               detect_faces: bool = False) -> list[dict]:
    """`compare` at the prior rule and at the balanced rule at each tau, both models read alike (with
    detect_faces, on the face the app's detector finds in each picture)."""
    y_true, read_a = predictions(model_a, items, prior, taus, f"{desc} (A)", quiet, detect_faces)
    _, read_b = predictions(model_b, items, prior, taus, f"{desc} (B)", quiet, detect_faces)
    return [{"rule": ra["rule"], "tau": ra["tau"], **compare(y_true, ra["y_pred"], rb["y_pred"])}
            for ra, rb in zip(read_a, read_b)]


def print_table(name: str, rows: list[dict]) -> None:
    print(f"\n{name} (n={rows[0]['n'] if rows else 0}):\n")
    print("| rule | tau | A | B | only A right | only B right | McNemar p |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rule']} | {r['tau']:g} | {r['accuracy_a']:.1%} | {r['accuracy_b']:.1%} | {r['only_a']} | "
              f"{r['only_b']} | {r['p']:.3f} |")


def main(argv=None) -> dict[str, list[dict]]:
    args = parse_args(argv)
    model_a, model_b = load_model(args.a, fallback=False), load_model(args.b, fallback=False)
    prior = prior_of(args.dataset, args.data, args.train_split, args.labels)
    print(f"A: {model_a.source}\nB: {model_b.source}\ntraining prior: "
          + ", ".join(f"{c} {v:.1%}" for c, v in prior.items()))
    split, items = measured_items(args)
    name = f"{args.dataset} {split}" + (" through the detector" if args.detect_faces else "")
    out = {name: compare_on(model_a, model_b, items, prior, args.taus, split, args.no_progress, args.detect_faces)}
    if args.also:
        also = list_split("folder", args.also, None)
        out[Path(args.also).name] = compare_on(model_a, model_b, also, prior, args.taus, args.also, args.no_progress)
    for name, rows in out.items():
        print_table(name, rows)
    return out


if __name__ == "__main__":
    main()
