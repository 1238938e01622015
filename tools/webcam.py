"""A webcam user without a browser: streams one picture to the app's live webcam event, as the page does.

gradio_client cannot drive a streaming input event, so this speaks Gradio's HTTP queue API itself: the first
frame joins the queue (`/gradio_api/queue/join`, the event the Webcam tab's `cam.stream` registers), each
answer comes back on the session's event stream (`/gradio_api/queue/data`, "process_streaming" messages),
the next frame goes to the running event (`/gradio_api/stream/{event_id}`), and the event is closed at the
end (`.../close`). Like the page, it sends a frame at most every `every_s` seconds, and the next one only once
the last has been answered. Gradio ends a stream after its time limit; the stream then joins again, as the
page does. Used by tools/loadtest.py beside its photo clients.
"""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from emotion.explain import LIVE_LAYER, LIVE_METHOD

EVENT = "on_frame"  # the Webcam tab's stream event (app.py)


def frame_payload(path: Path) -> dict:
    """A picture as the page sends a webcam frame: inline, as a data: URL."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return {"url": "data:image/jpeg;base64," + data, "path": None, "orig_name": "frame.jpg",
            "meta": {"_type": "gradio.FileData"}}


def stream_event(url: str) -> tuple[int, int]:
    """(fn_index, trigger id) of the webcam's stream event, from the app's config."""
    config = httpx.get(url + "config", timeout=30).json()
    for i, d in enumerate(config["dependencies"]):
        if d.get("api_name") == EVENT:
            return i, d["targets"][0][0]
    raise RuntimeError(f"the app at {url} has no {EVENT} event")


def top_label(output: dict) -> str | None:
    """The smoothed label of a frame's answer (its Label output), None when no face was found."""
    label = output["data"][1]
    return label.get("label") if isinstance(label, dict) else None


@dataclass
class StreamFigures:
    latencies_ms: list[float] = field(default_factory=list)  # frame sent -> its answer
    labels: list[str | None] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rejoins: int = 0


class WebcamStream:
    """One user streaming `picture` as webcam frames until `stop` is set (`run`, in a thread of its own)."""

    def __init__(self, url: str, picture: Path, every_s: float = 0.1, method: str = LIVE_METHOD,
                 layer: str = LIVE_LAYER, answer_s: float = 60.0):
        self.url, self.every_s, self.answer_s = url, every_s, answer_s
        self.fn, self.trigger = stream_event(url)
        self.inputs = [frame_payload(picture), None, method, layer]
        self.figures = StreamFigures()
        self.stop = threading.Event()

    def _body(self, session: str) -> dict:
        return {"data": self.inputs, "fn_index": self.fn, "session_hash": session, "event_data": None,
                "trigger_id": self.trigger}

    def run(self) -> StreamFigures:
        """Stream until `stop`; every failure is recorded in `figures.errors` (the stream then starts again)."""
        with httpx.Client(timeout=self.answer_s) as http:
            while not self.stop.is_set():
                try:
                    self._one_event(http)
                except Exception as e:  # noqa: BLE001 -- a failed stream is a figure, not a crash
                    self.figures.errors.append(f"{type(e).__name__}: {e}"[:200])
                    time.sleep(0.5)
        return self.figures

    def _one_event(self, http: httpx.Client) -> None:
        session = uuid.uuid4().hex
        join = http.post(self.url + "gradio_api/queue/join", json=self._body(session))
        join.raise_for_status()
        event_id = join.json()["event_id"]
        sent = time.perf_counter()
        try:
            with http.stream("GET", self.url + "gradio_api/queue/data", params={"session_hash": session}) as s:
                for line in s.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    msg = json.loads(line[5:])
                    kind = msg.get("msg")
                    if kind == "process_streaming":
                        now = time.perf_counter()
                        self.figures.latencies_ms.append((now - sent) * 1000)
                        self.figures.labels.append(top_label(msg["output"]))
                        if self.stop.is_set():
                            return
                        time.sleep(max(0.0, self.every_s - (now - sent)))
                        sent = time.perf_counter()
                        r = http.post(self.url + f"gradio_api/stream/{event_id}", json=self._body(session))
                        if r.status_code == 404:  # the event ended (its time limit): join again
                            self.figures.rejoins += 1
                            return
                        r.raise_for_status()
                    elif kind == "process_completed":
                        if not msg.get("success"):
                            raise RuntimeError(str(msg.get("output", {}).get("error"))[:200])
                        self.figures.rejoins += 1
                        return
        finally:
            http.post(self.url + f"gradio_api/stream/{event_id}/close", timeout=10)
