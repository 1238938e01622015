"""Measure the face detector's two errors here: faces it misses, and faces it finds where there are none.

    python -m tools.detector --data ../shared/datasets/fer2013 --dataset ferplus \
        --labels ../shared/datasets/ferplus/ferplus_labels.csv --split public_test [--json detector.json]

Faces: every picture of a labelled split, read as `train.evaluate --detect-faces` reads it. Face-free
pictures: scikit-image's sample pictures that show no person, whole and as 30 random squares of each
(`--squares`; 32 px up to the whole side, seed 0), and the 100 non-face patches of its LFW subset. Each
rule is applied exactly as `emotion.faces.detect_faces` applies the app's: YuNet asked at the rule's
lowest level (once per level, shared by the rules that have it), then `keep_faces`. YuNet cuts on
unrounded scores but reports whole percent, so asking lower and filtering the reported scores would not
measure the same rule.
Rules: a plain confidence threshold; MIN_CONFIDENCE, else one close-up down to a lower one; and the app's,
which looks at a picture with no sure face once more in a border (emotion.faces.BORDER_SHARE) before the
close-up, at three thresholds for the bordered picture.
Prints, per rule, the share of face pictures with no face kept and of face-free pictures with one.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from tqdm import tqdm

# scikit-image's samples that show no person (its astronaut and camera do; its cat is chelsea again)
SAMPLES = ("brick", "cell", "checkerboard", "chelsea", "clock", "coffee", "coins", "colorwheel",
           "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon",
           "page", "retina", "rocket", "shepp_logan_phantom", "stereo_motorcycle", "text")


def face_free_pictures(crops_each: int = 30, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """The face-free pictures as RGB arrays, read as the app reads an array (`emotion.images.load_image`)."""
    import skimage.data as sd

    from emotion.images import load_image

    whole = []
    for name in SAMPLES:
        try:
            x = getattr(sd, name)()
        except Exception:  # noqa: BLE001 - samples that need a download (pooch) are left out
            continue
        whole.append(load_image(x[0] if isinstance(x, tuple) else x).rgb)
    rng = np.random.default_rng(seed)
    squares = []
    for x in whole:
        h, w = x.shape[:2]
        for _ in range(crops_each):
            s = int(rng.integers(32, max(33, min(h, w))))
            y0, x0 = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            squares.append(x[y0:y0 + s, x0:x0 + s])
    patches = [load_image(p).rgb for p in sd.lfw_subset()[100:]]  # the first 100 are faces
    return {f"scikit-image samples ({len(whole)})": whole, f"their squares ({len(squares)})": squares,
            f"LFW non-faces ({len(patches)})": patches}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--dataset", default="ferplus", choices=["fer2013", "ferplus", "rafdb", "folder"])
    p.add_argument("--labels", default=None)
    p.add_argument("--split", default="public_test")
    p.add_argument("--limit", type=int, default=None, help="first N face pictures only")
    p.add_argument("--squares", type=int, default=30, help="random squares cut from each face-free sample")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from emotion.faces import (BORDER_CONFIDENCE, BORDER_SHARE, CLOSE_UP_CONFIDENCE, MIN_CONFIDENCE,
                               find_candidates, keep_faces)
    from emotion.images import load_image
    from train.data import list_split

    # (sure threshold, close-up threshold, bordered picture's threshold or None)
    rules = {f"threshold {t}": (t, t, None) for t in (0.6, 0.5, 0.4, 0.3)}
    rules.update({f"{MIN_CONFIDENCE}, close-up {t}": (MIN_CONFIDENCE, t, None) for t in (0.5, 0.4, 0.3)})
    rules.update({f"{MIN_CONFIDENCE}, bordered {b}, close-up {CLOSE_UP_CONFIDENCE}": (MIN_CONFIDENCE, CLOSE_UP_CONFIDENCE, b)
                  for b in (0.8, BORDER_CONFIDENCE, 0.6)})
    app_rule = f"{MIN_CONFIDENCE}, bordered {BORDER_CONFIDENCE}, close-up {CLOSE_UP_CONFIDENCE}"

    sources = [s for s, *_ in list_split(args.dataset, args.data, args.split, args.labels)][:args.limit]
    sets = {f"{args.dataset} {args.split} faces ({len(sources)})": (sources, True)}
    sets.update({k: (v, False) for k, v in face_free_pictures(args.squares).items()})
    rates = {}
    for name, (pictures, faces) in sets.items():
        kept = {r: 0 for r in rules}
        for pic in tqdm(pictures, desc=name, leave=False, disable=None):
            rgb = load_image(pic).rgb if faces else pic  # (face-free pictures are read already)
            found = {}  # YuNet's boxes at each (floor, border) a rule asks at, as detect_faces asks

            def ask(floor: float, border: float = 0.0, rgb=rgb, found=found) -> list:
                if (floor, border) not in found:
                    found[floor, border] = find_candidates(rgb, floor, border=border)
                return found[floor, border]

            for r, (conf, close_up, bordered) in rules.items():
                in_border = None if bordered is None else (lambda b=bordered: ask(b, BORDER_SHARE))
                kept[r] += bool(keep_faces(ask(min(conf, close_up)), rgb.shape, conf, close_up, in_border))
        rates[name] = {r: round(100 * (1 - k / len(pictures) if faces else k / len(pictures)), 2)
                       for r, k in kept.items()}

    short = {r: r.replace("threshold ", "").replace(", close-up ", " / ").replace(", bordered ", " / b")
             for r in rules}
    print(f"share of pictures: missed (faces) or with a face found (face-free), by rule: threshold, or "
          f"{MIN_CONFIDENCE} / a close-up's threshold, or {MIN_CONFIDENCE} / b the bordered picture's threshold / "
          f"the close-up's; the app's rule is {short[app_rule]}")
    print(f"{'':36s}" + "".join(f"{short[r]:>17s}" for r in rules))
    for name, row in rates.items():
        print(f"{name:36s}" + "".join(f"{row[r]:16.1f}%" for r in rules))
    out = {"rules": {r: list(v) for r, v in rules.items()}, "app_rule": app_rule, "percent": rates}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
