"""Grad-CAM beside the default map (emotion/compare.py): known agreements, and the second map is Grad-CAM's."""
import numpy as np
import pytest

from emotion.compare import agreement, second_map, sentence
from emotion.explain import explain, grid_side
from emotion.pipeline import analyse
from tests import fixtures as fx


def test_two_identical_maps_agree_at_one_and_a_map_and_its_inverse_at_minus_one():
    rng = np.random.default_rng(0)
    m = rng.random((64, 64)).astype(np.float32)
    assert agreement(m, 8, m, 8) == pytest.approx(1.0)
    assert agreement(m, 8, 1 - m, 8) == pytest.approx(-1.0)
    assert agreement(m, 8, np.zeros_like(m), 8) is None  # a flat map: nothing to rank


def test_maps_are_compared_on_the_coarser_grid():
    """An 8 x 8 map whose 2 x 2 blocks average to a 4 x 4 map's cells ranks those cells alike: agreement 1,
    though the fine map disagrees with the coarse one pixel by pixel inside each cell."""
    coarse = np.arange(16, dtype=np.float32).reshape(4, 4)
    fine = np.kron(coarse, np.ones((2, 2), np.float32)) + np.kron(np.ones((4, 4)), [[0.3, -0.3], [-0.3, 0.3]])
    big = lambda g: np.kron(g, np.ones((64 // g.shape[0],) * 2, np.float32))  # noqa: E731 - at the input's side
    assert agreement(big(fine), 8, big(coarse), 4) == pytest.approx(1.0)
    assert np.corrcoef(big(fine).ravel(), big(coarse).ravel())[0, 1] < 0.999  # (not equal pixel by pixel)
    assert "disagree" in sentence("Occlusion", "Grad-CAM", 0.1, 4)
    assert "agree on this face" in sentence("Occlusion", "Grad-CAM", 0.8, 4)


def test_the_second_map_is_grad_cams_for_the_same_class(model):
    a = analyse(fx.PORTRAIT, model)  # the default: Occlusion at layer2
    face = a.faces[0]
    s = second_map(model, face, a.method, a.layer)
    x = model.prep.to_input([face.crop])
    _, want = explain(model, x, [model.labels.index(face.explained)], "Grad-CAM", "layer3")
    assert np.abs(s["heatmap"] - want[0]).max() < 1e-5
    own, third = (grid_side(model.net, layer, model.prep.size) for layer in ("layer2", "layer3"))
    assert own == 2 * third  # (layer3's grid is half layer2's: at 64 px, 4 x 4 against 8 x 8)
    assert s["cells"] == [third, third] and s["grid"] == [third, third]
    assert s["agreement"] == pytest.approx(agreement(face.heatmap, own, want[0], third), abs=1e-4)
    g = analyse(fx.PORTRAIT, model, method="Grad-CAM", layer="layer3")
    assert second_map(model, g.faces[0], g.method, g.layer) is None  # it is Grad-CAM's already
