"""Video clips the tests write with PyAV: the example photos' faces moving across a small canvas.

Each clip's answer is known by construction: `two_people` puts one face in the top half of the frame and
the other in the bottom half all the way through, while they cross from side to side and swap sizes
(so the detector's largest-first order flips half-way).
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image

from tests import fixtures as fx

FACE_A = (fx.PORTRAIT, (140, 20, 305, 215))  # astronaut: head and a little of the shoulders
FACE_B = (fx.SECOND_PORTRAIT, (130, 60, 400, 390))  # Grace Hopper


def face_tile(which, height: int) -> Image.Image:
    path, box = which
    img = Image.open(path).convert("RGB").crop(box)
    return img.resize((round(img.width * height / img.height), height), Image.LANCZOS)


def write(frames, path: Path, fps: int, codec: str = "libx264", audio: bool = False) -> Path:
    """RGB frames -> a video file (H.264 MP4 by default; `audio` adds a silent sound track)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        a = out.add_stream("aac", rate=16000) if audio else None
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
        if a is not None:
            silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            silence.sample_rate = 16000
            for p in a.encode(silence):
                out.mux(p)
            for p in a.encode():
                out.mux(p)
    return path


def one_person(path: Path, seconds: float = 2, fps: int = 5, size=(320, 240), face=FACE_A) -> Path:
    """The astronaut's face (or `face`) sliding from left to right."""
    w, h = size
    tile = face_tile(face, int(h * 0.8))
    n = round(seconds * fps)
    frames = []
    for i in range(n):
        canvas = Image.new("RGB", size, (90, 90, 90))
        x = round((w - tile.width) * i / max(1, n - 1))
        canvas.paste(tile, (x, (h - tile.height) // 2))
        frames.append(np.asarray(canvas))
    return write(frames, path, fps)


def two_people(path: Path, seconds: float = 3, fps: int = 4, size=(320, 320)) -> Path:
    """Face A in the top half moving right and shrinking, face B in the bottom half moving left and growing."""
    w, h = size
    n = round(seconds * fps)
    frames = []
    for i in range(n):
        s = i / max(1, n - 1)
        canvas = Image.new("RGB", size, (90, 90, 90))
        a = face_tile(FACE_A, round(h * (0.48 - 0.18 * s)))
        b = face_tile(FACE_B, round(h * (0.30 + 0.18 * s)))
        canvas.paste(a, (round((w - a.width) * s), (h // 2 - a.height) // 2))
        canvas.paste(b, (round((w - b.width) * (1 - s)), h // 2 + (h // 2 - b.height) // 2))
        frames.append(np.asarray(canvas))
    return write(frames, path, fps)


def no_face(path: Path, seconds: float = 1, fps: int = 4) -> Path:
    cat = Image.open(fx.NO_FACE).convert("RGB").resize((240, 160))
    return write([np.asarray(cat)] * round(seconds * fps), path, fps)
