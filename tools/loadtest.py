"""Load, memory and fault test of the running app, through `gradio_client` as real users call it.

    python -m tools.loadtest [--url URL] [--clients 16] [--requests 25] [--soak 1000] [--webcams 2] [--json PATH]

Starts `python app.py` on a free loopback port with a file cache of its own (unless --url is given) and
stops it at the end. Then:
1. load: --clients threads, each with its own Client, send --requests `/predict` calls each over a mix of
   face pictures, with the app's default heatmap (or --method / --layer); every answer must equal that picture's reference answer (taken first, one request at a
   time), so answers can never be swapped between users. Throughput, p50/p95 latency, errors, mismatches.
2. memory: --soak requests in a row from two clients; the server's resident memory (its process and
   children) after the first 50 and after all; the growth must stay within 100 MB.
3. faults: every awkward file (tests/fixtures.py), decompression bombs, a huge photo and an upload over
   the size limit, sent while --clients other clients keep loading the app; each must be answered within
   30 s, a refused file with its plain message within 5 s (it does not wait for the photos ahead of it), the
   other clients' answers must stay right, the server must live.
Beside phases 1 and 2, --webcams users stream example photos to the live webcam event as the page does
(tools/webcam.py): every frame's label must be that photo's own (taken first, one stream alone), and the
frames' latency is reported beside its figure alone.
Prints the figures as it goes and a summary, with the number and size of the files in Gradio's cache before
and after (--cache-dir names it for --url); --json writes them. Exits 1 if any goal is missed.
tools/hostile.py drives the same server, clients and reference answers with hostile input.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotion.explain import DEFAULT_LAYER, DEFAULT_METHOD
from emotion.service import BUSY

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# method, layer, class to explain, whole image: the app's defaults (what a user who changes nothing gets)
ARGS = [DEFAULT_METHOD, DEFAULT_LAYER, "predicted class", False]
PROB_TOL, HEAT_TOL, BOX_TOL = 1e-4, 1e-3, 1
STALL_S = 30.0
MESSAGE_S = 5.0  # a refused file's plain message comes back within this, crowd or not
HTTP_TIMEOUT_S = 120.0  # each HTTP call of a client (upload, join the queue, the answer's stream between messages)
RSS_GROWTH_LIMIT_MB = 100.0
SOAK_CLIENTS = 2
GENERIC_ERROR = "Something went wrong"  # the app's text for an unexpected exception (not a clear message)


# ---------------------------------------------------------------- the server and its memory
@dataclass
class Server:
    url: str
    pid: int | None
    proc: subprocess.Popen | None = None
    log: Path | None = None
    cache: Path | None = None  # its Gradio file cache (GRADIO_TEMP_DIR), when known

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and Path(f"/proc/{self.pid}").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port (for --url), found through /proc; None if not ours."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{cols[9]}]")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                    return int(proc.name)
    return None


@contextlib.contextmanager
def server(url: str | None, log_dir: Path, env: dict[str, str] | None = None, cache: Path | None = None):
    """The app under test: the one at `url` (whose cache folder is `cache`, if given), or `python app.py`
    started here with `env` added to its environment and a cache folder of its own, stopped afterwards."""
    if url:
        from urllib.parse import urlparse

        port = urlparse(url).port
        yield Server(url, _listening_pid(port) if port else None, cache=cache)
        return
    port = _free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log, cache = log_dir / "app.log", log_dir / "gradio-cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(cache),
           **(env or {})}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    srv = Server(f"http://127.0.0.1:{port}/", proc.pid, proc, log, cache)
    try:
        _wait_until_up(srv)
        yield srv
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until_up(srv: Server, limit_s: float = 180) -> None:
    import httpx

    deadline = time.time() + limit_s
    while time.time() < deadline:
        if not srv.alive():
            raise SystemExit("app.py exited while starting:\n" + srv.log.read_text()[-3000:])
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(srv.url, timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise SystemExit(f"app.py did not answer within {limit_s:.0f} s:\n" + srv.log.read_text()[-3000:])


def _children(pid: int) -> list[int]:
    kids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (proc / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4, after "(comm)": parent pid
                    kids.append(int(proc.name))
    return kids


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of `pid` and all its descendants (VmRSS), in MB; None if it cannot be read."""
    if pid is None:
        return None
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])  # kB
        todo.extend(_children(p))
    return round(total / 1024, 1) if seen and total else None


