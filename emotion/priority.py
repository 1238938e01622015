"""Webcam frames first: photo and video passes wait, between small batches, while a live frame is analysed.

A photo's full check is about 90 forward passes a face (Occlusion's cells, the deletion check, the what-if);
a webcam frame is a few and must come back within its frame budget. ONNX Runtime's sessions run
concurrently, so without an order a photo's batches and a frame's passes share the two cores, and the frame
takes about twice as long. `LiveFirst` gives the frame the machine: a thread analysing a live frame holds
`live()`, and every other thread's passes go in batches of `CHUNK` faces (at 64 px, 8 faces a pass cost
about 4% more a face than 64 did), each started only once no live frame is in flight (`wait_turn`). A frame
then shares the cores with at most the one batch already running. A photo's face detection and the
faithfulness check's inpainting wait their turn the same way (`LIVE_FIRST`, the one order of the process,
which every model's `turns` is). No one waits for ever: a batch waits at most `max_wait_s`, so a photo still
moves forward beside four webcams streaming without a pause.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

import torch

CHUNK = 8  # faces a pass for work that yields to live frames
MAX_WAIT_S = 0.25  # the longest one batch waits for live frames


class LiveFirst:
    """Who goes first among the threads that share the cores: live frames, then the rest (see the module)."""

    def __init__(self, max_wait_s: float = MAX_WAIT_S, chunk: int = CHUNK):
        self.max_wait_s = max_wait_s
        self.chunk = chunk
        self._cond = threading.Condition()
        self._live = 0  # live frames in flight, all threads
        self._mine = threading.local()  # how deep this thread is inside live()
        self.waits = 0  # batches that found a live frame in flight and waited for it (the benchmark reports it)

    @contextlib.contextmanager
    def live(self):
        """Hold while analysing a webcam frame: other threads' batches wait for it to end."""
        with self._cond:
            self._live += 1
        self._mine.depth = getattr(self._mine, "depth", 0) + 1
        try:
            yield
        finally:
            self._mine.depth -= 1
            with self._cond:
                self._live -= 1
                self._cond.notify_all()

    def is_live(self) -> bool:
        """Whether this thread is analysing a live frame (its passes never wait)."""
        return getattr(self._mine, "depth", 0) > 0

    def wait_turn(self) -> None:
        """Return once no live frame is in flight (at once on a live thread), or after `max_wait_s`."""
        if self.is_live():
            return
        with self._cond:
            if not self._live:
                return
            self.waits += 1
            deadline = time.monotonic() + self.max_wait_s
            while self._live:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def batches(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """`x` in batches of `chunk` (all of it at once on a live thread), each given when it is its turn."""
        step = len(x) if self.is_live() else self.chunk
        for i in range(0, len(x), max(step, 1)):
            self.wait_turn()
            yield x[i:i + step]


# One order for the whole process: the cores are shared by every model and every step, not only the network's
# passes (the detector's run on a photo and the check's inpainting wait their turn too).
LIVE_FIRST = LiveFirst()
