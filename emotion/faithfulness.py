"""Does a heatmap tell the truth about this face and this class? A deletion test against three controls.

The score
---------
The quantity explained is the class's logit z_c: Grad-CAM and its relatives differentiate the logit, not
the softmax probability (a probability also moves when other classes' logits move, and saturates near 0
and 1, so an unlikely class's map could not be tested at all). Rank the input's pixels by the map's
value, most highlighted first (equal values ordered by a random key seeded from the input). For each fraction f
in `FRACTIONS` delete the top f of the pixels, filling them in from the pixels around them (OpenCV's Telea
inpainting on the model's own pixels, the way emotion/whatif.py hides a region: the detail an expression is
read from goes, and no colour, edge or blur is added that the model could read as a feature), and record the
drop z_c(face) - z_c(deleted). No map is made with this perturbation: Occlusion blurs its cells away, the CAM
methods read gradients and activations, so the test favours none of them by construction. The score is the
area under this deletion curve, from (0, 0) to the largest fraction, divided by that fraction: the mean
drop of the logit, in logit units, while up to half of the face is taken away in the map's order.

The controls
------------
Maps that carry no evidence about this face and this class get the same test, on the same face:

- face_prior: what an average explanation of this class looks like. The mean map of the same method and
  layer over the FER2013 training faces the model predicts as the class (over all of them for a class it
  rarely predicts), `face_prior.npz` in the model's folder (`weights/face_prior.npz` for the shipped model),
  made by `python -m train.face_prior` for that model; for a model without one, or a method or layer the
  file lacks, a centre prior aligned with the face template (emotion.regions). It knows where faces
  are and where this model usually looks for the class (the mouth for a smile), nothing about this face.
- other_class: the same method's map for the most likely other class, on the same face (class
  sensitivity). A map that explains class c must single out c's evidence better than another class's
  map does. Left out for class-agnostic methods (Eigen-CAM), whose map is the same for every class.
- random: `n_random` RandomCAM maps (the layer's activations with random channel weights: the same
  coarse, face-shaped look, no class information), drawn per face from a seed made from the input's bytes
  and the class, so a given input always gets the same controls and different faces different ones.

The verdict
-----------
    the map has no positive value   "empty":      no evidence for this class; never scored
    every |drop| < UNTESTABLE       "untestable": hiding any part of the face hardly moves the logit
    beats every control by MARGIN   "good":       the map explains the class score on this face
    beats every random map only     "weak":       it shows where the model looks on most faces, but not
                                                  better than the average map or another class's map
    otherwise                       "chance":     not better than random maps; don't trust it

"beats by MARGIN" means score > control + MARGIN * |control|: with MARGIN = 1, at least twice the drop.
Each model calibrates its own margins, on training faces it was not judged on, and stores them beside its
face prior (`face_prior.npz`, `python -m train.face_prior`): for each method and layer, the smallest margin
of `MARGIN_GRID` at which maps without the face's evidence (another face's map, the inverted map 1 - map)
pass as "good" so seldom that the 95% Wilson interval of that rate ends at or below 5% (`calibration`).
A method and layer for which no margin of the grid gets there is never judged "good". A model without a
calibration uses MARGIN for every method. `python -m train.audit` measures the same rate again on the faces
it reports (`false_good_rate`, with its interval), and the shipped model's figures, with the command that
measured them, are in `weights/audit.json` and docs/trust.md: this docstring quotes none.

The perturbed faces (maps x fractions) go through pytorch-grad-cam's `PerturbationConfidenceMetric` in one
batch. Cost: one pass for the random maps and the base logit (with, for Grad-CAM, the other class's map:
`gradcam_controls`), the other class's map where the face does not carry it already (Occlusion's
`class_maps` do), and one batched forward pass of (maps + 2 + n_random) x len(FRACTIONS) perturbed faces.
"""
from __future__ import annotations

import hashlib
import time
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from pytorch_grad_cam import RandomCAM
from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from scipy.stats import binomtest

