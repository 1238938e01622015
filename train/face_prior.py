"""Make a model folder's face_prior.npz: each method's mean map at each layer over FER2013 training faces, and
the margins its faithfulness verdicts are judged by.

    python -m train.face_prior --weights weights --data ../shared/datasets/fer2013 [--n 256] [--calibration-n 600]

It is written beside the model's weights (weights/face_prior.npz for the shipped model), pushed to the Hub with
them, and read by the app for that model only; a model without one is checked against a centre prior.

The mean map is the faithfulness check's face-prior control (emotion/faithfulness.py): what an average
explanation looks like for this model, method and layer, with nothing in it about any one face. Each map
is for the face's predicted class, at the model's input size, averaged and stored at 16 x 16 (float16,
keys "<method>|<layer>", e.g. "Grad-CAM|layer3"), and per class over the faces predicted as that class
("Grad-CAM|layer3|happy"; classes predicted fewer than MIN_FACES times have none).

The margins: on another sample of training faces (--calibration-n, none of those the mean maps were made
from), each face's map is judged as the app judges it, beside two maps without the face's evidence (the
previous face's map and the inverted map), and for each method and layer the smallest margin of
`emotion.faithfulness.MARGIN_GRID` whose false-"good" rate's 95% interval ends at or below 5% is stored
("calibration|<method>|<layer>": margin, false-good count, faces; margin inf where none of the grid does).
`--calibration-only` keeps the file's mean maps and measures the margins again.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import cv2
import numpy as np
import torch

from emotion.explain import CLASS_AGNOSTIC, LAYERS, METHODS, explain
from emotion.faithfulness import N_RANDOM, calibration_key, prior_key, wilson
from emotion.images import load_image
from emotion.model import FACE_PRIOR_FILE, load_model
from train.audit import calibrate, faithfulness_rows
from train.data import list_split

SIDE = 16
MIN_FACES = 8  # a class's own mean map only from at least this many faces predicted as it


def mean_maps(model, crops: list[np.ndarray], batch: int = 32) -> dict[str, np.ndarray]:
    """{"method|layer": mean map (SIDE x SIDE)} over `crops` (RGB uint8 faces), each for its predicted class,
    and {"method|layer|class": mean map} over the faces predicted as that class (MIN_FACES or more)."""
    out = {}
    side = model.prep.size
    for method in METHODS:
        for layer in LAYERS:
            total = np.zeros((side, side), np.float64)
            per_class = np.zeros((len(model.labels), side, side), np.float64)
            counts = np.zeros(len(model.labels), int)
            for i in range(0, len(crops), batch):
                x = model.prep.to_input(crops[i:i + batch])
                logits, maps = explain(model, x, [None] * len(x), method, layer)
                total += maps.sum(0)
                for c, m in zip(logits.argmax(1).tolist(), maps):
                    per_class[c] += m
                    counts[c] += 1
            key = prior_key(method, layer)
            out[key] = _small(total / len(crops))
            for c, name in enumerate(model.labels):
                if counts[c] >= MIN_FACES:
                    out[f"{key}|{name}"] = _small(per_class[c] / counts[c])
    return out


def calibrate_margins(model, sources: list, methods=None, layers=None, n_random: int = N_RANDOM,
                      progress: bool = True) -> dict[str, np.ndarray]:
    """{"calibration|method|layer": [margin, k, n]} for the model's face prior as it is on disk now
    (`train.audit.calibrate` over `sources`, training pictures each taken whole as the face); class-agnostic
    methods are left out (never judged good)."""
    methods = [m for m in (methods or METHODS) if m not in CLASS_AGNOSTIC]
    rows = faithfulness_rows(model, sources, methods, list(layers or LAYERS), True, n_random, progress)
    out = {}
    for (layer, method), results in rows.items():
        c = calibrate(results)
        if c is not None:
            out[calibration_key(method, layer)] = np.array(c, np.float32)
    return out


def _small(m: np.ndarray) -> np.ndarray:
    return cv2.resize(m.astype(np.float32), (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def main(argv=None) -> dict[str, np.ndarray]:
    p = argparse.ArgumentParser(prog="python -m train.face_prior", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights")
    p.add_argument("--data", required=True, help="FER2013 (folder layout or fer2013.csv)")
    p.add_argument("--dataset", default="fer2013")
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, default=256, help="faces, a seeded random sample of the split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--calibration-n", type=int, default=600,
                   help="faces (others than the mean maps') to calibrate the verdict's margins on; 0: none")
    p.add_argument("--calibration-only", action="store_true", help="keep the file's mean maps, measure the margins")
    p.add_argument("--methods", nargs="+", default=None, help="calibrate these methods only (default: all)")
    p.add_argument("--out", default=None, help=f"default: {FACE_PRIOR_FILE} in the model's folder, where the "
                   "app looks for it")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.weights, fallback=False)
    items = list_split(args.dataset, args.data, args.split)
    random.Random(args.seed).shuffle(items)
    prior_items, calibration_items = items[:args.n], items[args.n:args.n + args.calibration_n]
    out = Path(args.out or Path(model.source) / FACE_PRIOR_FILE)
    if args.calibration_only:
        with np.load(out) as z:
            maps = {k: z[k] for k in z.files if not k.startswith("calibration|")}
    else:
        crops = [s if isinstance(s, np.ndarray) else load_image(s).rgb for s, _ in prior_items]
        crops = [np.repeat(c[..., None], 3, 2) if c.ndim == 2 else c for c in crops]
        maps = {k: v.astype(np.float16) for k, v in mean_maps(model, crops).items()}
        print(f"{len(maps)} mean maps over {len(crops)} {args.dataset} {args.split} faces")
    np.savez_compressed(out, **maps)  # the calibration judges against the prior as the app will read it
    if calibration_items and Path(model.source).resolve() == out.parent.resolve():
        margins = calibrate_margins(model, [s for s, _ in calibration_items], args.methods)
        np.savez_compressed(out, **maps, **margins)
        for key, (g, k, n) in margins.items():
            lo, hi = wilson(int(k), int(n))
            print(f"{key.split('|', 1)[1]}: margin {g:g}; uninformative maps judged good {int(k)} of {int(n)} "
                  f"({k / n:.1%}, 95% interval {lo:.1%} to {hi:.1%})")
    elif calibration_items:
        print(f"margins not calibrated: {out} is not beside the model ({model.source}), whose prior the check reads")
    print(f"-> {out}")
    return maps


if __name__ == "__main__":
    main()
