"""A second opinion on the audit's heatmaps: ROAD, as pytorch-grad-cam implements it, beside our deletion test.

ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods") removes
pixels in a map's order and fills them in by noisy linear imputation (each removed pixel the weighted mean
of its neighbours, plus Gaussian noise of 0.01), so the filled-in face carries no trace of the shape of what
was removed. Scored here with `pytorch_grad_cam.metrics.road.ROADCombined`, on the class's logit (the
quantity our deletion test and Grad-CAM use), on the normalised input the model sees (grey, as 3 equal
channels; the imputation's noise is drawn per channel, so filled-in pixels are grey only up to that noise).

What the library does, read from its source (pytorch_grad_cam/metrics/road.py, perturbation_confidence.py):

- `ROADMostRelevantFirst(p)` fills in the pixels whose map value is at or above the map's p-th percentile,
  i.e. the (100 - p) % MOST relevant; `ROADLeastRelevantFirst(p)` the (100 - p) % LEAST relevant. So
  percentile 20 removes 80 % of the face, 80 removes 20 %.
- Each returns logit(after) - logit(before): below 0 when the removal lowers the class.
- `ROADCombined(percentiles)` = (mean LeRF - mean MoRF) / 2 over the percentiles: HIGHER IS BETTER (removing
  what the map marks costs the class much, removing what it leaves costs little); in logit units.
- It thresholds map values, so equal values all fall on one side: a map that is 0 on most pixels (common
  for Grad-CAM) would have far more than (100 - p) % removed, up to the whole face. Each map is therefore
  handed over as its pixel ranks (`emotion.faithfulness.rank_map`, ties broken by the same seeded key as the
  deletion test), so each percentile removes the share it names, in the same order our test uses.

Per face the map, its inversion and each of the deletion test's controls (face prior, other class's map,
random maps) are scored; `road_figures` reports their means and how often the two metrics agree on "the
map beats the face prior".
"""
from __future__ import annotations

import time

import numpy as np
import torch
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from emotion.faithfulness import is_empty, rank_map
from emotion.model import EmotionModel

PERCENTILES = (20, 40, 60, 80)  # ROADCombined's percentiles: 80, 60, 40 and 20 % of the pixels removed
SCORED = ("map", "inverted", "face_prior", "other_class", "random")  # what road_figures averages


def road_scores(model: EmotionModel, x: torch.Tensor, maps: dict[str, np.ndarray], target: int,
                percentiles=PERCENTILES, seed: int = 0) -> dict[str, float]:
    """ROADCombined score (higher: more faithful; logit units) of each map (H x W, any size, higher = more
    relevant) for class index `target` on one face's model input `x` (1 x 3 x S x S), in one batch. `seed`
    breaks ties between equal map values (as the deletion test's key) and seeds the imputation's noise
    (drawn map after map: the same maps in the same order get the same scores)."""
    if not all(0 < p < 100 for p in percentiles):
        raise ValueError(f"ROAD percentiles must lie strictly between 0 and 100, got {list(percentiles)}.")
    if not maps:
        return {}
    size = tuple(x.shape[-2:])
    names = list(maps)
    cams = np.stack([1 - rank_map(maps[n], size, (seed % 2**32, 0)) for n in names]).astype(np.float32)
    batch = x.detach().expand(len(names), -1, -1, -1).contiguous()
    targets = [ClassifierOutputTarget(int(target))] * len(names)
    net = model.net
    metric = ROADCombined(percentiles=list(percentiles))
    with model.lock, torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        scores = metric(batch, cams, targets, lambda t: net(t.contiguous(memory_format=torch.channels_last)))
    return {n: float(s) for n, s in zip(names, np.ravel(scores))}


def face_road(model: EmotionModel, x: torch.Tensor, heatmap: np.ndarray, target: int, *, prior: np.ndarray,
              other: np.ndarray | None, random_maps: np.ndarray, percentiles=PERCENTILES, seed: int = 0) -> dict:
    """ROAD scores of one face's map, its inversion (1 - map) and the deletion test's controls: {"map",
    "inverted", "face_prior", "other_class" (None without one), "random" (mean over the random maps), "ms"}.
    The map and its inversion get None when empty (no positive evidence), as the deletion test skips them."""
    t0 = time.perf_counter()
    maps = {} if is_empty(heatmap) else {"map": heatmap, "inverted": 1 - heatmap}
    maps["face_prior"] = prior
    if other is not None:
        maps["other_class"] = other
    maps.update({f"random {k}": m for k, m in enumerate(random_maps)})
    s = road_scores(model, x, maps, target, percentiles, seed)
    rand = [v for k, v in s.items() if k.startswith("random ")]
    return {"map": s.get("map"), "inverted": s.get("inverted"), "face_prior": s["face_prior"],
            "other_class": s.get("other_class"), "random": float(np.mean(rand)) if rand else None,
            "ms": (time.perf_counter() - t0) * 1000}


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def road_figures(rows: list[dict]) -> dict:
    """From faithfulness rows that carry ROAD scores ({"map": the deletion test's result, "road": face_road's
    result, ...}): the mean ROAD score of the map and of each control, and, over the faces where both metrics
    scored the map, how often each says the map beats the face prior (a larger score than the prior's map, on
    the same face), how often they agree, and how often ROAD puts a map judged "good" above the prior."""
    road = [r["road"] for r in rows]
    both = [r for r in rows if r["road"]["map"] is not None and r["map"]["score"] is not None]
    ours = [r["map"]["score"] > r["map"]["controls"]["face_prior"] for r in both]
    theirs = [r["road"]["map"] > r["road"]["face_prior"] for r in both]
    good = [t for r, t in zip(both, theirs) if r["map"]["level"] == "good"]
    share = lambda v: float(np.mean(v)) if v else None  # noqa: E731
    return {"mean": {name: _mean(r[name] for r in road) for name in SCORED},
            "n": len(both),
            "map_beats_prior": {"deletion": share(ours), "road": share(theirs)},
            "agreement": share([a == b for a, b in zip(ours, theirs)]),
            "good_above_prior": share(good), "n_good": len(good),
            "mean_ms": _mean(r["ms"] for r in road)}