def cache_usage(folder: Path | None) -> dict | None:
    """Files in Gradio's cache folder: how many and their size in MB (None when the folder is not known)."""
    if folder is None:
        return None
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    size = 0
    for p in files:
        with contextlib.suppress(OSError):
            size += p.stat().st_size
    return {"files": len(files), "mb": round(size / 2**20, 2)}


# ---------------------------------------------------------------- pictures
def face_pictures(tmp: Path) -> dict[str, Path]:
    """The example photos plus variants of them (crops, mirrored, grey, smaller): different answers."""
    from PIL import Image, ImageOps

    tmp.mkdir(parents=True, exist_ok=True)
    astro = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")
    grace = Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB")
    two = Image.open(EXAMPLES / "two_faces.jpg").convert("RGB")
    made = {
        "astronaut_crop.jpg": astro.crop((128, 10, 318, 240)),
        "astronaut_mirrored.jpg": ImageOps.mirror(astro),
        "grace_grey.png": grace.convert("L"),
        "grace_crop.png": grace.crop((130, 60, 400, 390)),
        "grace_small.jpg": grace.resize((256, 300)),
        "two_faces_mirrored.jpg": ImageOps.mirror(two),
    }
    pictures = {p.name: p for p in (EXAMPLES / n for n in ("astronaut.jpg", "grace_hopper.jpg", "two_faces.jpg",
                                                            "cat_no_face.jpg"))}
    for name, img in made.items():
        img.save(tmp / name, **({"quality": 92} if name.endswith(".jpg") else {}))
        pictures[name] = tmp / name
    return pictures


def _png_stream(path: Path, width: int, height: int) -> Path:
    """A real grey PNG of width x height, written row by row: a few hundred kB that inflate to w*h bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + (zlib.crc32(kind + data) & 0xFFFFFFFF).to_bytes(4, "big")

    z = zlib.compressobj(9)
    row = b"\x00" + bytes(range(256)) * (width // 256) + bytes(width % 256)  # filter byte + a grey ramp
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])  # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def fault_files(tmp: Path) -> dict[str, Path]:
    """Every awkward file of tests/fixtures.py, plus bombs, a huge photo and a file over the upload limit."""
    from emotion.images import MAX_FILE_BYTES
    from tests import fixtures as fx

    files = dict(fx.awkward_files(tmp))
    files["huge_jpeg_12000px"] = fx.huge_jpeg(tmp / "huge.jpg")
    files["bomb_png_16000px"] = _png_stream(tmp / "bomb16k.png", 16000, 16000)  # 256 MP, past the limit
    files["png_12000px_under_limit"] = _png_stream(tmp / "big12k.png", 12000, 12000)  # 144 MP, allowed
    over = tmp / "over_limit.jpg"
    over.write_bytes(os.urandom(MAX_FILE_BYTES + 5 * 2**20))  # 30 MB of noise named .jpg
    files["over_limit_30mb"] = over
    return files


# ---------------------------------------------------------------- calling and checking
def new_client(url: str):
    """A gradio_client Client as patient as a browser: its own 5 s HTTP time-out runs out on a busy 2-core
    machine before the server can even answer "busy", and would count a slow machine as a lost request."""
    from gradio_client import Client

    return Client(url, verbose=False, httpx_kwargs={"timeout": HTTP_TIMEOUT_S})


def predict(client, path: Path, timeout_s: float | None = None) -> dict:
    """/predict on one picture; a TimeoutError past `timeout_s` (the job is cancelled)."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from gradio_client import handle_file

    if timeout_s is None:
        return client.predict(handle_file(str(path)), *ARGS, api_name="/predict")
    job = client.submit(handle_file(str(path)), *ARGS, api_name="/predict")
    try:
        return job.result(timeout=timeout_s)
    except FutureTimeout:
        job.cancel()
        raise TimeoutError(f"no answer within {timeout_s:.0f} s") from None


