"""ROAD beside the deletion test (train/road.py): on a model whose evidence is known by construction, and the
agreement figures on results built by hand."""
import numpy as np
import pytest
import torch

from emotion.model import CLASSES, EmotionModel, Preprocess
from train import road

S = 32
P0 = (slice(4, 12), slice(4, 12))  # the only pixels class 0's logit reads (6 % of the picture)


class PatchNet(torch.nn.Module):
    """Class 0's logit is 4 x (mean of the input over P0 - 1): 4 on the face below, where P0 is 2; the other
    classes' logits are 0. Any other pixel can change without moving it."""

    def forward(self, x):
        z0 = 4 * (x[:, :, P0[0], P0[1]].mean((1, 2, 3)) - 1)
        return torch.cat([z0[:, None], torch.zeros(len(x), len(CLASSES) - 1)], 1)


@pytest.fixture(scope="module")
def setup():
    model = EmotionModel(net=PatchNet().eval(), labels=CLASSES, prep=Preprocess(size=S), source="synthetic")
    grey = torch.randn(1, 1, S, S, generator=torch.Generator().manual_seed(0)) * 0.3
    grey[:, :, P0[0], P0[1]] = 2.0
    return model, grey.expand(1, 3, S, S).contiguous()  # grey as three equal channels, as the model's input


def patch(p) -> np.ndarray:
    m = np.zeros((S, S), np.float32)
    m[p] = 1
    return m


def test_the_map_of_the_evidence_scores_high_and_its_inversion_low(setup):
    """Filling in the top 20-80 % of the truth's pixels takes all of P0 (the logit falls from 4 to about -4:
    imputed from neighbours near 0), filling in its bottom 20-80 % leaves P0 whole (no change): ROADCombined =
    (0 - (-8)) / 2 = 4. Its inversion is the mirror case: about -4. This holds only if every percentile
    removes the share it names although the map is 0 on 94 % of the pixels (ties), and if higher map values
    mean more relevant."""
    model, x = setup
    corner = np.zeros((S, S), np.float32)
    corner[:20, :20] = 1  # holds P0 and 6 times as much else: where the evidence lies on average, not exactly
    maps = {"truth": patch(P0), "inverted": 1 - patch(P0), "corner": corner}
    s = road.road_scores(model, x, maps, 0, seed=3)
    assert s["truth"] == pytest.approx(4.0, abs=0.5)
    assert s["inverted"] == pytest.approx(-4.0, abs=0.5)
    assert s["inverted"] < 0 < s["corner"] < s["truth"]
    # the same seed gives the same noise, hence the same scores
    assert road.road_scores(model, x, maps, 0, seed=3) == s


CHECKER = torch.from_numpy(np.indices((S, S)).sum(0) % 2 * 2.0 - 1).float()  # no pixel is its neighbours' mean


class CountNet(torch.nn.Module):
    """Class 0's logit is -10 x the share of pixels that differ from CHECKER: it sees how many pixels were
    filled in (an imputed pixel, a mean of its neighbours plus noise, never keeps its value), not which."""

    def forward(self, x):
        changed = ((x[:, 0] - CHECKER).abs() > 1e-4).float().mean((1, 2))
        return torch.cat([-10 * changed[:, None], torch.zeros(len(x), len(CLASSES) - 1)], 1)


def test_every_percentile_fills_in_the_share_it_names_even_where_the_map_is_flat():
    """If both of ROAD's directions fill in (100 - p) % of the pixels at percentile p, a model that only counts
    filled-in pixels gives every map a score of 0: (-10 s - (-10 s)) / 2. Handed over as they are, maps that
    are flat on most pixels would have the whole face filled in on one side (the patch: 0.31)."""
    model = EmotionModel(net=CountNet().eval(), labels=CLASSES, prep=Preprocess(size=S), source="synthetic")
    x = CHECKER.expand(1, 3, S, S).contiguous()
    half = np.zeros((S, S), np.float32)
    half[:, :16] = 1
    maps = {"patch": patch(P0), "inverted": 1 - patch(P0), "half": half,
            "random": np.random.default_rng(0).random((S, S)).astype(np.float32)}
    s = road.road_scores(model, x, maps, 0, seed=0)
    assert s == pytest.approx({k: 0.0 for k in maps}, abs=0.01)  # one pixel either way is 10 / 1024 / 8


def test_face_road_scores_the_map_and_each_control(setup):
    model, x = setup
    corner = np.zeros((S, S), np.float32)
    corner[:20, :20] = 1
    rand = np.stack([patch(P0), corner, np.random.default_rng(0).random((S, S)).astype(np.float32)])
    r = road.face_road(model, x, patch(P0), 0, prior=np.ones((S, S), np.float32) * np.linspace(0, 1, S),
                       other=None, random_maps=rand, seed=1)
    assert set(r) == {"map", "inverted", "face_prior", "other_class", "random", "ms"}
    assert r["map"] == pytest.approx(4.0, abs=0.5) and r["inverted"] == pytest.approx(-4.0, abs=0.5)
    assert r["other_class"] is None and r["map"] > max(r["face_prior"], r["random"])
    # "random" is the mean of the random maps' scores, each as it scores alone (up to the imputation's noise)
    alone = [road.road_scores(model, x, {"r": m}, 0, seed=1)["r"] for m in rand]
    assert np.ptp(alone) > 1 and r["random"] == pytest.approx(np.mean(alone), abs=0.05)
    empty = road.face_road(model, x, np.zeros((S, S), np.float32), 0, prior=patch(P0), other=patch(P0),
                           random_maps=rand[:1], seed=1)
    assert empty["map"] is None and empty["inverted"] is None
    assert empty["other_class"] == pytest.approx(empty["face_prior"], abs=0.05) and empty["face_prior"] > 3
    with pytest.raises(ValueError, match="strictly between 0 and 100"):
        road.road_scores(model, x, {"m": patch(P0)}, 0, percentiles=(0, 50))


def _row(score, prior, road_map, road_prior, level):
    return {"map": {"score": score, "level": level, "controls": {"face_prior": prior}},
            "road": {"map": road_map, "inverted": None if road_map is None else -road_map, "face_prior": road_prior,
                     "other_class": 0.1, "random": 0.0, "ms": 10.0}}


def test_agreement_on_beating_the_face_prior_by_hand():
    """Faces 1 and 6 both metrics put above the prior, face 3 neither; faces 2 and 4 split them; face 5's map
    is empty (no score by either): agreement 3 of 5. Of the three faces judged "good" (1, 2, 6), ROAD puts
    two above the prior."""
    rows = [_row(2.0, 1.0, 1.0, 0.5, "good"),
            _row(2.0, 1.0, 0.2, 0.5, "good"),
            _row(0.5, 1.0, 0.1, 0.5, "weak"),
            _row(0.5, 1.0, 0.9, 0.5, "chance"),
            _row(None, 1.0, None, 0.5, "empty"),
            _row(3.0, 1.0, 2.0, 0.5, "good")]
    f = road.road_figures(rows)
    assert f["n"] == 5 and f["agreement"] == pytest.approx(3 / 5)
    assert f["map_beats_prior"] == pytest.approx({"deletion": 3 / 5, "road": 3 / 5})
    assert f["good_above_prior"] == pytest.approx(2 / 3) and f["n_good"] == 3
    assert f["mean"]["map"] == pytest.approx((1.0 + 0.2 + 0.1 + 0.9 + 2.0) / 5)
    assert f["mean"]["face_prior"] == pytest.approx(0.5) and f["mean"]["inverted"] == pytest.approx(-0.84)
    assert f["mean_ms"] == pytest.approx(10.0)
