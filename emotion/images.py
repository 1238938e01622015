"""Turn whatever a user sends into an RGB uint8 array, or a plain-language `ImageError`.

Handles: empty, corrupt, truncated and non-image files; declared sizes past `MAX_PIXELS` (decompression
bombs) refused before decoding; EXIF rotation; animated images (first frame); grey, palette, RGBA/LA
(composited on white), CMYK, 16-bit and float images; very large photos (JPEGs decoded at reduced
scale, then everything scaled so its longer side is at most `WORK_SIDE`).
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

MAX_FILE_BYTES = 25 * 1024 * 1024  # the app's upload limit too
MAX_PIXELS = 150_000_000  # a 12000 x 12000 photo passes; larger declared sizes are refused unread
WORK_SIDE = 1920  # analysis resolution: faces stay well above the detector's ~48 px minimum

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a cut-off file is an error, not a grey half-image
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL warns past this (an error for us) and refuses at twice it


class ImageError(ValueError):
    """The input is not an image we can analyse; str(e) is a message for the user."""


@dataclass
class Loaded:
    rgb: np.ndarray  # H x W x 3 uint8, upright, at most WORK_SIDE on its longer side
    original_size: tuple[int, int]  # (width, height) as decoded, after EXIF rotation
    notes: list[str] = field(default_factory=list)  # things the user should know (first frame only, ...)

    @property
    def scale(self) -> float:
        """Analysed size / original size."""
        return self.rgb.shape[1] / self.original_size[0]


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> RGB uint8, keeping the look of the picture."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I;16") else full_scale(arr)
        return np.repeat(_scaled(arr, top)[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return np.asarray(im.convert("RGB"))


def full_scale(values: np.ndarray) -> float:
    """The white level of samples whose format does not say it (PIL's 32-bit modes, arrays of other types than
    uint8 and uint16): 1 for floats up to 1, else 255, else 65535 (16-bit samples, as PIL reads 16-bit TIFFs),
    else the largest value. The picture's own darkest and lightest values never set it, so a flat-lit photo
    stays flat, as its 8-bit copy does."""
    hi = float(values.max()) if values.size else 0.0
    for top in (1.0, 255.0, 65535.0):
        if hi <= top and (top > 1.0 or values.dtype.kind in "fb"):
            return top
    return hi


def _scaled(values: np.ndarray, top: float) -> np.ndarray:
    """Samples on a 0..top scale as uint8 (rounded: 16-bit v * 257 gives back 8-bit v exactly)."""
    return np.rint(np.clip(values.astype(np.float32) * (255.0 / top), 0, 255)).astype(np.uint8)


def _shrink(rgb: np.ndarray, max_side: int = WORK_SIDE) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return np.ascontiguousarray(rgb)
    s = max_side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def load_image(source) -> Loaded:
    """Decode a path, bytes, PIL image or numpy array (a `Loaded` picture is returned as it is). Raises
    ImageError with a message for the user."""
    if source is None:
        raise ImageError("No image was given.")
    if isinstance(source, Loaded):
        return source
    if isinstance(source, np.ndarray):
        return Loaded(_shrink(_array_to_rgb(source)), (source.shape[1], source.shape[0]))
    if isinstance(source, Image.Image):
        return _from_pil(source)
    if isinstance(source, (bytes, bytearray)):
        import io

        if not source:
            raise ImageError("The file is empty.")
        return _open(io.BytesIO(source), "the upload")
    path = Path(os.fspath(source))
    if not path.is_file():
        raise ImageError(f"File not found: {path.name}")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"{path.name} is empty (0 bytes).")
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{path.name} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB.")
    with path.open("rb") as f:
        return _open(f, path.name)


def _open(fp, name: str) -> Loaded:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if isinstance(e, UnidentifiedImageError):
            raise ImageError(f"{name} is not an image, or not in a format we can read (JPEG, PNG, WebP, GIF, "
                             "BMP, TIFF).") from None
        declared = re.search(r"\((\d+) pixels\)", str(e))
        size = f" ({int(declared.group(1)) / 1e6:,.0f} megapixels)" if declared else ""
        raise ImageError(f"{name} declares a size too large to open safely{size}; the limit is "
                         f"{MAX_PIXELS / 1e6:.0f} megapixels.") from None
    except OSError as e:
        raise ImageError(f"{name} could not be read: {e}.") from None
    except Exception as e:  # noqa: BLE001 -- a damaged header can raise anything in a decoder's parser
        raise ImageError(f"{name} is corrupt and could not be opened ({type(e).__name__}: {e}).") from None
    return _from_pil(im, name)


def _from_pil(im: Image.Image, name: str = "the image") -> Loaded:
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name} is {w} x {h} pixels; the limit is {MAX_PIXELS / 1e6:.0f} megapixels.")
    if w < 1 or h < 1:
        raise ImageError(f"{name} has no pixels.")
    notes = []
    try:
        if getattr(im, "n_frames", 1) > 1:
            notes.append(f"{name} has {im.n_frames} frames; the first one was analysed.")
            im.seek(0)
        if im.format == "JPEG" and max(w, h) > 2 * WORK_SIDE:
            im.draft("RGB", (max(1, w * WORK_SIDE // max(w, h)), max(1, h * WORK_SIDE // max(w, h))))  # 1/2..1/8
        im.load()
        turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap width and height
        upright = ImageOps.exif_transpose(im) or im
    except Exception as e:  # noqa: BLE001 -- decoders raise many kinds on damaged data (KeyError, IndexError, ...)
        msg = str(e)
        if "truncated" in msg or "broken data stream" in msg or "premature end" in msg.lower():
            raise ImageError(f"{name} is truncated or corrupt: only part of the file arrived.") from None
        raise ImageError(f"{name} is corrupt and could not be decoded ({msg}).") from None
    return Loaded(_shrink(_to_rgb(upright)), (h, w) if turned else (w, h), notes)


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.size == 0 or arr.ndim not in (2, 3):
        raise ImageError("The image array is empty or not an image.")
    if arr.dtype != np.uint8:
        arr = _scaled(arr, 65535.0 if arr.dtype == np.uint16 else full_scale(arr))
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255
        return (arr[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return arr[..., :3]