def compare(answer, ref: dict) -> str | None:
    """None if `answer` equals the reference within tolerance, else what differs."""
    if not isinstance(answer, dict) or not isinstance(answer.get("faces"), list):
        return f"not an answer: {str(answer)[:80]}"
    faces, want = answer["faces"], ref["faces"]
    if len(faces) != len(want):
        return f"{len(faces)} faces, reference has {len(want)}"
    for i, (f, w) in enumerate(zip(faces, want)):
        if f["label"] != w["label"] or f["explained_class"] != w["explained_class"]:
            return f"face {i}: label {f['label']} / {f['explained_class']}, reference {w['label']} / " \
                   f"{w['explained_class']}"
        if max(abs(a - b) for a, b in zip(f["box"], w["box"])) > BOX_TOL or len(f["box"]) != len(w["box"]):
            return f"face {i}: box {f['box']}, reference {w['box']}"
        if set(f["probabilities"]) != set(w["probabilities"]):
            return f"face {i}: classes {sorted(f['probabilities'])}"
        dp = max(abs(f["probabilities"][k] - w["probabilities"][k]) for k in w["probabilities"])
        if dp > PROB_TOL:
            return f"face {i}: probabilities differ by {dp:.2g}"
        a, b = np.asarray(f["heatmap"], float), np.asarray(w["heatmap"], float)
        if a.shape != b.shape:
            return f"face {i}: heatmap {a.shape}, reference {b.shape}"
        dh = float(np.abs(a - b).max()) if a.size else 0.0
        if dh > HEAT_TOL + 1e-9:  # heatmaps come rounded to 3 decimals
            return f"face {i}: heatmap differs by {dh:.3g}"
    return None


def reference_answers(url: str, pictures: dict[str, Path]) -> dict[str, dict]:
    client = new_client(url)
    refs = {}
    for name, path in pictures.items():
        t = time.perf_counter()
        refs[name] = predict(client, path)
        faces = refs[name]["faces"]
        print(f"  reference {name:<24} {len(faces)} face(s) {[f['label'] for f in faces]} "
              f"{(time.perf_counter() - t) * 1000:.0f} ms", flush=True)
    return refs


@dataclass
class Tally:
    """What the good requests of a phase got; shared by its client threads. A request the server turned
    away because its queue was full ("busy, try again") counts as `busy`, not as an error."""

    latencies_ms: list[float] = field(default_factory=list)  # of every request not turned away as busy
    errors: int = 0
    mismatches: int = 0
    busy: int = 0
    problems: list[str] = field(default_factory=list)  # the first few, for the report
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.perf_counter)

    def record(self, name: str, ms: float, error: str | None, mismatch: str | None, busy: bool = False) -> int:
        """Count one request; returns how many have been counted."""
        with self.lock:
            if busy:
                self.busy += 1
            else:
                self.latencies_ms.append(ms)
            self.errors += error is not None
            self.mismatches += mismatch is not None
            if (error or mismatch) and len(self.problems) < 10:
                self.problems.append(f"{name}: {'error ' + error if error else 'mismatch ' + mismatch}")
            return len(self.latencies_ms) + self.busy

    def figures(self) -> dict:
        lat = np.asarray(self.latencies_ms or [np.nan])
        wall = time.perf_counter() - self.started
        answered = len(self.latencies_ms) - self.errors  # (a failed request's time is counted too)
        return {"requests": len(self.latencies_ms) + self.busy, "answered": answered,
                "busy": self.busy, "errors": self.errors, "mismatches": self.mismatches,
                "seconds": round(wall, 1), "throughput_rps": round(answered / wall, 2),
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
                "latency_ms_p95": round(float(np.percentile(lat, 95)), 1), "problems": self.problems}


def print_figures(out: dict, extra: str = "") -> None:
    """One phase's figures (Tally.figures) as one line, then its first problems."""
    busy = f", busy {out['busy']}" if out["busy"] else ""
    print(f"  {out['requests']} requests in {out['seconds']} s: {out['throughput_rps']} answered/s, latency p50 "
          f"{out['latency_ms_p50']} ms, p95 {out['latency_ms_p95']} ms, errors {out['errors']}, mismatches "
          f"{out['mismatches']}{busy}{extra}", flush=True)
    for p in out["problems"]:
        print("   ", p)


