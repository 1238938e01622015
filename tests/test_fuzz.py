"""Damaged pictures (tools/fuzz.py) through emotion.images.load_image: a picture or an ImageError, nothing else.

A property-based test (Hypothesis): any example photo, in any format Pillow writes, damaged by any of the
fuzzer's mutations, decodes to an upright RGB picture within the size limits or raises ImageError with a
message; never another exception. The example count is bounded so the test stays short.
"""
import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emotion.images import MAX_PIXELS, WORK_SIDE, ImageError, Loaded, load_image
from tools import fuzz


@functools.cache
def bases() -> dict[tuple[str, str], tuple[bytes, tuple[int, int]]]:
    """Every photo in every format: (photo, format) -> (bytes, declared size). Made once (small: 128 px)."""
    out = {}
    for photo in fuzz.PHOTOS[:2]:
        for fmt, data in fuzz.encodings(photo, side=128).items():
            out[photo.stem, fmt] = data, fuzz.declared_size(data)
    return out


def check(data: bytes) -> str:
    """'picture' or 'error': load_image's outcome, with every promise it makes checked."""
    try:
        loaded = load_image(data)
    except ImageError as e:
        assert str(e).strip(), "an ImageError without a message"
        return "error"
    assert isinstance(loaded, Loaded)
    rgb = loaded.rgb
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= 1
    assert max(rgb.shape[:2]) <= WORK_SIDE
    w, h = loaded.original_size
    assert w >= 1 and h >= 1 and w * h <= MAX_PIXELS
    return "picture"


def test_every_intact_encoding_decodes():
    for (photo, fmt), (data, _) in bases().items():
        assert check(data) == "picture", (photo, fmt)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(sorted(bases())), kind=st.sampled_from(fuzz.MUTATIONS[1:]), rng=st.randoms())
def test_damaged_pictures_decode_or_raise_image_error(base, kind, rng):
    data, size = bases()[base]
    check(fuzz.mutate(data, kind, rng, size))  # any exception but ImageError fails the test


@pytest.mark.parametrize("fmt", ["png", "gif", "bmp", "jpeg", "webp", "tiff"])
def test_absurd_declared_sizes_are_found_and_refused_or_read(fmt):
    """The fuzzer's "size" mutation really rewrites the header: the damaged file declares another size."""
    data, size = bases()["astronaut", fmt]
    assert fuzz.size_fields(data, *size), f"no size field found in the {fmt} header"
    import random

    changed = 0
    for seed in range(20):
        damaged = fuzz.mutate(data, "size", random.Random(seed), size)
        try:
            changed += fuzz.declared_size(damaged) != size
        except Exception:  # noqa: BLE001 -- Pillow refuses it at once: also a changed header
            changed += 1
        check(damaged)
    assert changed >= 8  # a GIF declares its size twice (screen and frame): not every rewrite changes it