from emotion.explain import CLASS_AGNOSTIC, DEFAULT_LAYER, DEFAULT_METHOD, LAYERS, explain, resolve_layer
from emotion.model import FACE_PRIOR_FILE, EmotionModel
from emotion.priority import LIVE_FIRST
from emotion.whatif import hide

FRACTIONS = (0.1, 0.25, 0.5)  # shares of the pixels deleted, most highlighted first
N_RANDOM = 1  # random maps per face: with one, the whole check costs what the old 10-map check did
MARGIN = 1.0  # without a calibration: a "good" map's score is at least twice the face prior's and the other class's
MARGIN_GRID = (0.0, 0.25, 0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5, 2.0, 3.0)  # the margins a calibration chooses from
MAX_FALSE_GOOD = 0.05  # the upper end of the 95% interval of the false-"good" rate a calibrated margin holds to
UNTESTABLE = 0.05  # logit units: below this drop for every map and fraction, the test cannot tell maps apart
LEVELS = ("good", "weak", "chance", "untestable", "empty")
CONTROLS = ("face_prior", "other_class", "random")


class InpaintDeletion:
    """A perturbation for pytorch-grad-cam's `PerturbationConfidenceMetric`: the pixels where `mask` is 1 are
    filled in from the rest of the face (`emotion.whatif.hide`: Telea inpainting) on the model's own uint8
    pixels, given and returned in the model's normalised input space (C x H x W); the other pixels are left
    exactly as they were. `mean` and `std` are the model's normalisation (`Preprocess.mean`, `.std`)."""

    def __init__(self, mean, std):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        LIVE_FIRST.wait_turn()  # (inpainting is work on the cores too: a live frame goes first)
        keep = mask.to(img.dtype)
        m = mask.detach().cpu().numpy() > 0.5
        px = ((img.detach().cpu().float() * self.std + self.mean) * 255).round().clamp(0, 255).to(torch.uint8)
        px = px.permute(1, 2, 0).numpy()  # H, W, C
        grey = bool((px == px[..., :1]).all())  # a grey model's three channels are one
        filled = hide(np.ascontiguousarray(px[..., 0]) if grey else px, m)
        filled = np.repeat(filled[..., None], px.shape[2], 2) if grey else filled.reshape(px.shape)
        y = (torch.from_numpy(filled).permute(2, 0, 1).float() / 255 - self.mean) / self.std
        return img * (1 - keep) + y.to(img.dtype) * keep


class _SeededRandomCAM(RandomCAM):
    """RandomCAM drawing `n` weight vectors from its own generator, all applied to one face's activations.

    No gradients are needed, so the backward pass is skipped: one forward pass makes all `n` maps.
    """

    def __init__(self, model, target_layers, n: int, rng: np.random.Generator):
        super().__init__(model, target_layers)
        self.uses_gradients = False
        self.n, self.rng = n, rng

    def get_cam_weights(self, input_tensor, target_layer, target_category, activations, grads):
        return self.rng.uniform(-1, 1, size=(self.n, activations.shape[1]))


def _target_layer(model: EmotionModel, layer):
    return layer if isinstance(layer, torch.nn.Module) else LAYERS[resolve_layer(layer)](model.net)


def _one(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"Expected one face's input (1 x C x H x W), got shape {tuple(x.shape)}.")
    return x.detach()


def _class_index(model: EmotionModel, target) -> int:
    return model.labels.index(target) if isinstance(target, str) else int(target)


def input_seed(x: torch.Tensor, target: int) -> int:
    """A seed made from the input's bytes and the class: the same input always gets the same controls."""
    h = hashlib.blake2b(np.ascontiguousarray(x.detach().cpu().numpy()).tobytes(), digest_size=8)
    h.update(int(target).to_bytes(4, "little"))
    return int.from_bytes(h.digest(), "little")


def is_empty(heatmap: np.ndarray) -> bool:
    """No positive evidence: the map is zero (or NaN) everywhere, or flat, so it singles no pixel out."""
    m = np.nan_to_num(np.asarray(heatmap, np.float64))
    return m.size == 0 or float(m.max()) <= 0 or float(np.ptp(m)) <= 1e-6


