"""Occlusion maps mark the cells whose blurring lowers the class, on a grid of the layer's own cells."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from emotion.explain import explain, grid_side
from emotion.faces import cut, detect_faces
from emotion.pipeline import analyse
from emotion.occlusion import blurred, occlusion_maps, windows
from tests import fixtures as fx

SIDE, GRID, CELL = 64, 8, 8


def energy(t: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    return (t[:, :, rows, cols] ** 2).mean((1, 2, 3))


def toy_logits(t: torch.Tensor) -> torch.Tensor:
    """Class 0 reads the texture of cell (1, 5) only; class 1 that of the 2 x 2 cells at the bottom left;
    class 2 is lowered by the texture of cell (1, 5) (so blurring it only raises class 2)."""
    a = energy(t, slice(8, 16), slice(40, 48))
    b = energy(t, slice(48, 64), slice(0, 16))
    return torch.stack([a, b, -a], 1)


@pytest.fixture(scope="module")
def noise():
    return torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, SIDE, SIDE)).astype(np.float32))


def test_the_map_marks_exactly_the_cells_the_class_reads(noise):
    x = noise.repeat(3, 1, 1, 1)
    maps = occlusion_maps(toy_logits, x, [0, 1, 2], GRID)
    want0 = np.zeros((SIDE, SIDE), np.float32)
    want0[8:16, 40:48] = 1
    assert np.allclose(maps[0], want0, atol=1e-5)
    cells1 = maps[1].reshape(GRID, CELL, GRID, CELL)[:, 0, :, 0]
    assert (cells1[6:, :2] > 0.5).all() and cells1[6:, :2].min() > 0.5 and np.count_nonzero(cells1 > 1e-5) == 4
    assert np.count_nonzero(maps[2]) == 0  # blurring raises class 2 everywhere it changes it: no evidence


def test_a_real_map_is_the_drop_of_each_blurred_cell(model):
    """Each cell's value is the class logit's fall when that cell alone is blurred, computed here by hand."""
    rgb = np.asarray(Image.open(fx.PORTRAIT).convert("RGB"))
    x = model.prep.to_input([cut(rgb, model.prep.square(detect_faces(rgb)[0], rgb.shape))])
    side = model.prep.size
    grid = grid_side(model.net, "layer2", side)
    cell = side // grid
    logits, maps = explain(model, x, [None], "Occlusion", "layer2")
    c = int(logits[0].argmax())
    blur = blurred(x)
    batch = []
    for i in range(grid):
        for j in range(grid):
            y = x.clone()
            y[..., i * cell:(i + 1) * cell, j * cell:(j + 1) * cell] = blur[..., i * cell:(i + 1) * cell,
                                                                            j * cell:(j + 1) * cell]
            batch.append(y)
    drops = np.maximum(float(logits[0, c]) - model.logits(torch.cat(batch))[:, c].numpy(), 0).reshape(grid, grid)
    want = (drops - drops.min()) / (drops.max() - drops.min())
    blocks = maps[0].reshape(grid, cell, grid, cell)
    assert np.ptp(blocks, axis=(1, 3)).max() < 1e-6  # one value a cell: the grid is the map's own
    assert np.abs(blocks[:, 0, :, 0] - want).max() < 1e-3


@given(side=st.integers(8, 300), data=st.data())
def test_windows_tile_the_side_in_as_many_cells_as_the_grid(side, data):
    grid = data.draw(st.integers(1, side))
    window, stride = windows(side, grid)
    starts = [k * stride for k in range((side - window) // stride + 1)]  # where captum places them
    assert len(starts) == grid
    covered = np.zeros(side, bool)
    for s in starts:
        covered[s:s + window] = True
    assert covered.all() and starts[-1] + window <= side


def test_the_photo_default_is_occlusion_at_8_x_8_and_follows_the_class(model):
    a = analyse(fx.PORTRAIT, model)
    assert (a.method, a.layer.split()[0], a.grid) == ("Occlusion", "layer2", 8)
    assert a.heatmap_name == "Occlusion at layer2, 8 x 8 cells"
    own = a.faces[0]
    other = sorted(own.probabilities, key=own.probabilities.get)[-2]  # the runner-up
    f = analyse(fx.PORTRAIT, model, explain_class=other).faces[0]
    x = model.prep.to_input([own.crop])
    want = occlusion_maps(model.logits, x.repeat(2, 1, 1, 1), [model.labels.index(c) for c in (own.label, other)], 8)
    assert np.abs(own.heatmap - want[0]).max() < 1e-5 and np.abs(f.heatmap - want[1]).max() < 1e-5
    assert np.abs(f.heatmap - own.heatmap).max() > 0.05
