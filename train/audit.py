"""Audit a model on a labelled split: accuracy, where its heatmaps look, whether they can be trusted, fairness.

    python -m train.audit --weights weights --data ../shared/datasets/fer2013 --dataset fer2013 \\
        --split public_test --out audit/fer2013_public_test [--groups groups.csv] [--limit N]

Every image goes through `emotion.pipeline.analyse`, as in the app (the picture taken whole as the face,
or with --detect-faces the largest face found). This file measures; it writes OUT/summary.json and hands
it, with the faces to draw, to train/report.py, which writes OUT/report.html (open it in a browser; its
pictures are the PNGs beside it). The summary holds:

- accuracy, mean-class accuracy, per-class accuracy, confusion matrix (train/metrics.py);
- the average heatmap per true and per predicted class, over that class's average face;
- the most confident mistakes, with the map for the predicted class and the map for the true class
  ("why not the true class?");
- the share of heatmap mass on eyes and brows, nose, mouth, rest of face and outside the face
  (emotion/regions.py), overall, per class and per group;
- the what-if, answered with interventions rather than maps (emotion/whatif.py): for each region, how often
  hiding it changes the label and how far the label's probability falls, overall, per predicted class
  ("happy depends on the mouth on 9 faces in 10") and per group, with the largest gap between groups in
  each region's rate, its bootstrap 95 % interval and a permutation p-value (summary.json: `what_if`,
  `fairness.attributes[...].what_if_gaps`);
- faithfulness (emotion/faithfulness.py) of every CAM method at every layer (--faith-layers) on a subset
  (--faithfulness-limit), judged as the app judges each face: the mean drop of the predicted class's logit
  when each map's top pixels are deleted, beside the same for the controls (face prior, the other class's
  map, random maps), the share of faces judged "good", "weak", ..., and the false-"good" rate: how often
  another face's map or the inverted map is judged "good" (summary.json: `controls`, `false_good_rate` for
  --method at --layer, `faithfulness_by_layer` for all, `recommended`: the method and layer judged "good"
  most often);
- beside it, an independent metric on the first --road-limit faces of that subset: ROAD (pytorch-grad-cam's
  ROADCombined, train/road.py; --road-percentiles) of each map, its inversion and each control, and how often
  it and the deletion test agree, face by face, on "the map beats the face prior" (summary.json: `road` for
  --method at --layer, `faithfulness_by_layer[layer][method]["road"]` for all);
- a sanity check (Adebayo et al. 2018, model randomisation): the heatmaps after re-initialising the top
  layers (fc, then fc and layer4), compared with the trained model's by Spearman rank correlation on a
  subset (--sanity-limit). A map that still looks the same explains the picture, not the model;
- fairness, with --groups CSV (column `image`: a file name, a path relative to --data or an absolute
  path; then one column per attribute, e.g. gender, race, age), or for --dataset rafdb without one, RAF-DB's
  own manual annotations of gender, race and age (train/data.py): accuracy, mean-class accuracy,
  confusion matrix, region shares and the faithfulness verdicts' shares per group, and for each attribute
  the largest gap between groups with a bootstrap 95 % interval and a permutation p-value.

`torchrun --nproc_per_node N -m train.audit ...` splits the work over N processes (the pictures, the
faithfulness subset, the sanity subset), and rank 0 gathers it and writes the same summary as one
process would (`world_size` in summary.json; only timings differ).

The report holds pictures of the data set's faces: keep OUT outside version control (audit/ is ignored).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import random
import re
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from emotion.explain import (
    CLASS_AGNOSTIC,
    DEFAULT_LAYER,
    DEFAULT_METHOD,
    LAYERS,
    METHODS,
    explain,
    resolve_layer,
)
from emotion.faithfulness import (CONTROLS, LEVELS, MARGIN_GRID, MAX_FALSE_GOOD, N_RANDOM, calibrated_margin,
                                  calibration, choose_margin, face_prior, faithfulness_many, judge, other_class,
                                  random_maps, wilson)
from emotion.images import ImageError
from emotion.model import CLASSES, EmotionModel, load_model
from emotion.pipeline import analyse
from emotion.regions import REGIONS, face_region_areas, face_region_shares
from emotion.whatif import HIDDEN, what_if
from train import distributed
from train.data import DatasetError, list_split, rafdb_attributes
from train.evaluate import DEFAULT_SPLIT
from train.metrics import class_indices, scores
from train.report import write_report
from train.road import PERCENTILES, face_road, road_figures

SANITY_STAGES = (("fc",), ("fc", "layer4"))  # cascading re-initialisation, top layer first


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.audit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights", help="model folder, local-dir:PATH or hf-hub:owner/name")
    p.add_argument("--data", required=True)
    p.add_argument("--dataset", choices=["fer2013", "ferplus", "rafdb", "folder"], default="fer2013")
    p.add_argument("--labels", default=None, help="ferplus: per-file FER+ vote table for the folder layout "
                   "(without it, fer2013new.csv beside fer2013.csv)")
    p.add_argument("--split", default=None, help="fer2013: train, public_test, private_test; rafdb: train, test")
    p.add_argument("--groups", default=None, help="CSV: image, then one column per attribute (fairness); "
                   "for --dataset rafdb, RAF-DB's manual annotations are used without one")
    p.add_argument("--detect-faces", action="store_true", help="find the face first (uncropped photos)")
    p.add_argument("--method", default=None, help="method of the main heatmaps and of the verdicts per group "
                   f"(default: {DEFAULT_METHOD} if it is among --methods, else the first of them)")
    p.add_argument("--layer", default=DEFAULT_LAYER, help="layer4, layer3 or layer2")
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="methods compared for faithfulness")
    p.add_argument("--limit", type=int, default=None, help="a fixed random subset of N images")
    p.add_argument("--faithfulness-limit", type=int, default=200, help="images for the faithfulness test (0: skip)")
    p.add_argument("--sanity-limit", type=int, default=100, help="images for the randomisation test (0: skip)")
    p.add_argument("--n-random", type=int, default=N_RANDOM, help="random maps per face in the faithfulness test")
    p.add_argument("--faith-layers", nargs="+", default=[k.split()[0] for k in LAYERS],
                   help="layers compared for faithfulness (default: all)")
    p.add_argument("--road-limit", type=int, default=50, help="of the faithfulness images, how many are also scored "
                   "with ROAD (pytorch-grad-cam; train/road.py), for every method and layer (0: skip)")
    p.add_argument("--road-percentiles", nargs="+", type=float, default=list(PERCENTILES),
                   help="ROAD's percentiles: at p, the (100 - p) %% most (and least) relevant pixels are filled in")
    p.add_argument("--mistakes", type=int, default=12, help="how many confident mistakes to show")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the fairness intervals")
    p.add_argument("--min-group-size", type=int, default=10, help="smaller groups are shown but not compared")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="audit", help="folder for report.html, summary.json and the figures")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not all(0 < q < 100 for q in args.road_percentiles):
        p.error("--road-percentiles must lie strictly between 0 and 100")
    return args


def _method_name(name: str) -> str:
    for m in METHODS:
        if m.lower() == name.lower():
            return m
    raise SystemExit(f"Unknown method {name!r}; choose from {', '.join(METHODS)}.")


def main_method(asked: str | None, methods: list[str]) -> str:
    """The main heatmaps' method: the one asked for, else DEFAULT_METHOD if it is compared, else the first
    compared (so that each group's verdicts are those of a method the audit judges)."""
    if asked:
        return _method_name(asked)
    compared = [_method_name(m) for m in methods]
    return DEFAULT_METHOD if DEFAULT_METHOD in compared or not compared else compared[0]


# ---------------------------------------------------------------- groups
def read_groups(path: str | Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(attribute names, {image key: {attribute: group}}) from a CSV whose first column is the image."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or len(reader.fieldnames) < 2:
            raise SystemExit(f"{path}: needs a header with an image column and at least one attribute column.")
        image_col, attributes = reader.fieldnames[0], reader.fieldnames[1:]
        rows = {row[image_col].strip(): {a: (row[a] or "").strip() for a in attributes} for row in reader}
    return attributes, rows


def match_groups(sources: list[str], rows: dict[str, dict[str, str]], root: str | Path) -> list[dict | None]:
    """Each source's row: by its path as given, its path relative to `root`, or its file name."""
    root = Path(root)
    by_name: dict[str, dict] = {}
    for key, row in rows.items():
        by_name.setdefault(Path(key).name, row)
    out = []
    for s in sources:
        p = Path(s)
        try:
            rel = p.relative_to(root).as_posix()
        except ValueError:
            rel = None
        out.append(rows.get(s) or (rows.get(rel) if rel else None) or by_name.get(p.name))
    return out


def _accuracies(correct: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and mean-class accuracy of each row of `correct`/`y` (B x n): vectorised over resamples."""
    acc = correct.mean(1)
    recalls = []
    for c in range(n_classes):
        den = (y == c).sum(1)
        num = (correct & (y == c)).sum(1)
        recalls.append(np.where(den > 0, num / np.maximum(den, 1), np.nan))
    with np.errstate(all="ignore"):
        mca = np.nanmean(np.stack(recalls, 1), 1)
    return acc, mca


def group_gap(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, n_classes: int, n_boot: int,
              min_size: int, seed: int) -> dict:
    """Largest gap between groups (accuracy and mean-class accuracy) with bootstrap CI and permutation p
    (`largest_gap`)."""
    names = [g for g in sorted(set(groups.tolist())) if (groups == g).sum() >= min_size]
    if len(names) < 2:
        return {"compared_groups": names, "note": f"fewer than two groups with at least {min_size} images"}
    keep = np.isin(groups, names)
    y, correct, g = y_true[keep], (y_true == y_pred)[keep], groups[keep]
    rng = np.random.default_rng(seed)

    def per_group(labels_of_images, resample: bool):
        """Accuracy and mean-class accuracy of each compared group (rows: resamples, columns: groups)."""
        accs, mcas = [], []
        for name in names:
            idx = np.flatnonzero(labels_of_images == name)
            idx = idx[rng.integers(0, len(idx), (n_boot, len(idx)))] if resample else idx[None]
            a, m = _accuracies(correct[idx], y[idx], n_classes)
            accs.append(a)
            mcas.append(m)
        return np.stack(accs, 1), np.stack(mcas, 1)

    acc, mca = per_group(g, False)
    boot_acc, boot_mca = per_group(g, True)
    # permutation: shuffle the group labels (no real difference); how often is the gap as large?
    perm_acc, perm_mca = [], []
    for _ in range(max(200, n_boot // 2)):
        a, m = per_group(rng.permutation(g), False)
        perm_acc.append(np.ptp(a))
        perm_mca.append(np.nanmax(m) - np.nanmin(m))

    return {"compared_groups": names, "accuracy_gap": largest_gap(names, acc[0], boot_acc, perm_acc),
            "mean_class_accuracy_gap": largest_gap(names, mca[0], boot_mca, perm_mca)}


def largest_gap(names: list[str], observed: np.ndarray, boot: np.ndarray, perm, ends=("best", "worst")) -> dict:
    """The largest gap between the groups `names` in a figure: `observed` (one per group), its bootstrap 95%
    interval from `boot` (resamples x groups; the spread of each resample) and the permutation p-value from
    `perm` (the spread under shuffled group labels): how often is a gap as large when groups mean nothing?
    `ends` names the two groups at the gap's ends. NaN (a group without the figure) is left out."""
    hi, lo = int(np.nanargmax(observed)), int(np.nanargmin(observed))
    gap = float(observed[hi] - observed[lo])
    b = np.nanmax(boot, 1) - np.nanmin(boot, 1)
    return {"gap": gap, ends[0]: names[hi], ends[1]: names[lo],
            "ci95": [float(np.nanpercentile(b, 2.5)), float(np.nanpercentile(b, 97.5))],
            "p_value": float((np.sum(np.asarray(perm) >= gap - 1e-12) + 1) / (len(perm) + 1))}


def whatif_figures(hidden: list[dict | None]) -> dict | None:
    """Over faces' what-ifs ({region: (label changes, drop of the label's probability)}, None for no face):
    per region, how often hiding it changes the label (`flip_rate`) and the mean drop (`mean_drop`)."""
    rows = [h for h in hidden if h]
    if not rows:
        return None
    return {"n": len(rows), **{r: {"flip_rate": float(np.mean([h[r][0] for h in rows])),
                                   "mean_drop": float(np.mean([h[r][1] for h in rows]))} for r in HIDDEN}}


def rate_gap(values: np.ndarray, groups: np.ndarray, n_boot: int, min_size: int, seed: int) -> dict:
    """Largest gap between groups in the rate of `values` (0/1, NaN: not measured), with a bootstrap 95%
    interval (each group resampled, as `group_gap` does) and a permutation p-value (`largest_gap`)."""
    keep = ~np.isnan(values)
    v, g = values[keep], groups[keep]
    names = [n for n in sorted(set(g.tolist())) if (g == n).sum() >= min_size]
    if len(names) < 2:
        return {"compared_groups": names, "note": f"fewer than two groups with at least {min_size} faces"}
    rng = np.random.default_rng(seed)
    idx = {n: np.flatnonzero(g == n) for n in names}
    obs = np.array([v[idx[n]].mean() for n in names])
    boot = np.stack([v[i[rng.integers(0, len(i), (n_boot, len(i)))]].mean(1) for i in idx.values()], 1)
    inside = np.isin(g, names)
    perm = []
    for _ in range(max(200, n_boot // 2)):
        shuffled = g.copy()
        shuffled[inside] = rng.permutation(g[inside])
        perm.append(np.ptp([v[shuffled == n].mean() for n in names]))
    return {"compared_groups": names, "rates": {n: float(r) for n, r in zip(names, obs)},
            **largest_gap(names, obs, boot, perm, ends=("highest", "lowest"))}


# ---------------------------------------------------------------- sanity check
def randomised_copy(model: EmotionModel, layers: tuple[str, ...], seed: int = 0) -> EmotionModel:
    """A copy of the model with the named top-level modules (e.g. fc, layer4) re-initialised."""
    with model.lock:
        net = copy.deepcopy(model.net)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in layers:
            for m in getattr(net, name).modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
                if hasattr(m, "reset_running_stats"):
                    m.reset_running_stats()
    return EmotionModel(net=net.eval(), labels=model.labels, prep=model.prep, source=f"{model.source} "
                        f"(randomised: {', '.join(layers) or 'nothing'})", config=model.config)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps' pixels; NaN when either map is constant."""
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


# ---------------------------------------------------------------- faithfulness
def faithfulness_tables(model: EmotionModel, sources: list, methods: list[str], layers: list[str], whole: bool,
                        n_random: int = N_RANDOM, progress: bool = False) -> dict[str, dict[str, dict]]:
    """{layer: {method: figures}} of the faithfulness check (emotion/faithfulness.py) on `sources`, each map
    for the face's predicted class, judged as the app judges it. Beside each real map two maps without this
    face's evidence are judged the same way, to measure how often such a map passes as "good": the same
    method's map of the previous face ("shuffled") and the inverted map (1 - map)."""
    return _faithfulness_by_layer(faithfulness_rows(model, sources, methods, layers, whole, n_random, progress))


def faithfulness_rows(model: EmotionModel, sources: list, methods: list[str], layers: list[str], whole: bool,
                      n_random: int = N_RANDOM, progress: bool = False, before=None, road_faces: int = 0,
                      road_percentiles=PERCENTILES) -> dict[tuple[str, str], list[dict]]:
    """{(layer, method): [faithfulness_many result per source]}: the measurements of faithfulness_tables.
    `before`: the picture before the first source (when `sources` are one process's block of a longer
    list), whose maps are the first face's "shuffled" control, as they would be in the whole list.
    The results of the first `road_faces` sources also hold under "road" the ROAD scores (train/road.py,
    at `road_percentiles`) of the map, its inversion and the same controls (the random maps drawn again
    from the same seed)."""
    rows: dict[tuple[str, str], list[dict]] = {(lay, m): [] for lay in layers for m in methods}
    previous: dict[tuple[str, str], np.ndarray] = {}
    if before is not None and sources:
        f = analyse(before, model, with_heatmaps=False, whole_image=whole).faces[0]
        x = model.prep.to_input([f.crop])
        for lay in layers:
            for m in methods:
                previous[lay, m] = explain(model, x, [model.labels.index(f.label)], m, lay)[1][0]
    for k, source in enumerate(tqdm(sources, desc="faithfulness", disable=not progress)):
        f = analyse(source, model, with_heatmaps=False, whole_image=whole).faces[0]
        x = model.prep.to_input([f.crop])
        pred = model.labels.index(f.label)
        other = other_class(f.probabilities, f.label)
        for lay in layers:
            for m in methods:
                agnostic = m in CLASS_AGNOSTIC
                heat = explain(model, x, [pred], m, lay)[1][0]
                maps = {"map": heat, "inverted": 1 - heat}
                if (lay, m) in previous:
                    maps["shuffled"] = previous[lay, m]
                previous[lay, m] = heat
                other_map = None if agnostic else (other, explain(model, x, [model.labels.index(other)], m, lay)[1][0])
                prior = face_prior(model.source, m, lay, model.prep.size, f.label)[0]
                calibrated = calibration(model.source, m, lay)
                res = faithfulness_many(model, x, maps, pred, prior=prior, other=other_map, n_random=n_random,
                                        layer=lay, class_agnostic=agnostic, margin=calibrated_margin(calibrated),
                                        calibrated=calibrated)
                if k < road_faces:
                    seed = res["map"]["seed"]
                    res["road"] = face_road(model, x, heat, pred, prior=prior,
                                            other=None if other_map is None else other_map[1],
                                            random_maps=random_maps(model, x, n_random, seed, lay)[0],
                                            percentiles=road_percentiles, seed=seed)
                rows[lay, m].append(res)
    return rows


def _faithfulness_by_layer(rows: dict[tuple[str, str], list[dict]]) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for (lay, m), rs in rows.items():
        if rs:
            out.setdefault(lay.split()[0], {})[m] = faithfulness_figures(rs)
            scored = [r for r in rs if "road" in r]
            if scored:
                out[lay.split()[0]][m]["road"] = road_figures(scored)
    return out


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _sem(values) -> float:
    v = np.array([x for x in values if x is not None], float)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def _level_at(r: dict, margin: float) -> str:
    """The level a judged map would get with another margin (untestable and empty maps stay so)."""
    if r["level"] not in ("good", "weak", "chance"):
        return r["level"]
    controls = {k: v for k, v in r["controls"].items() if k != "random"}
    return judge(r["score"], controls, r["random_scores"], class_agnostic=r["class_agnostic"], margin=margin)[0]


def _false_good(results: list[dict], level) -> dict[str, tuple[int, int] | None]:
    """(judged good, judged) for each uninformative map ("shuffled", "inverted"), with `level(result)`."""
    counts = {}
    for kind in ("shuffled", "inverted"):
        judged = [level(r[kind]) == "good" for r in results if kind in r]
        counts[kind] = (int(sum(judged)), len(judged)) if judged else None
    return counts


def _worst(counts: dict[str, tuple[int, int] | None]) -> tuple[int, int] | None:
    """The (k, n) of the kind of uninformative map judged good most often."""
    known = [c for c in counts.values() if c is not None]
    return max(known, key=lambda c: c[0] / c[1]) if known else None


def _false_good_fields(worst: tuple[int, int] | None) -> dict:
    """`false_good_rate`, `false_good_k` and `false_good_n` of the worse kind's (k, n) (`_worst`)."""
    return {"false_good_rate": worst[0] / worst[1] if worst else None,
            "false_good_k": worst[0] if worst else None, "false_good_n": worst[1] if worst else None}


def _at_margin(results: list[dict], margin: float) -> dict:
    """The share of good maps and the false-"good" rate (the worse kind), with its counts, were the margin
    `margin`."""
    return {"share_good": float(np.mean([_level_at(r["map"], margin) == "good" for r in results])),
            **_false_good_fields(_worst(_false_good(results, lambda r: _level_at(r, margin))))}


def calibrate(results: list[dict]) -> tuple[float, int, int] | None:
    """(margin, k, n) from `faithfulness_many` results with uninformative maps: the smallest margin of
    MARGIN_GRID whose false-"good" rate's 95% interval ends at or below MAX_FALSE_GOOD (`choose_margin`)."""
    counts = {}
    for g in MARGIN_GRID:
        b = _at_margin(results, g)
        if b["false_good_n"]:
            counts[g] = (b["false_good_k"], b["false_good_n"])
    return choose_margin(counts) if counts else None


def faithfulness_figures(results: list[dict]) -> dict:
    """Mean scores of the map and of each control, verdict shares (with 95% Wilson intervals), and the
    false-"good" rates of one method at one layer, from `faithfulness_many` results (keys "map", "inverted",
    optionally "shuffled"); `by_margin`: the same re-judged at each margin of MARGIN_GRID."""
    maps = [r["map"] for r in results]
    scored = [r for r in maps if r["score"] is not None]
    controls = {name: _mean(r["controls"].get(name) for r in scored) for name in CONTROLS}
    counts = _false_good(results, lambda r: r["level"])
    worst = _worst(counts)
    n_good = sum(r["level"] == "good" for r in maps)
    return {"n": len(maps), "mean_score": _mean(r["score"] for r in scored), "sem": _sem(r["score"] for r in scored),
            "mean_lead": _mean(r["lead"] for r in scored), "lead_sem": _sem(r["lead"] for r in scored),
            "controls": controls,
            "mean_beats_random": _mean(r["beats_random"] / r["n_random"] for r in scored),
            **{f"share_{level}": float(np.mean([r["level"] == level for r in maps])) for level in LEVELS},
            "share_good_ci95": list(wilson(n_good, len(maps))),
            "false_good": {k: None if c is None else c[0] / c[1] for k, c in counts.items()},
            **_false_good_fields(worst), "false_good_ci95": list(wilson(*worst)) if worst else None,
            "margin": maps[0].get("margin") if maps else None,
            "calibration": maps[0].get("calibration") if maps else None,
            "by_margin": {f"{g:g}": _at_margin(results, g) for g in MARGIN_GRID},
            "mean_ms": _mean(r["ms"] for r in maps)}


def recommend(by_layer: dict[str, dict[str, dict]]) -> dict | None:
    """The method and layer whose maps are judged "good" most often, among the class-specific methods whose
    measured false-"good" rate's 95% interval ends at or below MAX_FALSE_GOOD (ties broken by the mean lead
    over the best control); None when none qualifies."""
    best = None
    for lay, table in by_layer.items():
        for m, v in table.items():
            if m in CLASS_AGNOSTIC or v["false_good_ci95"] is None or v["false_good_ci95"][1] > MAX_FALSE_GOOD:
                continue
            key = (v["share_good"], v["mean_lead"] if v["mean_lead"] is not None else -np.inf)
            if best is None or key > best[0]:
                best = (key, {"method": m, "layer": lay, "share_good": v["share_good"],
                              "mean_lead": v["mean_lead"], "false_good_rate": v["false_good_rate"],
                              "false_good_ci95": v["false_good_ci95"], "share_good_ci95": v["share_good_ci95"]})
    return best[1] if best else None


# ---------------------------------------------------------------- the audit
def _mean_shares(rows: list[dict]) -> dict[str, float] | None:
    rows = [r for r in rows if r is not None]
    if not rows:
        return None
    return {k: float(np.mean([r[k] for r in rows])) for k in REGIONS}



def _look(model: EmotionModel, source, label: int, method: str, layer: str, whole: bool, to_ours: list[int]) -> dict:
    """One picture through the pipeline, as the audit keeps it: why there is no answer ("unreadable",
    "no_face") or the answer (our class index and the model's own name), its probabilities, the map's region
    shares, the regions' areas, the what-if (each region hidden: whether the label changes, how far the
    label's probability falls; emotion/whatif.py), and the face in grey at the model's side with its heatmap."""
    try:
        a = analyse(source, model, method=method, layer=layer, whole_image=whole)
    except ImageError:
        return {"why": "unreadable"}
    if not a.faces:
        return {"why": "no_face"}
    f = a.faces[0]
    s = face_region_shares(f, a.scale)
    size = model.prep.size
    grey = cv2.cvtColor(f.crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA if grey.shape[0] > size else cv2.INTER_CUBIC)
    w = what_if(model, f, a.scale)["regions"]
    return {"why": None, "pred": to_ours[model.labels.index(f.label)], "name": f.label,
            "conf": f.probabilities[f.label], "p_true": f.probabilities.get(CLASSES[label], 0.0),
            "share": s if sum(s.values()) > 0 else None, "area": face_region_areas(f, a.scale),
            "what_if": {r: (bool(w[r]["changes_label"]), float(w[r]["drop"])) for r in HIDDEN},
            "grey": grey, "heatmap": f.heatmap}


def _group_order(name: str):
    """Groups in natural order: "4-19" before "20-39", "male" before "unsure"."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def run_audit(model: EmotionModel, items: list[tuple[object, int]], out: str | Path, *, data_root: str | Path = ".",
              dataset: str = "folder", split: str | None = None, detect_faces: bool = False,
              method: str | None = None, layer: str = DEFAULT_LAYER, methods=tuple(METHODS),
              faithfulness_limit: int = 200, sanity_limit: int = 100, n_random: int = N_RANDOM,
              faith_layers: list[str] | None = None, road_limit: int = 50, road_percentiles=PERCENTILES,
              n_mistakes: int = 12, groups: str | Path | tuple | None = None, bootstrap: int = 1000,
              min_group_size: int = 10, seed: int = 0, progress: bool = True,
              sanity_stages=SANITY_STAGES, world: distributed.World = distributed.World()) -> dict | None:
    """Run every part of the audit on `items` ([(path or array, class index)]); write the report; return the summary.

    `groups`: a groups CSV (read_groups), or (where they come from, attributes, {image key: {attribute:
    group}}) as `rafdb_groups` gives. `method` (the main heatmaps' and the groups' verdicts'): as
    `main_method` picks it from `methods`. The first `road_limit` faces of the faithfulness subset are also
    scored with ROAD at `road_percentiles` (train/road.py). With several processes (`world`), each does its
    share of every part and rank 0 gathers the results, writes the report and returns the summary (the
    others return None)."""
    out = Path(out)
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    layer = resolve_layer(layer)
    method = main_method(method, methods)
    labels = list(CLASSES)  # true and predicted classes are compared by name, in our order
    to_ours = class_indices(model.labels)  # the model may list its classes in another order
    n_classes = len(labels)
    whole = not detect_faces
    sources = [str(s) if not isinstance(s, np.ndarray) else f"{dataset}.csv:{split}:{i}"
               for i, (s, _) in enumerate(items)]
    rng = random.Random(seed)
    timings: dict[str, float] = {}
    size = model.prep.size

    # ------------------------------------------------ 1. every image through the pipeline
    t0 = time.perf_counter()
    mine = world.share(len(items))  # this process's block (all the images for one process)
    looks = {i: _look(model, items[i][0], items[i][1], method, layer, whole, to_ours)
             for i in tqdm(mine, desc="classify + explain", disable=not progress or not world.main)}
    # the faces (grey face, heatmap) go to rank 0 only, which draws the figures; the rest to every process
    faces = {i: (look.pop("grey"), look.pop("heatmap")) for i, look in looks.items() if look["why"] is None}
    looks = {i: look for part in world.all_gather(looks) for i, look in part.items()}
    if world.size > 1:
        gathered = world.gather(faces)
        faces = {i: p for part in gathered for i, p in part.items()} if world.main else faces
    y_true, y_pred, conf, p_true, shares, areas = [], [], [], [], [], []
    face_sum = {k: np.zeros((2, n_classes, size, size)) for k in ("face", "map")}
    counts = np.zeros((2, n_classes), int)
    mistakes_pool: list[tuple[float, int]] = []
    no_face = unreadable = 0
    kept_maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # for the subsets below: (grey face, heatmap)
    for i, (source, label) in enumerate(items):
        y_true.append(label)
        look = looks[i]
        if look["why"] is not None:
            no_face += look["why"] == "no_face"
            unreadable += look["why"] == "unreadable"
            y_pred.append(-1)
            conf.append(0.0)
            p_true.append(0.0)
            shares.append(None)
            continue
        pred = look["pred"]
        y_pred.append(pred)
        conf.append(look["conf"])
        p_true.append(look["p_true"])
        shares.append(look["share"])
        areas.append(look["area"])
        if pred != label:
            mistakes_pool.append((conf[-1], i, look["name"]))  # the model's own name: it may be none of ours
        if i not in faces:  # another process's picture: rank 0 holds them all
            continue
        grey, heatmap = faces[i]
        for row, c in ((0, label), (1, pred)) if pred >= 0 else ((0, label),):
            face_sum["face"][row, c] += grey
            face_sum["map"][row, c] += heatmap
            counts[row, c] += 1
        kept_maps[i] = (np.uint8(np.clip(grey, 0, 255)), heatmap)
    timings["classify_explain_s"] = time.perf_counter() - t0
    n_images = len(items)
    per_image_ms = timings["classify_explain_s"] / max(1, n_images) * 1000
    if world.main:
        print(f"classify + explain: {n_images} images in {timings['classify_explain_s']:.1f} s ({per_image_ms:.0f} ms each)")

    y_true_a, y_pred_a = np.array(y_true), np.array(y_pred)
    summary = scores(y_true_a, y_pred_a, labels)
    summary.update({"dataset": dataset, "split": split, "detect_faces": detect_faces, "no_face": no_face,
                    "unreadable": unreadable, "weights": model.source, "method": method, "layer": layer.split()[0]})
    with_face = [i for i in range(n_images) if y_pred[i] >= 0]

    # what the report draws from the faces themselves (rank 0 holds them); everything else it reads from summary
    pictures = {"class_maps": {kind: (face_sum["face"][row], face_sum["map"][row], counts[row])
                              for row, kind in enumerate(("true", "predicted"))},
               "mean_face": face_sum["face"][0].sum(0) / max(1, counts[0].sum())}

    # ------------------------------------------------ 2. regions
    region_all = _mean_shares(shares)
    region_area = _mean_shares(areas)
    region_true = {labels[c]: _mean_shares([shares[i] for i in range(n_images) if y_true[i] == c]) for c in range(n_classes)}
    region_pred = {labels[c]: _mean_shares([shares[i] for i in range(n_images) if y_pred[i] == c]) for c in range(n_classes)}
    region_true = {k: v for k, v in region_true.items() if v}
    region_pred = {k: v for k, v in region_pred.items() if v}
    summary["region_shares"] = {"all": region_all, "per_true_class": region_true, "per_predicted_class": region_pred,
                                "flat_map": region_area}
    summary["outside_face_share"] = region_all["outside_face"] if region_all else None
    hidden = [looks[i].get("what_if") if y_pred[i] >= 0 else None for i in range(n_images)]
    summary["what_if"] = {"all": whatif_figures(hidden),
                          "per_predicted_class": {labels[c]: whatif_figures([hidden[i] for i in range(n_images)
                                                                             if y_pred[i] == c])
                                                  for c in range(n_classes) if (y_pred_a == c).any()}}

    # ------------------------------------------------ 3. confident mistakes
    t0 = time.perf_counter()
    mistakes = []
    for confidence, i, pred_name in sorted(mistakes_pool, reverse=True)[:n_mistakes] if world.main else ():
        true_name = labels[y_true[i]]
        map_true = None  # a model may lack one of our classes: then there is no map for it
        if true_name in model.labels:
            map_true = analyse(items[i][0], model, method=method, layer=layer, whole_image=whole,
                               explain_class=true_name).faces[0].heatmap
        crop, map_pred = kept_maps[i]
        mistakes.append({"source": sources[i], "true": true_name, "pred": pred_name,
                         "confidence": confidence, "p_true": p_true[i]})
        pictures.setdefault("mistakes", []).append({"crop": crop, "map_pred": map_pred, "map_true": map_true})
    summary["confident_mistakes"] = mistakes
    timings["mistakes_s"] = time.perf_counter() - t0

    # ------------------------------------------------ 4. faithfulness per method and layer, against the controls
    t0 = time.perf_counter()
    methods = [_method_name(m) for m in methods]
    faith_layers = [resolve_layer(name) for name in (faith_layers or [layer])]
    faith_idx = sorted(rng.sample(with_face, min(faithfulness_limit, len(with_face))))
    part = world.share(len(faith_idx))  # this process's block of the subset, and the face just before it
    rows = faithfulness_rows(model, [items[i][0] for i in faith_idx[part.start:part.stop]], methods, faith_layers,
                             whole, n_random, progress and world.main,
                             before=items[faith_idx[part.start - 1]][0] if part.start > 0 else None,
                             road_faces=max(0, min(part.stop, road_limit) - part.start),
                             road_percentiles=tuple(road_percentiles))
    if world.size > 1:
        parts = world.gather(rows)
        rows = {key: [r for p in parts for r in p[key]] for key in rows} if world.main else rows
    by_layer = _faithfulness_by_layer(rows)
    own_rows = rows.get((layer, method), [])  # each face's verdict for the heatmaps shown, for the groups
    verdicts = {i: r["map"]["level"] for i, r in zip(faith_idx, own_rows)} if len(own_rows) == len(faith_idx) else {}
    main = by_layer.get(layer.split()[0]) or (next(iter(by_layer.values())) if by_layer else {})
    faith_table = dict(main)
    if faith_table:
        first = faith_table[methods[0]]
        faith_table["random"] = {"mean_score": first["controls"]["random"], "n": first["n"]}
    summary["faithfulness"] = {m: v["mean_score"] for m, v in faith_table.items()}
    summary["faithfulness_detail"] = faith_table
    summary["faithfulness_by_layer"] = by_layer
    own = main.get(method) or {}
    summary["controls"] = own.get("controls")
    summary["false_good_rate"] = own.get("false_good_rate")
    summary["false_good_ci95"] = own.get("false_good_ci95")
    summary["road"] = own.get("road")
    summary["recommended"] = recommend(by_layer)
    timings["faithfulness_s"] = time.perf_counter() - t0
    road_idx = faith_idx[:max(0, road_limit)]
    if road_idx:
        # part of faithfulness_s
        timings["road_s"] = sum(r["road"]["ms"] for rs in rows.values() for r in rs if "road" in r) / 1000
    if faith_idx and world.main:
        print(f"faithfulness: {len(faith_idx)} images x {len(methods)} methods x {len(faith_layers)} layers in "
              f"{timings['faithfulness_s']:.1f} s")

    # ------------------------------------------------ 5. sanity check: randomise the top layers
    t0 = time.perf_counter()
    sanity_idx = sorted(rng.sample(with_face, min(sanity_limit, len(with_face))))
    stage_names = ["+".join(s) if s else "nothing" for s in sanity_stages]
    shown = sanity_idx[:4]  # the examples drawn
    # each process re-explains the subset's faces of its own block, whose trained maps it holds
    found = {i: {"rhos": [], "maps": []} for i in sanity_idx if i in mine}
    for stage, name in zip(sanity_stages, stage_names):
        if not sanity_idx:
            break
        rmodel = randomised_copy(model, stage, seed)
        for i in tqdm(list(found), desc=f"sanity: randomised {name}", disable=not progress or not world.main):
            a = analyse(items[i][0], rmodel, method=method, layer=layer, whole_image=whole,
                        explain_class=labels[y_pred[i]])
            rmap = a.faces[0].heatmap
            found[i]["rhos"].append(rank_correlation(kept_maps[i][1], rmap))
            if i in shown:
                found[i]["maps"].append(rmap)
    if world.size > 1:
        parts = world.gather(found)
        if not world.main:
            return None  # rank 0 has what it needs to finish the audit alone
        found = {i: f for p in parts for i, f in p.items()}
    stage_rhos = {name: [found[i]["rhos"][k] for i in sanity_idx] for k, name in enumerate(stage_names)}
    pictures["sanity"] = [{"crop": kept_maps[i][0], "trained": kept_maps[i][1], "maps": found[i]["maps"],
                          "rhos": found[i]["rhos"]} for i in shown]
    sanity = {}
    for name, rhos in stage_rhos.items() if sanity_idx else ():
        r = np.array(rhos, float)
        ok = r[~np.isnan(r)]
        sanity[name] = {"mean_rank_correlation": float(ok.mean()) if len(ok) else None,
                        "mean_abs_rank_correlation": float(np.abs(ok).mean()) if len(ok) else None,
                        "n": len(ok), "constant_maps": int(np.isnan(r).sum())}
    summary["sanity"] = sanity
    summary["sanity_rank_correlation"] = sanity[stage_names[-1]]["mean_rank_correlation"] if sanity else None
    timings["sanity_s"] = time.perf_counter() - t0
    if sanity_idx:
        print(f"sanity check: {len(sanity_idx)} images x {len(stage_names)} randomisations in {timings['sanity_s']:.1f} s")

    # ------------------------------------------------ 6. fairness
    t0 = time.perf_counter()
    fairness = None
    if groups:
        origin, attributes, rows = (str(groups), *read_groups(groups)) if isinstance(groups, (str, Path)) else groups
        matched = match_groups(sources, rows, data_root)
        fairness = {"groups_file": origin, "matched": int(sum(r is not None for r in matched)),
                    "unmatched": int(sum(r is None for r in matched)), "attributes": {}}
        for attr in attributes:
            g = np.array([(r or {}).get(attr, "") for r in matched], dtype=object)
            has = g != ""
            per_group = {}
            for name in sorted(set(g[has].tolist()), key=_group_order):
                idx = np.flatnonzero(g == name)
                s = scores(y_true_a[idx], y_pred_a[idx], labels)
                judged = [verdicts[i] for i in idx if i in verdicts]
                per_group[name] = {"n": s["n"], "accuracy": s["accuracy"],
                                   "mean_class_accuracy": s["mean_class_accuracy"],
                                   "per_class_accuracy": s["per_class_accuracy"],
                                   "confusion_matrix": s["confusion_matrix"],
                                   "regions": _mean_shares([shares[i] for i in idx]),
                                   "what_if": whatif_figures([hidden[i] for i in idx]),
                                   "verdicts": {"n": len(judged), **{level: (judged.count(level) / len(judged)
                                                                           if judged else None) for level in LEVELS}}}
            gap = group_gap(y_true_a[has], y_pred_a[has], g[has].astype(str), n_classes, bootstrap, min_group_size,
                            seed)
            fairness["attributes"][attr] = {"groups": per_group, **gap,
                                            "what_if_gaps": {r: rate_gap(
                                                np.array([h[r][0] if h else np.nan for h in hidden], float)[has],
                                                g[has].astype(str), bootstrap, min_group_size, seed) for r in HIDDEN}}
    summary["fairness"] = fairness
    timings["fairness_s"] = time.perf_counter() - t0

    summary["world_size"] = world.size
    summary["settings"] = {"faithfulness_images": len(faith_idx), "sanity_images": len(sanity_idx),
                           "n_random": n_random, "road_images": len(road_idx),
                           "road_percentiles": list(road_percentiles),
                           "methods": methods, "faithfulness_layers": list(by_layer), "seed": seed,
                           "sanity_stages": stage_names, "min_group_size": min_group_size, "bootstrap": bootstrap,
                           "max_false_good": MAX_FALSE_GOOD}
    summary["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    write_report(summary, out, pictures)
    return summary


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)




def rafdb_groups(root: str | Path) -> tuple[str, list[str], dict[str, dict[str, str]]] | None:
    """RAF-DB's manual annotations as groups for run_audit (train/data.py reads them), None (with a note)
    when the data set has none (e.g. the Kaggle layout)."""
    try:
        origin, rows = rafdb_attributes(root)
    except DatasetError as e:
        print(f"fairness: {e}")
        return None
    return f"RAF-DB's manual annotations ({origin})", ["gender", "race", "age"], rows


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = distributed.start()
    t0 = time.time()
    model = load_model(args.weights, fallback=False)
    split = args.split or DEFAULT_SPLIT[args.dataset]
    items = list_split(args.dataset, args.data, split, args.labels)
    if args.limit and args.limit < len(items):
        items = random.Random(args.seed).sample(items, args.limit)
    groups = args.groups
    if groups is None and args.dataset == "rafdb":
        groups = rafdb_groups(args.data) if world.main else None  # only rank 0 measures fairness
    summary = run_audit(model, items, args.out, data_root=args.data, dataset=args.dataset, split=split,
                        detect_faces=args.detect_faces, method=args.method, layer=args.layer,
                        methods=args.methods, faithfulness_limit=args.faithfulness_limit,
                        sanity_limit=args.sanity_limit, n_random=args.n_random, faith_layers=args.faith_layers,
                        road_limit=args.road_limit, road_percentiles=args.road_percentiles,
                        n_mistakes=args.mistakes,
                        groups=groups, bootstrap=args.bootstrap, min_group_size=args.min_group_size,
                        seed=args.seed, progress=not args.no_progress, world=world)
    distributed.stop()
    if summary is None:  # this process's share is done; rank 0 writes the report
        return None
    print(f"accuracy {summary['accuracy']:.1%}, mean-class {summary['mean_class_accuracy']:.1%} (n={summary['n']})")
    for lay, table in summary["faithfulness_by_layer"].items():
        for m, v in table.items():
            ctl = ", ".join(f"{k} {'n/a' if c is None else f'{c:.3f}'}" for k, c in v["controls"].items())
            fg = "n/a" if v["false_good_rate"] is None else (
                f"{v['false_good_rate']:.1%} ({v['false_good_k']} of {v['false_good_n']}, 95% interval "
                f"{v['false_good_ci95'][0]:.1%} to {v['false_good_ci95'][1]:.1%})")
            score = "n/a" if v["mean_score"] is None else f"{v['mean_score']:.3f}"
            print(f"faithfulness {lay} {m}: map {score} ({ctl}); good {v['share_good']:.1%}, weak "
                  f"{v['share_weak']:.1%}, chance {v['share_chance']:.1%}, empty {v['share_empty']:.1%}; "
                  f"false good {fg}")
            print("  with margin " + "; ".join(
                f"{g}: good {b['share_good']:.1%}, false good "
                + ("n/a" if b["false_good_rate"] is None else f"{b['false_good_rate']:.1%}")
                for g, b in v["by_margin"].items()) + f" (judged at {v['margin']})")
            rd = v.get("road")
            if rd:
                fmt = lambda x, f="{:.3f}": "n/a" if x is None else f.format(x)  # noqa: E731
                print(f"  ROAD: map {fmt(rd['mean']['map'])}, " + ", ".join(
                    f"{k} {fmt(rd['mean'][k])}" for k in ("inverted", *CONTROLS)) + "; map beats the face prior: "
                    f"deletion {fmt(rd['map_beats_prior']['deletion'], '{:.1%}')}, ROAD "
                    f"{fmt(rd['map_beats_prior']['road'], '{:.1%}')}, agree {fmt(rd['agreement'], '{:.1%}')} "
                    f"(n={rd['n']}; {fmt(rd['mean_ms'], '{:.0f}')} ms a face)")
    if summary["recommended"]:
        r = summary["recommended"]
        print(f"recommended: {r['method']} at {r['layer']} (good {r['share_good']:.1%})")
    if summary["sanity_rank_correlation"] is not None:
        print(f"sanity rank correlation after randomising {summary['settings']['sanity_stages'][-1]}: "
              f"{summary['sanity_rank_correlation']:.3f}")
    if summary["outside_face_share"] is not None:
        print(f"heatmap mass outside the face: {summary['outside_face_share']:.1%}")
    print(f"report: {Path(args.out) / 'report.html'} (total {time.time() - t0:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