def random_maps(model: EmotionModel, x: torch.Tensor, n: int = N_RANDOM, seed: int = 0,
                layer=DEFAULT_LAYER) -> tuple[np.ndarray, np.ndarray]:
    """`n` RandomCAM maps (n x H x W, 0..1) for one face, and the model's logits for it (C,)."""
    x = _one(x)
    rng = np.random.default_rng([seed, 2])
    model.turns.wait_turn()
    with model.lock, torch.no_grad(), _SeededRandomCAM(model.net, [_target_layer(model, layer)], n, rng) as cam:
        maps = cam(input_tensor=x, targets=None)
        logits = cam.outputs[0].float().numpy()
    return maps.astype(np.float32), logits


def gradcam_controls(model: EmotionModel, x: torch.Tensor, other: int, n: int = N_RANDOM, seed: int = 0,
                     layer: str = DEFAULT_LAYER) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For Grad-CAM at one of `LAYERS`, the controls in one pass: the logits (C,), class `other`'s Grad-CAM
    map and `n` random maps, equal to `explain(..., [other], "Grad-CAM", layer)` and `random_maps(..., n,
    seed, layer)` (RandomCAM's recipe: the ReLU of the layer's activations weighted by uniform(-1, 1) channel
    weights from the same seeded generator, scaled as pytorch-grad-cam scales). Saves the second pass."""
    x = _one(x)
    logits, a, grads = model.gradcam_parts(x, resolve_layer(layer).split()[0], [int(other)])
    act = a.detach()[0].double().numpy()  # C x h x w
    size = (x.shape[-1], x.shape[-2])
    weights = np.concatenate([grads[0].double().mean((1, 2)).numpy()[None],
                              np.random.default_rng([seed, 2]).uniform(-1, 1, size=(n, act.shape[0]))])
    cams = np.maximum(np.einsum("nc,chw->nhw", weights, act), 0).astype(np.float32)
    maps = scale_cam_image(scale_cam_image(cams, size))
    return logits.detach()[0].float().numpy(), maps[0].astype(np.float32), maps[1:].astype(np.float32)


def rank_map(heatmap: np.ndarray, size: tuple[int, int], key: tuple[int, ...] = (0,)) -> np.ndarray:
    """Each pixel's rank in the map as a share of all pixels: 0 for the most highlighted, (N-1)/N the least.

    The map is first resized to `size` (H, W); equal values are ordered by a random key seeded with `key`.
    """
    h, w = size
    m = np.asarray(heatmap, np.float32)
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    m = np.nan_to_num(m).ravel()
    tiebreak = np.random.default_rng(list(key)).random(m.size)
    order = np.lexsort((tiebreak, -m))  # most highlighted first
    q = np.empty(m.size, np.float32)
    q[order] = np.arange(m.size, dtype=np.float32) / m.size
    return q.reshape(h, w)


def deletion_logits(model: EmotionModel, x: torch.Tensor, ranks: np.ndarray, target: int,
                    fractions=FRACTIONS) -> np.ndarray:
    """The target's logit after deleting each rank map's top `fractions` of pixels (M x F)."""
    x = _one(x)
    masks = np.stack([(q < f) for q in ranks for f in fractions]).astype(np.float32)  # (M*F) x H x W
    batch = x.expand(len(masks), -1, -1, -1).contiguous()
    targets = [ClassifierOutputTarget(int(target))] * len(masks)
    metric = PerturbationConfidenceMetric(InpaintDeletion(model.prep.mean, model.prep.std))
    with model.guard(), torch.no_grad():  # (model.logits: by ONNX Runtime, with no lock, where it runs)
        out = metric(batch, masks, targets, lambda t: model.logits(t.contiguous(memory_format=torch.channels_last)),
                     return_diff=False)
    return np.asarray(out, np.float32).reshape(len(ranks), len(fractions))


def curve_area(drops: np.ndarray, fractions=FRACTIONS) -> np.ndarray:
    """Area under deletion curves (rows of `drops`, starting from a drop of 0 at fraction 0) / the largest
    fraction: the mean drop over the range."""
    drops = np.atleast_2d(drops)
    xs = np.r_[0.0, fractions]
    ys = np.concatenate([np.zeros((len(drops), 1)), drops], 1)
    return ((ys[:, 1:] + ys[:, :-1]) / 2 * np.diff(xs)).sum(1) / xs[-1]


# ---------------------------------------------------------------- the face prior
def centre_prior(size: int = 64) -> np.ndarray:
    """A map over the crop that peaks at the template face's centre and fades over the face box."""
    from emotion.regions import TEMPLATE_BOX, TEMPLATE_LANDMARKS

    marks = np.asarray(TEMPLATE_LANDMARKS)
    cx, cy = marks[:, 0].mean(), marks[:, 1].mean()
    sx, sy = (TEMPLATE_BOX[2] - TEMPLATE_BOX[0]) / 4, (TEMPLATE_BOX[3] - TEMPLATE_BOX[1]) / 4
    g = (np.arange(size) + 0.5) / size
    return np.exp(-((g[None, :] - cx) ** 2 / (2 * sx ** 2) + (g[:, None] - cy) ** 2 / (2 * sy ** 2))).astype(np.float32)