def run_clients(url: str, pictures: dict[str, Path], refs: dict[str, dict], tally: Tally, n_clients: int,
                n_requests: int | None, stop: threading.Event | None = None, after_each=None,
                together: bool = False, timeout_s: float | None = None) -> None:
    """`n_clients` threads, each its own Client, cycling through the pictures (each from its own offset)
    until `n_requests` calls have been made in all (shared out evenly), or until `stop` is set; every
    answer is checked against its picture's reference. `together`: every client connects first, then all
    send at the same moment (a crowd). A request not answered within `timeout_s` counts as an error."""
    from gradio_client.utils import QueueError

    names = list(pictures)
    failures = []
    gate = threading.Barrier(n_clients) if together else None

    def worker(k: int) -> None:
        n_mine = None if n_requests is None else n_requests // n_clients + (k < n_requests % n_clients)
        try:
            client = new_client(url)
        except Exception as e:  # noqa: BLE001 -- a client that cannot connect counts as errors
            failures.append(f"client {k}: {type(e).__name__}: {e}")
            if gate:
                gate.abort()
            return
        if gate:
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait()
        i = 0
        while (n_mine is None or i < n_mine) and not (stop and stop.is_set()):
            name = names[(k + i) % len(names)]
            t = time.perf_counter()
            error = mismatch = None
            busy = False
            try:
                answer = predict(client, pictures[name], timeout_s)
                mismatch = compare(answer, refs[name])
            except QueueError:
                busy = True  # the server's plain "queue is full, try again"
            except Exception as e:  # noqa: BLE001
                if BUSY in str(e):  # the same words from the app itself: photos past its waiting room
                    busy = True
                else:
                    error = f"{type(e).__name__}: {e}"[:200]
            done = tally.record(name, (time.perf_counter() - t) * 1000, error, mismatch, busy)
            if after_each:
                after_each(done)
            i += 1

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(n_clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for f in failures:
        tally.record("client", 0.0, f, None)


# ---------------------------------------------------------------- webcam users beside them
WEBCAM_PICTURES = ("astronaut.jpg", "grace_hopper.jpg")  # one face each, JPEG as a camera's frames are
WEBCAM_ALONE_S = 4.0


def _stream_figures(figs, want: str | None = None) -> dict:
    lat = np.asarray(figs.latencies_ms or [np.nan])
    wrong = [x for x in figs.labels if want is not None and x != want]
    return {"frames": len(figs.latencies_ms), "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 1), "errors": len(figs.errors),
            "mismatches": len(wrong), "rejoins": figs.rejoins,
            "problems": figs.errors[:3] + [f"label {x}, its picture's own {want}" for x in wrong[:3]]}


def webcam_references(url: str, n: int) -> dict[str, dict]:
    """Each webcam picture streamed alone for a few seconds: its label (what every frame of it must say
    later) and its frames' latency alone."""
    from tools.webcam import WebcamStream

    refs = {}
    for name in WEBCAM_PICTURES[:n] if n else ():
        stream = WebcamStream(url, EXAMPLES / name)
        t = threading.Thread(target=stream.run, daemon=True)
        t.start()
        time.sleep(WEBCAM_ALONE_S)
        stream.stop.set()
        t.join(60)
        labels = stream.figures.labels[2:] or stream.figures.labels  # (the first frames' smoothing settles)
        refs[name] = {"label": max(set(labels), key=labels.count) if labels else None,
                      **_stream_figures(stream.figures)}
        r = refs[name]
        print(f"  webcam reference {name:<18} label {r['label']}, {r['frames']} frames alone: p50 "
              f"{r['latency_ms_p50']} ms, p95 {r['latency_ms_p95']} ms", flush=True)
    return refs


@contextlib.contextmanager
def webcams(url: str, refs: dict[str, dict]):
    """The webcam users, streaming while the block runs; yields a dict filled with their figures at the end
    (per stream, and p95 against its p95 alone)."""
    from tools.webcam import WebcamStream

    streams = {name: WebcamStream(url, EXAMPLES / name) for name in refs}
    threads = [threading.Thread(target=s.run, daemon=True) for s in streams.values()]
    for t in threads:
        t.start()
    out: dict = {}
    try:
        yield out
    finally:
        for s in streams.values():
            s.stop.set()
        for t in threads:
            t.join(120)
        for name, s in streams.items():
            f = _stream_figures(s.figures, refs[name]["label"])
            f["p95_vs_alone"] = round(f["latency_ms_p95"] / refs[name]["latency_ms_p95"], 2)
            out[name] = f
            print(f"  webcam {name:<18} {f['frames']} frames: p50 {f['latency_ms_p50']} ms, p95 "
                  f"{f['latency_ms_p95']} ms ({f['p95_vs_alone']}x alone), errors {f['errors']}, mismatches "
                  f"{f['mismatches']}", flush=True)
            for p in f["problems"]:
                print("   ", p)


# ---------------------------------------------------------------- the three phases
def phase_load(url, pictures, refs, clients: int, requests: int, cams: dict | None = None) -> dict:
    print(f"\n[1/3] load: {clients} clients x {requests} requests over {len(pictures)} pictures", flush=True)
    tally = Tally()
    progress = max(1, clients * requests // 10)

    def tick(done):
        if done % progress == 0:
            print(f"  {done}/{clients * requests} answered", flush=True)

    with webcams(url, cams or {}) as streams:
        run_clients(url, pictures, refs, tally, clients, clients * requests, after_each=tick)
    out = {**tally.figures(), "webcams": streams}
    print_figures(out)
    return out


def phase_memory(srv: Server, pictures, refs, soak: int, cams: dict | None = None) -> dict:
    print(f"\n[2/3] memory: {soak} requests in a row from {SOAK_CLIENTS} clients; server RSS "
          f"(pid {srv.pid} and children)", flush=True)
    tally, series = Tally(), {0: rss_mb(srv.pid)}
    every = max(50, soak // 10)

    def sample(done):
        if done == 50 or done % every == 0 or done == soak:
            series[done] = rss_mb(srv.pid)
            print(f"  after {done:>5} requests: RSS {series[done]} MB", flush=True)

    with webcams(srv.url, cams or {}) as streams:
        run_clients(srv.url, pictures, refs, tally, SOAK_CLIENTS, soak, after_each=sample)
    after_50, after_all = series.get(50), rss_mb(srv.pid)
    growth = round(after_all - after_50, 1) if after_50 is not None and after_all is not None else None
    out = {**tally.figures(), "rss_mb_at_start": series[0], "rss_mb_after_50": after_50,
           "rss_mb_after_all": after_all, "rss_growth_mb": growth, "rss_mb_series": series, "webcams": streams}
    print_figures(out, f"; RSS after 50: {after_50} MB, after all: {after_all} MB, growth {growth} MB "
                       f"(limit {RSS_GROWTH_LIMIT_MB:.0f})")
    return out


def _send_fault(client, path: Path, limit_s: float = STALL_S) -> dict:
    """One awkward file: what came back (result, error message, rejection or a stall past `limit_s`) and
    how long it took."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    t = time.perf_counter()
    job = client.submit(handle_file(str(path)), *ARGS, api_name="/predict")
    row = {"bytes": path.stat().st_size}
    try:
        answer = job.result(timeout=limit_s)
        row.update(outcome="result", faces=len(answer["faces"]), message="; ".join(answer.get("messages", [])))
        row["ok"] = isinstance(answer.get("faces"), list)
    except FutureTimeout:
        job.cancel()
        row.update(outcome="stalled", message=f"no answer within {limit_s:.0f} s", ok=False)
    except AppError as e:
        row.update(outcome="error", message=str(e))
        row["ok"] = bool(str(e).strip()) and GENERIC_ERROR not in str(e)
    except Exception as e:  # noqa: BLE001 -- e.g. the client refusing an upload over the limit
        row.update(outcome="rejected", message=f"{type(e).__name__}: {e}", ok=True)
    row["seconds"] = round(time.perf_counter() - t, 2)
    row["ok"] = row["ok"] and row["seconds"] <= (MESSAGE_S if row["outcome"] == "error" else limit_s)
    return row


def _raw_upload(url: str, path: Path) -> dict:
    """POST the file straight to the server's upload route, as a client without gradio_client's size check
    would: what the server itself answers to an upload over the limit."""
    import httpx

    t = time.perf_counter()
    try:
        with path.open("rb") as f:
            r = httpx.post(url.rstrip("/") + "/gradio_api/upload", files=[("files", (path.name, f))], timeout=STALL_S)
        refused = r.status_code >= 400
        row = {"outcome": "rejected" if refused else "accepted", "message": f"HTTP {r.status_code}: {r.text[:200]}",
               "ok": refused}
    except httpx.TimeoutException:
        row = {"outcome": "stalled", "message": f"no answer within {STALL_S:.0f} s", "ok": False}
    except httpx.HTTPError as e:
        row = {"outcome": "rejected", "message": f"{type(e).__name__}: {e}", "ok": True}
    row.update(bytes=path.stat().st_size, seconds=round(time.perf_counter() - t, 2))
    return row


def phase_faults(srv: Server, pictures, refs, files: dict[str, Path], crowd: int) -> dict:
    print(f"\n[3/3] faults: {len(files)} awkward files (+ a raw over-limit upload) while "
          f"{crowd} clients keep loading the app", flush=True)
    tally, stop = Tally(), threading.Event()
    background = threading.Thread(target=run_clients, args=(srv.url, pictures, refs, tally,
                                                             crowd, None, stop), daemon=True)
    background.start()
    time.sleep(2)  # let the background clients get going
    client, faults = new_client(srv.url), {}
    for name, path in files.items():
        faults[name] = _send_fault(client, path)
        r = faults[name]
        detail = r["message"]
        if r["outcome"] == "result":
            detail = f"{r['faces']} face(s)" + (f"; {detail}" if detail else "")
        print(f"  {'ok ' if r['ok'] else 'BAD'} {name:<27} {r['outcome']:<8} {r['seconds']:>6.2f} s  {detail[:110]}",
              flush=True)
    if files.get("over_limit_30mb") is not None:
        # the server's own upload limit is the larger of the photo and video limits: send a file past it
        from emotion.images import MAX_FILE_BYTES
        from emotion.video import MAX_VIDEO_BYTES

        over = files["over_limit_30mb"].with_name("over_upload_limit.bin")
        with over.open("wb") as f:  # sparse: it takes no disk space
            f.truncate(max(MAX_FILE_BYTES, MAX_VIDEO_BYTES) + 5 * 2**20)
        faults["over_upload_limit_raw_upload"] = r = _raw_upload(srv.url, over)
        print(f"  {'ok ' if r['ok'] else 'BAD'} {'over_upload_limit_raw_upload':<27} {r['outcome']:<8} "
              f"{r['seconds']:>6.2f} s  {r['message'][:110]}", flush=True)
    stop.set()
    background.join(STALL_S * 4)
    meanwhile = tally.figures()
    print("  meanwhile, good requests from the other clients:")
    print_figures(meanwhile)
    return {"faults": faults, "background": meanwhile}


def final_check(srv: Server, pictures, refs) -> dict:
    """Is the server process still there, and does it still answer a good request correctly?"""
    alive, answers = srv.alive(), False
    if alive:
        name = next(iter(pictures))
        with contextlib.suppress(Exception):
            answers = compare(predict(new_client(srv.url), pictures[name]), refs[name]) is None
    return {"server_alive": alive, "server_answers_after_faults": answers, "rss_mb_after_faults": rss_mb(srv.pid)}


# ---------------------------------------------------------------- summary and main
def summarise(load: dict, memory: dict, faults: dict, end: dict, wall_s: float, cache: dict | None = None) -> dict:
    bg = faults["background"]
    growth = memory["rss_growth_mb"]
    missed = []
    errors = load["errors"] + memory["errors"] + bg["errors"]
    mismatches = load["mismatches"] + memory["mismatches"] + bg["mismatches"]
    busy = load["busy"] + memory["busy"] + bg["busy"]
    if errors:
        missed.append(f"{errors} good request(s) failed")
    if busy:
        missed.append(f"{busy} request(s) turned away as busy (the queue was full)")
    if mismatches:
        missed.append(f"{mismatches} answer(s) differ from their picture's reference")
    if growth is None:
        missed.append("server memory could not be measured (pass a local --url whose server is ours)")
    elif growth > RSS_GROWTH_LIMIT_MB:
        missed.append(f"RSS grew {growth} MB over the soak (limit {RSS_GROWTH_LIMIT_MB:.0f})")
    for phase, figures in (("load", load), ("soak", memory)):
        for name, w in figures.get("webcams", {}).items():
            if w["errors"] or w["mismatches"] or not w["frames"]:
                missed.append(f"webcam {name} during the {phase}: {w['frames']} frames, {w['errors']} errors, "
                              f"{w['mismatches']} mismatches")
    bad = [name for name, r in faults["faults"].items() if not r["ok"]]
    if bad:
        missed.append("faults not handled well: " + ", ".join(bad))
    if not end["server_alive"] or not end["server_answers_after_faults"]:
        missed.append("server died or stopped answering correctly")
    return {
        "throughput_rps": load["throughput_rps"], "latency_ms_p50": load["latency_ms_p50"],
        "latency_ms_p95": load["latency_ms_p95"], "errors": errors, "mismatches": mismatches,
        "rss_mb_after_50": memory["rss_mb_after_50"], "rss_mb_after_all": memory["rss_mb_after_all"],
        "rss_growth_mb": growth, "faults": faults["faults"], **end, "cache": cache,
        "phases": {"load": load, "memory": memory, "faults_background": bg},
        "goals_missed": missed, "passed": not missed, "seconds": round(wall_s, 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="test this running app instead of starting one")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients in the load phase")
    p.add_argument("--requests", type=int, default=25, help="requests per client in the load phase")
    p.add_argument("--soak", type=int, default=1000, help="requests in the memory phase")
    p.add_argument("--webcams", type=int, default=2, choices=range(len(WEBCAM_PICTURES) + 1),
                   help="webcam users streaming beside the load and the soak (0: none)")
    p.add_argument("--json", default=None, help="write all figures here")
    p.add_argument("--cache-dir", type=Path, default=None, help="with --url: that server's Gradio cache folder "
                   "(its GRADIO_TEMP_DIR), to count its files")
    p.add_argument("--method", default=DEFAULT_METHOD, help="heatmap method every request asks for (default: "
                   "the app's)")
    p.add_argument("--layer", default=DEFAULT_LAYER, help="heatmap layer every request asks for (default: the app's)")
    args = p.parse_args(argv)
    ARGS[:2] = [args.method, args.layer]
    print(f"every /predict asks for {args.method} at {args.layer}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="loadtest-") as tmp_name:
        tmp = Path(tmp_name)
        pictures = face_pictures(tmp / "faces")
        files = fault_files(tmp / "faults")
        with server(args.url, tmp, cache=args.cache_dir) as srv:
            cache = {"before": cache_usage(srv.cache)}
            print(f"app at {srv.url} (pid {srv.pid}); Gradio cache {srv.cache}: {cache['before']}; reference "
                  "answers, one request at a time:", flush=True)
            refs = reference_answers(srv.url, pictures)
            cams = webcam_references(srv.url, args.webcams)
            load = phase_load(srv.url, pictures, refs, args.clients, args.requests, cams)
            memory = phase_memory(srv, pictures, refs, args.soak, cams)
            faults = phase_faults(srv, pictures, refs, files, args.clients)
            end = final_check(srv, pictures, refs)
            cache["after"] = cache_usage(srv.cache)
    result = summarise(load, memory, faults, end, time.perf_counter() - started, cache)
    result["request"] = {"method": args.method, "layer": args.layer}
    result["webcams_alone"] = cams
    print(f"\nsummary: {result['throughput_rps']} requests/s, p50 {result['latency_ms_p50']} ms, p95 "
          f"{result['latency_ms_p95']} ms; errors {result['errors']}, mismatches {result['mismatches']}; RSS "
          f"{result['rss_mb_after_50']} -> {result['rss_mb_after_all']} MB (growth {result['rss_growth_mb']} MB); "
          f"faults ok {sum(r['ok'] for r in result['faults'].values())}/{len(result['faults'])}; server alive "
          f"{result['server_alive']}, answering {result['server_answers_after_faults']} (RSS "
          f"{result['rss_mb_after_faults']} MB); Gradio cache {cache['before']} -> {cache['after']}; "
          f"{result['seconds']} s")
    print("PASSED" if result["passed"] else "GOALS MISSED:\n  " + "\n  ".join(result["goals_missed"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
