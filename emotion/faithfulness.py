"""Does a heatmap tell the truth? A per-face deletion test against random maps, cheap enough for the app.

The score
---------
Let p0 be the model's probability for the explained class c on the face as it is. Rank the input's pixels
by the map's value, most highlighted first (equal values are ordered by a seeded random key, so every map
ranks all pixels and no map removes more than another), and let q be a pixel's rank as a share of all
pixels (0 for the most highlighted, 1 for the least). Remove the pixels graded by rank: each pixel is
blended towards a heavily blurred copy of the face (Gaussian, sigma = side / 8, in the model's normalised
input space) with weight

    w(q) = max(0, 1 - q / DEPTH),  DEPTH = 0.5

so the most highlighted pixel is fully replaced, the weight falls linearly to 0 at the median pixel, and
the least highlighted half is untouched. This picture is exactly the average, pixel by pixel, of the
pictures "top k of the map removed" over every k from 0 to 50 %, and it costs one forward pass per map
instead of one per map and k. The blur keeps the face's overall brightness and shape, so the picture stays
face-like, but wipes out the local detail (the set of the mouth, the brows) an expression is read from.
With p1 the model's probability for c on that picture,

    score(map) = p0 - p1

the drop, in probability units (0.2 = 20 points), of the explained class when what the map marks as most
important is taken away. A faithful map points at the pixels the decision rests on, so removing them costs
more than removing pixels chosen any other way; a negative score means that removing them made the
class more likely.

The control
-----------
pytorch-grad-cam's RandomCAM: maps made from the same layer's activations with random channel weights
(uniform in -1..1, drawn from a generator seeded with `seed`), so they have the same coarse, face-shaped
look as a real CAM but carry no information about the class. `n_random` of them get the same deletion
test. `beats_random` counts the random maps whose score the real map's score strictly exceeds, and the
verdict is read from it:

    every |score| < 0.01     "untestable": hiding any part of the face hardly moves the class's
                                          probability (typical for a "why not X?" map of an unlikely
                                          class), so the map cannot be checked this way
    else beats >= 90 %       "good":      the map explains the prediction better than B of N random maps
    else beats >= 60 %       "weak":      better than most random maps, not by much; read it with care
    otherwise                "chance":    not better than chance; don't trust it

The perturbed batch and its forward pass go through pytorch-grad-cam's `PerturbationConfidenceMetric` with
the graded blur as the perturbation. Its ROAD metrics (hard removal of the top k with a noisy linear
imputer) were the first choice, but they need one forward pass per map and k plus a sparse solve per map
and k (~15 ms each here): 30+ perturbed faces per map set, several times the app's budget.

Cost: one forward pass of one face (the random maps and p0) and one batched forward pass of 1 + n_random
perturbed faces (n maps with `faithfulness_many`). Everything is deterministic for a given seed.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import torch
from pytorch_grad_cam import RandomCAM
from pytorch_grad_cam.metrics.perturbation_confidence import (
    PerturbationConfidenceMetric,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from emotion.explain import DEFAULT_LAYER, LAYERS, resolve_layer
from emotion.model import EmotionModel

DEPTH = 0.5  # share of the pixels touched by the graded removal (the most highlighted ones)
N_RANDOM = 10
GOOD, WEAK = 0.9, 0.6  # shares of the random maps a map must beat for "good" and "weak"
UNTESTABLE = 0.01  # below this probability drop for every map, the test cannot tell maps apart
BLUR_SIGMA = 1 / 8  # of the input side
LEVELS = ("good", "weak", "chance", "untestable")


class GradedBlurRemoval:
    """A perturbation for pytorch-grad-cam's `PerturbationConfidenceMetric`.

    Called with one face's input (C x H x W) and a rank map q (H x W, 0 = most highlighted pixel, see
    `rank_map`), it blends each pixel towards the blurred face with weight max(0, 1 - q / depth).
    """

    def __init__(self, depth: float = DEPTH, sigma_fraction: float = BLUR_SIGMA):
        self.depth, self.sigma_fraction = depth, sigma_fraction

    def blurred(self, img: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(img.detach().cpu().numpy().transpose(1, 2, 0))  # H,W,C
        out = cv2.GaussianBlur(arr, (0, 0), self.sigma_fraction * arr.shape[0], borderType=cv2.BORDER_REFLECT)
        out = out.reshape(arr.shape)  # OpenCV drops a single channel's axis
        return torch.from_numpy(out.transpose(2, 0, 1).copy()).to(img.dtype)

    def __call__(self, img: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        w = torch.clamp(1 - q.to(img.dtype) / self.depth, 0, 1)
        return img * (1 - w) + self.blurred(img) * w


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


def random_maps(model: EmotionModel, x: torch.Tensor, n: int = N_RANDOM, seed: int = 0,
                layer=DEFAULT_LAYER) -> tuple[np.ndarray, np.ndarray]:
    """`n` RandomCAM maps (n x H x W, 0..1) for one face, and the model's probabilities for it (C,)."""
    x = _one(x)
    rng = np.random.default_rng([seed, 2])
    with model.lock, torch.no_grad(), _SeededRandomCAM(model.net, [_target_layer(model, layer)], n, rng) as cam:
        maps = cam(input_tensor=x, targets=None)
        probs = cam.outputs.softmax(1)[0].float().numpy()
    return maps.astype(np.float32), probs


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