def prior_key(method: str, layer: str) -> str:
    return f"{method}|{resolve_layer(layer).split()[0]}"


@lru_cache(maxsize=8)
def _prior_maps(path: str, stamp: tuple[int, int]) -> dict[str, np.ndarray]:
    """The maps of one face_prior.npz (`stamp`: its size and mtime, so a rebuilt file is read again)."""
    with np.load(path) as z:
        return {k: z[k].astype(np.float32) for k in z.files}


def prior_maps(folder: str | Path) -> dict[str, np.ndarray]:
    """{"method|layer[|class]": mean map} of the model in `folder` (its FACE_PRIOR_FILE), {} without one."""
    f = Path(folder) / FACE_PRIOR_FILE
    if not f.is_file():
        return {}
    st = f.stat()
    return _prior_maps(str(f.resolve()), (st.st_size, st.st_mtime_ns))


def face_prior(folder: str | Path, method: str = DEFAULT_METHOD, layer=DEFAULT_LAYER, size: int = 64,
               target: str | None = None) -> tuple[np.ndarray, str]:
    """(the face-prior map at `size`, where it came from): of the model in `folder` (`EmotionModel.source`),
    the mean map of `method` at `layer` over the FER2013 training faces it predicts as `target` (what an
    average explanation of that class looks like), else over all of them, else (no file, or a method or
    layer the file lacks) the centre prior. Each model has its own: another model's mean maps say nothing
    about where this one looks."""
    key = prior_key(method, layer) if isinstance(layer, str) else None
    maps = prior_maps(folder)
    if key and target and f"{key}|{target}" in maps:
        m, source = maps[f"{key}|{target}"], f"mean {target} map over FER2013 training faces"
    elif key and key in maps:
        m, source = maps[key], "mean map over FER2013 training faces"
    else:
        return centre_prior(size), "centre prior"
    return cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR), source


