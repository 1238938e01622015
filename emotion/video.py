"""Video files in and out, with PyAV (FFmpeg's libraries come inside its wheels: no system ffmpeg needed).

Reading: `probe` checks a file against the limits below before anything is decoded; `sample_frames` decodes
it and yields the frames to analyse, N per second or every one, as upright RGB arrays with their time.
Writing: `ClipWriter` encodes RGB frames as H.264 in MP4 (yuv420p, index at the front), which browsers play.

The limits are the constants below, stated once: the app, the API, the command line and their messages
quote `LIMITS`, and docs/app.md says the same.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

MAX_VIDEO_BYTES = 100 * 2**20  # a file larger than this is refused unread (the app's upload limit too)
MAX_DURATION_S = 600.0  # a clip longer than 10 minutes is refused
MAX_ANALYSED_FRAMES = 600  # frames analysed a clip at most: pick a lower rate for a long clip
FRAME_SIDE = 960  # frames are scaled down to at most this longer side before analysis and drawing
DEFAULT_RATE = 2.0  # frames analysed per second unless told otherwise
EVERY_FRAME = 0  # as a rate: analyse every frame
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".m4v", ".mpg", ".mpeg", ".ogv", ".wmv")
LIMITS = (f"files up to {MAX_VIDEO_BYTES // 2**20} MB and {MAX_DURATION_S / 60:.0f} minutes; "
          f"at most {MAX_ANALYSED_FRAMES} frames analysed a clip")


class VideoError(ValueError):
    """The file is not a video we can analyse; str(e) is a message for the user."""


@dataclass
class VideoInfo:
    name: str
    duration: float | None  # seconds, from the container or the stream (None when neither says)
    fps: float  # the stream's average frame rate (25 when the file does not say)
    width: int
    height: int
    codec: str
    notes: list[str] = field(default_factory=list)

    def frames_at(self, rate: float) -> int | None:
        """How many frames would be analysed at `rate` a second (EVERY_FRAME: every frame)."""
        if self.duration is None:
            return None
        step = self.fps if rate == EVERY_FRAME else min(rate, self.fps)
        return max(1, math.ceil(self.duration * step - 1e-6))


def is_video(path) -> bool:
    return Path(os.fspath(path)).suffix.lower() in VIDEO_SUFFIXES


def _open(path: Path):
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:  # InvalidDataError, a missing moov atom, an unknown format, ...
        raise VideoError(f"{path.name} is not a video we can read, or it is corrupt or cut short "
                         f"({_reason(e)}).") from None


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


def probe(path) -> VideoInfo:
    """What the file holds, checked against MAX_VIDEO_BYTES and MAX_DURATION_S. Raises VideoError."""
    if path is None:
        raise VideoError("No video was given.")
    path = Path(os.fspath(path))
    if not path.is_file():
        raise VideoError(f"File not found: {path.name}")
    size = path.stat().st_size
    if size == 0:
        raise VideoError(f"{path.name} is empty (0 bytes).")
    if size > MAX_VIDEO_BYTES:
        raise VideoError(f"{path.name} is {size / 2**20:.0f} MB; the limit is {MAX_VIDEO_BYTES // 2**20} MB "
                         f"({LIMITS}).")
    with _open(path) as container:
        if not container.streams:
            raise VideoError(f"{path.name} holds no streams that can be read: the file is corrupt or cut short "
                             "(a recording that was never finished lacks its index).")
        if not container.streams.video:
            kinds = " and ".join(sorted({s.type for s in container.streams}))
            raise VideoError(f"{path.name} has no video stream (only {kinds}): there are no pictures to analyse.")
        if container.format.name == "image2" or container.format.name.endswith("_pipe"):
            raise VideoError(f"{path.name} is a still picture, not a video: analyse it as a photo (the Photo tab, "
                             "or the /predict endpoint).")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 25.0
        duration = None
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        info = VideoInfo(path.name, duration, fps if 0 < fps < 1000 else 25.0, ctx.width, ctx.height,
                         ctx.name or "unknown")
        if container.streams.audio:
            info.notes.append("The sound track is not analysed and is left out of the annotated clip.")
    if info.width < 1 or info.height < 1:
        raise VideoError(f"{path.name}: its video stream has no picture size; the file may be corrupt.")
    if duration is not None and duration > MAX_DURATION_S:
        raise VideoError(f"{path.name} lasts {_clock(duration)}; the limit is {_clock(MAX_DURATION_S)} "
                         f"({LIMITS}). Cut the clip into shorter parts.")
    return info


def check_rate(info: VideoInfo, rate: float) -> float:
    """The rate to analyse `info`'s clip at (EVERY_FRAME or N a second), checked against MAX_ANALYSED_FRAMES."""
    if rate is None or not math.isfinite(rate) or rate < 0:
        raise VideoError(f"Frames per second must be a positive number, or {EVERY_FRAME} for every frame.")
    n = info.frames_at(rate)
    if n is not None and n > MAX_ANALYSED_FRAMES:
        fit = math.floor(MAX_ANALYSED_FRAMES / info.duration * 10) / 10
        asked = "every frame" if rate == EVERY_FRAME else f"{rate:g} frames a second"
        raise VideoError(f"{info.name} lasts {_clock(info.duration)}: at {asked} that is {n} frames to analyse, "
                         f"and the limit is {MAX_ANALYSED_FRAMES} a clip. Choose at most {fit:g} frames a "
                         "second, or a shorter clip.")
    return rate


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{seconds:.1f} s"