def removal_probabilities(model: EmotionModel, x: torch.Tensor, ranks: np.ndarray, target: int,
                          depth: float = DEPTH) -> np.ndarray:
    """The probability of `target` after the graded removal of each rank map's top pixels (M,)."""
    x = _one(x)
    batch = x.expand(len(ranks), -1, -1, -1).contiguous()
    targets = [ClassifierOutputSoftmaxTarget(int(target))] * len(ranks)
    net = model.net
    metric = PerturbationConfidenceMetric(GradedBlurRemoval(depth))
    with model.lock, torch.no_grad():
        out = metric(batch, ranks, targets, lambda t: net(t.contiguous(memory_format=torch.channels_last)),
                     return_diff=False)
    return np.asarray(out, np.float32)


def judge(score: float, random_scores, target_name: str = "this class") -> tuple[int, str, str]:
    """(beats_random, level, verdict) for a map's score against the random maps' scores."""
    random_scores = np.asarray(random_scores, np.float64)
    n = len(random_scores)
    beats = int(np.sum(score > random_scores + 1e-6))
    if max([abs(score)] + np.abs(random_scores).tolist()) < UNTESTABLE:
        return beats, "untestable", (f"Hiding any part of the face hardly changes the {target_name} score, "
                                     "so this map can't be checked.")
    if beats >= GOOD * n:
        return beats, "good", f"This map explains the prediction better than {beats} of {n} random maps."
    if beats >= WEAK * n:
        return beats, "weak", (f"This map beats only {beats} of {n} random maps: a little better than chance, "
                               "read it with care.")
    return beats, "chance", (f"This map is not better than chance (it beats {beats} of {n} random maps): "
                             "don't trust it.")


def faithfulness_many(model: EmotionModel, x: torch.Tensor, heatmaps: dict[str, np.ndarray], target,
                      n_random: int = N_RANDOM, seed: int = 0, layer=DEFAULT_LAYER,
                      depth: float = DEPTH) -> dict[str, dict]:
    """`faithfulness` for several maps of one face (e.g. one per CAM method), sharing the random maps.

    Returns {name: result} with the same keys as `faithfulness`; every result holds the same
    `random_scores`, and a map's result does not depend on which other maps are judged with it.
    """
    if n_random < 1:
        raise ValueError("n_random must be at least 1: a map is only judged against random maps.")
    t0 = time.perf_counter()
    x = _one(x)
    c = _class_index(model, target)
    size = tuple(x.shape[-2:])
    rand, probs = random_maps(model, x, n_random, seed, layer)
    p0 = float(probs[c])
    names = list(heatmaps)
    ranks = [rank_map(heatmaps[name], size, (seed, 0)) for name in names]
    ranks += [rank_map(r, size, (seed, 1, j)) for j, r in enumerate(rand)]
    scores = p0 - removal_probabilities(model, x, np.stack(ranks), c, depth)
    random_scores = scores[len(names):]
    target_name = model.labels[c]
    random_mean = float(random_scores.mean())
    ms = (time.perf_counter() - t0) * 1000
    results = {}
    for i, name in enumerate(names):
        beats, level, verdict = judge(float(scores[i]), random_scores, target_name)
        results[name] = {
            "score": float(scores[i]),
            "random_scores": [float(s) for s in random_scores],
            "random_mean": random_mean,
            "margin": float(scores[i]) - random_mean,
            "beats_random": beats,
            "n_random": int(n_random),
            "level": level,
            "verdict": verdict,
            "target": target_name,
            "base_probability": p0,
            "ms": ms,
        }
    return results


def faithfulness(model: EmotionModel, x: torch.Tensor, heatmap: np.ndarray, target, n_random: int = N_RANDOM,
                 seed: int = 0, layer=DEFAULT_LAYER, depth: float = DEPTH) -> dict:
    """How well one face's heatmap explains the model's probability for `target` (index or class name).

    `x` is the face's model input (1 x 3 x S x S, as `model.prep.to_input([crop])` makes it), `heatmap`
    the map over it (any size, resized to S x S), `layer` the layer the random control maps are read
    from (a `LAYERS` name or a module; use the layer the real map came from). Holds `model.lock` around
    the forward passes. Returns a dict:

        score             drop of the target's probability when the map's top pixels are removed (above)
        random_scores     the same for each of the `n_random` random maps (list of floats)
        random_mean       their mean;   margin = score - random_mean
        beats_random      how many random maps the map's score strictly exceeds (0..n_random)
        n_random
        level             "good" | "weak" | "chance" | "untestable"
        verdict           the plain-words sentence for the user
        target            the class name;   base_probability = p0
        ms                time taken
    """
    return faithfulness_many(model, x, {"map": heatmap}, target, n_random, seed, layer, depth)["map"]


def face_faithfulness(model: EmotionModel, face, layer=DEFAULT_LAYER, n_random: int = N_RANDOM,
                      seed: int = 0) -> dict:
    """`faithfulness` for an `emotion.pipeline.FaceResult` (its crop, heatmap and explained class)."""
    x = model.prep.to_input([face.crop])
    return faithfulness(model, x, face.heatmap, face.explained, n_random=n_random, seed=seed, layer=layer)
