"""Bad and odd pictures: each gets a sensible result or a clear ImageError, never a crash."""
import numpy as np
import pytest

from emotion.images import WORK_SIDE, ImageError, load_image
from emotion.pipeline import NO_FACE, analyse
from tests import fixtures as fx

# expected outcome per file: an error message (regex) or the number of faces
EXPECTED = {
    "empty": "empty",
    "text_as_jpg": "not an image",
    "truncated": "truncated or corrupt",
    "bomb_header": "3,600 megapixels",
    "one_pixel": 0,
    "no_face": 0,
    "grey": 1,
    "rgba": 1,
    "cmyk": 1,
    "sixteen_bit": 1,
    "exif_rotated": 1,
    "gif_animated": 1,
    "ten_faces": 10,
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return fx.awkward_files(tmp_path_factory.mktemp("awkward"))


@pytest.mark.parametrize("name", EXPECTED)
def test_awkward_input(model, files, name):
    expected = EXPECTED[name]
    if isinstance(expected, str):
        with pytest.raises(ImageError, match=expected):
            analyse(files[name], model)
        return
    a = analyse(files[name], model)
    assert len(a.faces) == expected
    if expected == 0:
        assert NO_FACE in a.messages


def test_colour_modes_agree_with_the_original(model, files):
    base = analyse(fx.PORTRAIT, model).faces[0]
    for name in ("grey", "cmyk", "sixteen_bit"):  # the model sees grey: these must read the same face
        f = analyse(files[name], model).faces[0]
        assert f.label == base.label, name
        assert abs(f.probabilities[f.label] - base.probabilities[base.label]) < 0.15, name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(tmp_path, orientation):
    """A 384 x 512 picture stored as a camera stores it for each EXIF orientation: it is read upright, at its
    upright size (512 high, 384 wide), with the original size the right way round too (so boxes are not
    scaled by 384/512)."""
    upright = np.asarray(fx.tall_portrait())
    loaded = load_image(fx.exif_oriented(tmp_path / f"o{orientation}.jpg", orientation))
    assert loaded.rgb.shape == (512, 384, 3)
    assert loaded.original_size == (384, 512) and loaded.scale == 1.0
    assert np.abs(loaded.rgb.astype(int) - upright.astype(int)).mean() < 3  # the same pixels, not turned


def test_exif_rotation_is_applied(model, files, tmp_path):
    fx.tall_portrait().save(tmp_path / "upright.jpg", quality=95)
    upright = analyse(tmp_path / "upright.jpg", model).faces[0]
    turned = analyse(files["exif_rotated"], model)
    assert turned.to_json()["image_size"] == [384, 512]
    assert turned.faces[0].label == upright.label
    assert np.abs(np.array(turned.faces[0].box) - np.array(upright.box)).max() < 4  # same place, not turned


def test_animated_gif_uses_first_frame(files):
    loaded = load_image(files["gif_animated"])
    assert "first one was analysed" in loaded.notes[0]


def test_huge_photo_is_scaled_down(model, tmp_path_factory):
    path = fx.huge_jpeg(tmp_path_factory.mktemp("huge") / "huge.jpg")
    loaded = load_image(path)
    assert max(loaded.rgb.shape[:2]) == WORK_SIDE and loaded.original_size == (12000, 12000)
    a = analyse(path, model)
    assert len(a.faces) == 1
    x0, y0, x1, y1 = a.faces[0].box  # in the original 12000 px frame
    assert 4976 < (x0 + x1) / 2 < 7024 and 4976 < (y0 + y1) / 2 < 7024


def test_arrays_of_any_kind(model):
    rgb = np.asarray(fx.portrait())
    assert len(analyse(rgb, model).faces) == 1
    assert len(analyse(rgb.mean(2), model).faces) == 1  # float grey
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert len(analyse(rgba, model).faces) == 1
    with pytest.raises(ImageError):
        analyse(np.zeros((0, 0, 3), np.uint8), model)
    with pytest.raises(ImageError, match="No image"):
        analyse(None, model)


def test_sixteen_bit_and_float_pictures_are_scaled_by_their_format_not_stretched(model, tmp_path):
    """One flat-lit photo (grey levels 90..169) saved as 8-bit PNG, 16-bit PNG, float TIFF (0..1) and given as
    a uint16 array: every copy reads as the 8-bit one, pixel for pixel, and gets the same answer. Stretching
    each picture to its own darkest and lightest pixels would give the 16-bit copies 0..255."""
    from PIL import Image

    grey = np.asarray(fx.portrait().convert("L")).astype(np.float32)
    flat = np.rint(90 + grey * (79 / 255)).astype(np.uint8)
    assert (flat.min(), flat.max()) == (90, 169)
    Image.fromarray(flat).save(tmp_path / "eight.png")
    Image.fromarray(flat.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    Image.fromarray(flat.astype(np.float32) / 255).save(tmp_path / "float.tif")
    assert Image.open(tmp_path / "sixteen.png").mode == "I;16" and Image.open(tmp_path / "float.tif").mode == "F"
    eight = load_image(tmp_path / "eight.png").rgb
    assert (eight.min(), eight.max()) == (90, 169)
    for copy in (tmp_path / "sixteen.png", tmp_path / "float.tif", flat.astype(np.uint16) * 257,
                 flat.astype(np.float32) / 255):
        assert np.array_equal(load_image(copy).rgb, eight), type(copy)
    want = analyse(tmp_path / "eight.png", model).faces[0].probabilities
    got = analyse(tmp_path / "sixteen.png", model).faces[0].probabilities
    assert got == pytest.approx(want, abs=1e-6)