def fit_side(rgb: np.ndarray, side: int | None = FRAME_SIDE) -> np.ndarray:
    """`rgb` scaled down to at most `side` px on its longer side (None: as it is)."""
    h, w = rgb.shape[:2]
    if side is None or max(h, w) <= side:
        return rgb
    s = side / max(h, w)
    return cv2.resize(rgb, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_AREA)


def sample_frames(path, info: VideoInfo, rate: float, notes: list[str] | None = None,
                  side: int | None = FRAME_SIDE) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds from the clip's first frame, RGB uint8 at most `side` px, None: at the file's own size) for the
    frames to analyse: the first
    frame at or after each multiple of 1 / `rate` (EVERY_FRAME: every frame). Frames are turned upright as the
    file's display matrix says.

    A file that breaks off part-way (truncated, corrupt packets) ends the frames there, with a line in
    `notes`; one from which no frame at all decodes raises VideoError. So does a clip whose length the file
    did not state and which runs past MAX_DURATION_S or MAX_ANALYSED_FRAMES.
    """
    notes = notes if notes is not None else []
    path = Path(os.fspath(path))
    step = 0.0 if rate == EVERY_FRAME else 1.0 / rate
    start, next_t, n, last_t = None, 0.0, 0, 0.0
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else index / info.fps
                start = t if start is None else start
                t = max(0.0, t - start)
                last_t = t
                if t > MAX_DURATION_S:
                    raise VideoError(f"{path.name} runs past {_clock(MAX_DURATION_S)}, the limit ({LIMITS}).")
                if t + 1e-6 < next_t:
                    continue
                if n >= MAX_ANALYSED_FRAMES:
                    raise VideoError(f"{path.name} needs more than {MAX_ANALYSED_FRAMES} frames analysed at this "
                                     f"rate, the limit ({LIMITS}); choose fewer frames a second.")
                next_t = (math.floor(t / step + 1e-6) + 1) * step if step else t
                n += 1
                yield t, fit_side(_upright(frame), side)
        except av.error.FFmpegError as e:
            if n == 0:
                raise VideoError(f"{path.name} could not be decoded: no frame came out ({_reason(e)}). "
                                 "The file is corrupt or cut short.") from None
            notes.append(f"{path.name} breaks off after {last_t:.1f} s ({_reason(e)}): the frames up to there "
                         "were analysed.")
            return
    if n == 0:
        raise VideoError(f"{path.name} holds no frame that can be decoded: the file is corrupt or cut short.")
    if info.duration and last_t + 2 / info.fps < info.duration * 0.9:
        notes.append(f"{path.name} says it lasts {info.duration:.1f} s, but its frames end at {last_t:.1f} s: "
                     "the file may be cut short. The frames up to there were analysed.")


def _upright(frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    rotation = round(getattr(frame, "rotation", 0) or 0) % 360  # from the display matrix (phone clips)
    turn = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}.get(rotation)
    return np.ascontiguousarray(rgb if turn is None else cv2.rotate(rgb, turn))


class ClipWriter:
    """Write RGB frames to an H.264 MP4 at a constant `rate` (frames a second); sizes are fixed by the first
    frame (made even, as yuv420p needs). Use as a context manager; `count` says how many were written."""

    def __init__(self, path, rate: float, crf: int = 23):
        self.path = Path(os.fspath(path))
        self.rate = Fraction(rate).limit_denominator(1001)
        self.crf = crf
        self.count = 0
        self._container = self._stream = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> "ClipWriter":
        return self

    def write(self, rgb: np.ndarray) -> None:
        if self._stream is None:
            h, w = rgb.shape[:2]
            self._size = (w - w % 2, h - h % 2)
            self._container = av.open(str(self.path), "w", options={"movflags": "+faststart"})
            self._stream = self._container.add_stream(
                "libx264", rate=self.rate, options={"preset": "veryfast", "crf": str(self.crf)})
            self._stream.width, self._stream.height = self._size
            self._stream.pix_fmt = "yuv420p"
        w, h = self._size
        if rgb.shape[:2] != (h, w):
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA) if abs(rgb.shape[1] - w) > 1 or \
                abs(rgb.shape[0] - h) > 1 else rgb[:h, :w]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __exit__(self, *exc) -> None:
        self.close()