# ---------------------------------------------------------------- the verdict
def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate of k in n (scipy's binomtest)."""
    if n <= 0:
        return 0.0, 1.0
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def calibration_key(method: str, layer: str) -> str:
    return f"calibration|{prior_key(method, layer)}"


def choose_margin(counts: dict[float, tuple[int, int]], limit: float = MAX_FALSE_GOOD) -> tuple[float, int, int]:
    """(margin, k, n): the smallest margin of `counts` ({margin: (uninformative maps judged good, judged)})
    whose 95% Wilson interval ends at or below `limit`; (inf, k, n) of the largest margin when none does."""
    for g in sorted(counts):
        k, n = counts[g]
        if n and wilson(k, n)[1] <= limit:
            return float(g), int(k), int(n)
    g = max(counts)
    return float("inf"), int(counts[g][0]), int(counts[g][1])


def calibration(folder: str | Path, method: str, layer) -> dict | None:
    """The calibrated margin of `method` at `layer` for the model in `folder` (stored in its face_prior.npz
    by `python -m train.face_prior`): {"margin" (None where no margin of the grid held the rate down: never
    judged good), "false_good" (k / n at that margin, or at the largest), "k", "n", "ci95"}; None where the
    model has none."""
    if not isinstance(layer, str):
        return None
    v = prior_maps(folder).get(calibration_key(method, layer))
    if v is None:
        return None
    margin, k, n = (float(t) for t in np.ravel(v)[:3])
    return {"margin": margin if np.isfinite(margin) else None, "false_good": k / n if n else None, "k": int(k),
            "n": int(n), "ci95": wilson(k, n)}


def calibrated_margin(calibrated: dict | None) -> float:
    """The margin to judge by, from a `calibration`: its margin (infinite where no margin held the
    uninformative maps down), or MARGIN without one."""
    if calibrated is None:
        return MARGIN
    return float("inf") if calibrated["margin"] is None else calibrated["margin"]


def margin_for(folder: str | Path, method: str, layer=DEFAULT_LAYER) -> float:
    """The margin a map of `method` at `layer` must beat the controls by to be judged good: the model's own
    calibrated margin (`calibration`, `calibrated_margin`), else MARGIN."""
    return calibrated_margin(calibration(folder, method, layer))


def _beats(score: float, control: float, margin: float = MARGIN) -> bool:
    return score > control + margin * abs(control)


def judge(score: float, controls: dict[str, float], random_scores, target_name: str = "this class",
          other_name: str | None = None, class_agnostic: bool = False, margin: float = MARGIN,
          calibrated: dict | None = None) -> tuple[str, str]:
    """(level, verdict) of a map's score against the controls' scores (`face_prior`, maybe `other_class`)
    and the random maps'. `untestable` and `empty` are decided before (they have no meaningful score).
    `calibrated` (`calibration`): where the margin came from, said in a "good" verdict with its interval."""
    random_scores = np.asarray(random_scores, np.float64)
    n = len(random_scores)
    if not all(_beats(score, r, 0.0) for r in random_scores):
        beaten = int(np.sum(score > random_scores))
        return "chance", (f"This map is not better than random maps (it beats {beaten} of {n}): don't trust it.")
    missed = [name for name, v in controls.items() if not _beats(score, v, margin)]
    if class_agnostic:
        why = (" It beats the average face's map too, but this method draws the same map for every class, so it"
               " shows what the layer responds to, not why the model chose this class." if not missed else
               " It does not beat the map an average face gets, and this method draws the same map for every"
               " class: it shows where the model looks on most faces, not why it chose this class.")
        return "weak", f"This map beats the random maps.{why}"
    if not missed:
        times = "more than" if margin <= 0 else f"at least {1 + margin:g} times as much as"
        odds = f" (The margin, {margin:g}, was not calibrated for this model, method and layer.)"
        if calibrated and calibrated.get("n"):
            lo, hi = calibrated["ci95"]
            odds = (f" Maps without this face's evidence pass this test {calibrated['k'] / calibrated['n']:.1%} of "
                    f"the time (95% interval {lo:.1%} to {hi:.1%}, {calibrated['n']} training faces).")
        return "good", (f"This map explains the {target_name} score: hiding what it marks lowers the score {times} "
                        f"hiding what the average {target_name} face's map or the {other_name or 'other class'}'s "
                        f"map marks, and more than any of {n} random maps.{odds}")
    if not np.isfinite(margin):
        return "weak", ("This map beats the random maps, but for this model this method and layer cannot be judged "
                        "good: even maps without the face's evidence pass the full test too often. Read it as where "
                        "the model looks, not as proof.")
    names = {"face_prior": "the map an average face gets", "other_class": f"the map for {other_name or 'another class'}"}
    return "weak", (f"This map beats the random maps but not {' or '.join(names[m] for m in missed)}: it shows "
                    f"where the model looks on most faces, not evidence of {target_name} in this face.")


EMPTY_VERDICT = ("No evidence for {c}: the method found nothing in this face that raises the {c} score, "
                 "so there is no map to check.")
UNTESTABLE_VERDICT = "Hiding any part of the face hardly changes the {c} score, so this map can't be checked."


# ---------------------------------------------------------------- the check
def faithfulness_many(model: EmotionModel, x: torch.Tensor, heatmaps: dict[str, np.ndarray], target, *,
                      prior: np.ndarray | None = None, other: tuple[str, np.ndarray] | None = None,
                      n_random: int = N_RANDOM, seed: int | None = None, layer=DEFAULT_LAYER,
                      class_agnostic: bool = False, fractions=FRACTIONS, margin: float = MARGIN,
                      precomputed: tuple[np.ndarray, np.ndarray] | None = None,
                      calibrated: dict | None = None) -> dict[str, dict]:
    """Judge several maps of one face for class `target` (index or name) against shared controls.

    `prior` is the face-prior map (default: `centre_prior`), `other` (class name, map) the same method's
    map for another class on this face (None: no class-sensitivity control), `layer` the layer the random
    maps are read from (a `LAYERS` name or a module), `seed` (default: from the input's bytes and the
    class) seeds the random maps and tie-breaking; `precomputed` = (logits, random maps) made already for
    this seed (`gradcam_controls`); `margin` the margin to judge by and `calibrated` where it came from
    (`calibration`, said in a good verdict). Returns {name: result}, results as `faithfulness`
    describes; a map's result does not depend on which other maps are judged with it.
    """
    if n_random < 1:
        raise ValueError("n_random must be at least 1: a map is always judged against random maps.")
    t0 = time.perf_counter()
    x = _one(x)
    c = _class_index(model, target)
    seed = input_seed(x, c) if seed is None else int(seed)
    size = tuple(x.shape[-2:])
    rand, logits = random_maps(model, x, n_random, seed, layer) if precomputed is None else precomputed[::-1]
    z0 = float(logits[c])
    prior = centre_prior(size[0]) if prior is None else prior
    control_maps = {"face_prior": prior}
    if other is not None and not class_agnostic:
        control_maps["other_class"] = other[1]
    names = [n for n in heatmaps if not is_empty(heatmaps[n])]
    all_maps = [heatmaps[n] for n in names] + list(control_maps.values()) + list(rand)
    ranks = np.stack([rank_map(m, size, (seed % 2**32, 0)) for m in all_maps])
    drops = z0 - deletion_logits(model, x, ranks, c, fractions)
    scores = curve_area(drops, fractions)
    k = len(names)
    control_scores = {name: float(s) for name, s in zip(control_maps, scores[k:k + len(control_maps)])}
    random_scores = scores[k + len(control_maps):]
    controls = {**control_scores, "random": float(random_scores.mean())}
    testable = float(np.abs(drops[k:]).max()) >= UNTESTABLE
    target_name = model.labels[c]
    other_name = other[0] if other is not None else None
    ms = (time.perf_counter() - t0) * 1000
    common = {"target": target_name, "quantity": "logit", "base_logit": z0, "fractions": list(fractions),
              "controls": controls, "random_scores": [float(s) for s in random_scores],
              "random_mean": controls["random"], "n_random": int(n_random), "other_class": other_name,
              "class_agnostic": bool(class_agnostic), "seed": seed,
              "margin": float(margin) if np.isfinite(margin) else None, "calibration": calibrated, "ms": ms}
    results = {}
    for name in heatmaps:
        if name not in names:
            results[name] = {**common, "score": None, "curve": None, "lead": None, "beats_random": 0,
                             "beats": {}, "level": "empty", "verdict": EMPTY_VERDICT.format(c=target_name)}
            continue
        i = names.index(name)
        score = float(scores[i])
        beats = {n: _beats(score, v, margin) for n, v in control_scores.items()}
        if testable or float(np.abs(drops[i]).max()) >= UNTESTABLE:
            level, verdict = judge(score, control_scores, random_scores, target_name, other_name, class_agnostic,
                                   margin, calibrated)
        else:
            level, verdict = "untestable", UNTESTABLE_VERDICT.format(c=target_name)
        results[name] = {**common, "score": score, "curve": [float(d) for d in drops[i]],
                         "lead": score - max(control_scores.values()),
                         "beats_random": int(np.sum(score > random_scores)), "beats": beats,
                         "level": level, "verdict": verdict}
    return results


def faithfulness(model: EmotionModel, x: torch.Tensor, heatmap: np.ndarray, target, **kwargs) -> dict:
    """How well one face's heatmap explains the model's logit for `target` (index or class name).

    `x` is the face's model input (1 x 3 x S x S, as `model.prep.to_input([crop])` makes it), `heatmap`
    the map over it (any size, resized to S x S); keyword arguments as `faithfulness_many`. The forward
    passes hold `model.guard()` (the model's lock where PyTorch runs them, none for ONNX Runtime). Returns a dict:

        level             "good" | "weak" | "chance" | "untestable" | "empty"
        verdict           the plain-words sentence for the user
        score             area under the map's deletion curve: mean drop of the logit (None when empty)
        curve             the drop at each of `fractions`
        controls          the same score for face_prior, other_class (when judged) and random (mean)
        random_scores     each random map's score;  random_mean, n_random, beats_random (how many it beats)
        beats             {control: bool} for face_prior and other_class
        lead              score - the best of face_prior and other_class (how far the map leads them)
        margin            the margin it was judged by (None: this method and layer are never judged good)
        calibration       where the margin came from (`calibration`), None for the default MARGIN
        target, other_class, class_agnostic, quantity ("logit"), base_logit, seed, ms
    """
    return faithfulness_many(model, x, {"map": heatmap}, target, **kwargs)["map"]


def other_class(probabilities: dict[str, float], explained: str) -> str:
    """The most likely class other than `explained`."""
    return max((p, c) for c, p in probabilities.items() if c != explained)[1]


def face_faithfulness(model: EmotionModel, face, method: str = DEFAULT_METHOD, layer=DEFAULT_LAYER,
                      n_random: int = N_RANDOM, seed: int | None = None) -> dict:
    """`faithfulness` of an `emotion.pipeline.FaceResult`'s heatmap (its crop, map and explained class),
    with `method`'s map for the most likely other class and `method`'s face prior at `layer` as controls.

    The random maps and the logits come from one pass (`gradcam_controls`: ONNX Runtime where it runs), and
    the other class's map from the face itself where its method made every class's at once (Occlusion's
    `class_maps`), so the check adds only its deletion passes."""
    x = model.prep.to_input([face.crop])
    agnostic = method in CLASS_AGNOSTIC
    other, precomputed = None, None
    explained = model.labels.index(face.explained)
    name = other_class(face.probabilities, face.explained)
    k = model.labels.index(name)
    if isinstance(layer, str):  # the logits and the random maps (and Grad-CAM's other-class map) in one pass
        seed = input_seed(x, explained) if seed is None else seed
        logits, gradcam_other, rand = gradcam_controls(model, x, explained if agnostic else k, n_random, seed,
                                                       layer)
        precomputed = (logits, rand)
    if not agnostic:
        if method == "Grad-CAM" and precomputed is not None:
            other = (name, gradcam_other)
        elif getattr(face, "class_maps", None) is not None:  # made with the face's own map (Occlusion)
            other = (name, face.class_maps[k])
        else:
            other = (name, explain(model, x, [k], method, layer)[1][0])
    prior, _ = face_prior(model.source, method, layer, model.prep.size, face.explained)
    calibrated = calibration(model.source, method, layer)
    return faithfulness(model, x, face.heatmap, face.explained, prior=prior, other=other, n_random=n_random,
                        seed=seed, layer=layer, class_agnostic=agnostic, precomputed=precomputed,
                        margin=calibrated_margin(calibrated), calibrated=calibrated)
