"""Time the webcam path (and video files) on this CPU: per stage and end to end, the app's pipeline against a plain one.

    python -m tools.benchmark --json bench.json [--frames 100] [--threads 2] [--model weights]

Frames are 640x480, made from the project's own example photos: one face, and ten faces. Per frame:
(a) baseline: detect, crop, predict, then pytorch-grad-cam's GradCAM for the predicted class (a second
    pass with a backward through the whole network), overlay, JPEG encode as a plain gr.Image output does
    (a file in Gradio's cache). Like for like
    with the app's webcam path: the detector sees the same 320 px frame and the prediction is one plain
    pass (no mirror averaging), so the two differ only in how the heatmap is made and drawn;
(b) app: `emotion.service.live_frame` (what the webcam stream calls) and its encode as the app's live output
    sends a frame (an inline JPEG, `emotion.view.data_url`, never written to disk), in the precision
    the app's webcam path takes (emotion/precision.py: float32 in ONNX Runtime, bf16 only where PyTorch runs
    it on AMX; `EMOTION_PRECISION` overrides it), and again in each number format the CPU has natively, so that
    "auto" is seen to be the faster one, and with the engine the app takes for the passes without gradient
    (emotion/engine.py: ONNX Runtime where it runs; `EMOTION_ENGINE=torch` times PyTorch alone). The plain
    pipeline is PyTorch, float32.
(c) photo mode: `emotion.service.photo_steps` on the example photos, per face after detection: until the first
    answer (labels and Grad-CAM) and until the full one (the chosen map and every face's honesty check);
(d) the webcam path again while another thread analyses the two-face photo over and over (one user's upload
    beside another's webcam);
(e) video files (`emotion.clip.analyse_video`, as the app's Video tab runs it, annotated clip written): a
    640x480 clip with one face moving across it, every frame analysed, made in a temporary folder; frames
    analysed a second with the default checks (a person's full check once a second) and with `check_every=0`
    (every frame checked).
Prints p50/p95 per stage, end to end, their ratio, the ResNet forward pass alone (the floor, in the webcam
path's precision and in float32), peak memory and the video frames a second; writes them to --json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def one_face_frame() -> np.ndarray:
    from PIL import Image

    photo = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize((480, 480))
    frame = Image.new("RGB", (640, 480), (40, 40, 40))
    frame.paste(photo, (80, 0))
    return np.asarray(frame)


def ten_face_frame() -> np.ndarray:
    from PIL import Image

    a = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").crop((128, 10, 318, 240)).resize((124, 150))
    b = Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB").crop((130, 60, 400, 390)).resize((124, 150))
    frame = Image.new("RGB", (640, 480), (40, 40, 40))
    for k in range(10):
        frame.paste(a if k % 2 == 0 else b, (4 + (k % 5) * 127, 60 + (k // 5) * 200))
    return np.asarray(frame)


def stats(values: list[float]) -> dict:
    v = np.asarray(values)
    return {"p50": round(float(np.percentile(v, 50)), 2), "p95": round(float(np.percentile(v, 95)), 2),
            "mean": round(float(v.mean()), 2)}


def baseline_frame(model, frame, encode) -> dict:
    """The straightforward way: predict, then GradCAM as a separate hooked forward and full backward, on the
    faces the webcam path finds (its detector side) and with its one plain prediction pass."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from emotion.explain import LAYERS, LIVE_LAYER, overlay
    from emotion.faces import cut, detect_faces
    from emotion.service import LIVE_DETECT_SIDE

    t = [time.perf_counter()]
    dets = detect_faces(frame, detect_side=LIVE_DETECT_SIDE)
    t.append(time.perf_counter())
    squares = [model.prep.square(d, frame.shape) for d in dets]
    crops = [cut(frame, s) for s in squares]
    probs = model.predict(crops, flip=False)  # the webcam path skips the mirror pass too
    t.append(time.perf_counter())
    x = model.prep.to_input(crops)
    layer = LAYERS[LIVE_LAYER](model.net)  # the layer the webcam reads
    with torch.enable_grad(), GradCAM(model=model.net, target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(p.argmax())) for p in probs])
    model.net.zero_grad(set_to_none=True)
    t.append(time.perf_counter())
    out = frame.copy()
    h, w = frame.shape[:2]
    for (x0, y0, x1, y1), m in zip(squares, maps):
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        out[cy0:cy1, cx0:cx1] = overlay(out[cy0:cy1, cx0:cx1], m)
    t.append(time.perf_counter())
    encode(out)
    t.append(time.perf_counter())
    names = ("detect", "classify", "explain", "draw", "encode")
    ms = {n: (t[i + 1] - t[i]) * 1000 for i, n in enumerate(names)}
    ms["total"] = (t[-1] - t[0]) * 1000
    return ms


def app_frame(model, frame, state, precision: str | None = None) -> tuple[dict, object]:
    """One webcam frame as the app serves it (`precision` None: as the app resolves it), and its encode as the
    app's live output does it: an inline JPEG."""
    from emotion import service, view

    t0 = time.perf_counter()
    img, _, state = service.live_frame(model, frame, state, precision=precision)
    t1 = time.perf_counter()
    view.data_url(img, quality=view.LIVE_QUALITY)  # as the app's live output (app.FrameOutput) sends it, inline
    t2 = time.perf_counter()
    ms = dict(state.timings_ms)
    ms["encode"] = (t2 - t1) * 1000
    ms["total"] = (t2 - t0) * 1000
    return ms, state


def photo_per_face(model, runs: int) -> dict:
    """Photo mode as the app serves an upload (emotion.service.photo_steps: detection at the photo's side, the
    mirror pass; first the labels with Grad-CAM, then the chosen map, its faithfulness against the controls,
    regions, what-if, second map, cards): ms per face after detection until the first answer and until the
    full one, on the one-face and the two-face example photos in turn. Returns {"first": stats, "full":
    stats}."""
    from PIL import Image

    from emotion import service
    from emotion.faces import DETECT_SIDE, MIN_CONFIDENCE, detect_faces
    from emotion.images import load_image

    photos = [load_image(Image.open(EXAMPLES / name).convert("RGB")) for name in ("astronaut.jpg", "two_faces.jpg")]
    first, full = [], []
    for i in range(runs + 2):
        img = photos[i % len(photos)]
        t = time.perf_counter()
        detect_faces(img.rgb, MIN_CONFIDENCE, DETECT_SIDE)  # what the steps spend finding the faces, taken off
        detect = time.perf_counter() - t
        t = time.perf_counter()
        steps = service.photo_steps(model, img)
        view = next(steps)
        t_first = time.perf_counter() - t
        for view in steps:
            pass
        t_full = time.perf_counter() - t
        n = max(1, len(view.result["faces"]))
        if i >= 2:
            first.append((t_first - detect) * 1000 / n)
            full.append((t_full - detect) * 1000 / n)
    return {"first": stats(first), "full": stats(full)}


def frames_beside_photos(model, frame, runs: int) -> dict:
    """The one-face webcam path's frame times (ms p50/p95) while another thread analyses the two-face example
    photo with the defaults (emotion.service.photo, as an upload), over and over: does one user's photo
    stall another's webcam? Returns the frames' figures and how many photos were done meanwhile."""
    import threading

    from PIL import Image

    from emotion import service

    photo = Image.open(EXAMPLES / "two_faces.jpg").convert("RGB")
    stop, done = threading.Event(), [0]

    def uploads():
        while not stop.is_set():
            service.photo(model, photo)
            done[0] += 1

    worker = threading.Thread(target=uploads, daemon=True)
    worker.start()
    try:
        time.sleep(0.5)  # the photo under way
        rows, state = [], None
        for i in range(runs + 5):
            ms, state = app_frame(model, frame, state)
            if i >= 5:
                rows.append(ms["total"])
    finally:
        stop.set()
        worker.join()
    return {**stats(rows), "photos": done[0]}


def forward_floor(model, runs: int, precision: str = "fp32") -> dict:
    """One face's forward pass alone, as `model.logits` runs it (in ONNX Runtime where the model's engine
    is "onnx" and `precision` is float32)."""
    x = model.prep.to_input([np.zeros((96, 96, 3), np.uint8)])
    times = []
    for i in range(runs + 5):
        t = time.perf_counter()
        model.logits(x, precision)
        if i >= 5:
            times.append((time.perf_counter() - t) * 1000)
    return stats(times)


VIDEO_SECONDS, VIDEO_FPS = 2, 25  # the benchmark's clip: 2 s at 25 frames a second, every frame analysed


def one_face_clip(path: Path, seconds: float = VIDEO_SECONDS, fps: int = VIDEO_FPS) -> Path:
    """A 640x480 clip of the astronaut's face (as the tests' clips are made) moving from left to right."""
    from PIL import Image

    from emotion.video import ClipWriter

    face = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").crop((140, 20, 305, 215))
    face = face.resize((round(face.width * 288 / face.height), 288))
    n = round(seconds * fps)
    with ClipWriter(path, fps) as w:
        for i in range(n):
            frame = Image.new("RGB", (640, 480), (90, 90, 90))
            frame.paste(face, (round((640 - face.width) * i / max(1, n - 1)), 96))
            w.write(np.asarray(frame))
    return path


def video_frames_per_second(model, check_every: float | None = None, seconds: float = VIDEO_SECONDS,
                            fps: int = VIDEO_FPS) -> dict:
    """Frames analysed a second by `emotion.clip.analyse_video` on `one_face_clip`, every frame, writing the
    annotated clip as the app's Video tab does; `check_every` None: the default. A few frames of the same clip
    are analysed first, untimed (the ONNX Runtime sessions open on first use, as in a warm app)."""
    import tempfile

    from emotion.clip import analyse_video
    from emotion.video import EVERY_FRAME

    with tempfile.TemporaryDirectory(prefix="emotion-bench-") as d:
        clip = one_face_clip(Path(d) / "one_face.mp4", seconds, fps)
        kw = {} if check_every is None else {"check_every": check_every}
        analyse_video(one_face_clip(Path(d) / "warm.mp4", 4 / fps, fps), model, EVERY_FRAME, **kw)
        t = time.perf_counter()
        r = analyse_video(clip, model, EVERY_FRAME, clip_path=Path(d) / "annotated.mp4", **kw)
        took = time.perf_counter() - t
    checked = sum(row["checked"] for row in r.rows)
    return {"frames": r.frames, "checked": checked, "seconds": round(took, 2),
            "frames_per_s": round(r.frames / took, 2)}


def markdown_table(r: dict) -> str:
    """The speed table of docs/speed.md, from one run's figures (`main`'s result)."""
    app, base = r["stages"]["app"], r["stages"]["baseline"]
    rows = [
        ("webcam path, one face, end to end", f"{app['total']['p50']} / {app['total']['p95']}",
         f"{base['total']['p50']} / {base['total']['p95']}"),
        ("of which: face detector (320 px)", f"{app['detect']['p50']}", f"{base['detect']['p50']}"),
        ("of which: classify + Grad-CAM", f"{app['classify_explain']['p50']}",
         f"{round(base['classify']['p50'] + base['explain']['p50'], 2)}"),
        ("of which: draw + JPEG encode", f"{round(app['draw']['p50'] + app['encode']['p50'], 2)}",
         f"{round(base['draw']['p50'] + base['encode']['p50'], 2)}"),
        ("webcam path, ten faces, end to end", f"{r['ten_faces_ms_p50']} / {r['ten_faces_ms_p95']}",
         f"{r['baseline_ten_faces_ms_p50']}"),
        ("photo, first answer (labels, Grad-CAM), per face after detection",
         f"{r['photo_first_ms_per_face_p50']} / {r['photo_first_ms_per_face_p95']} "
         f"({r['photo_first_ms_per_face_p50'] / r['forward_floor_ms_p50']:.1f}x the floor)", ""),
        ("photo, full answer (the chosen map and every check), per face after detection",
         f"{r['photo_ms_per_face_p50']} / {r['photo_ms_per_face_p95']} "
         f"({r['photo_ms_per_face_p50'] / r['forward_floor_ms_p50']:.1f}x the floor)", ""),
        ("ResNet50 forward pass alone (the floor)", f"{r['forward_floor_ms_p50']} / {r['forward_floor_ms_p95']}",
         f"{r['forward_floor_torch_fp32_ms_p50']}"),
    ]
    head = (f"| {r['input_size']} px input, {r['threads']} threads, {r['live_precision']}, passes without gradient in "
            f"{r['engine']} | this app, ms p50 / p95 | plain pipeline (PyTorch + pytorch-grad-cam), ms p50 (/ p95) |")
    lines = [head, "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append(f"| plain pipeline / this app, one face (p50) | {r['speedup_p50']}x | |")
    if "beside_photos_ms_p95" in r:
        lines.append(f"| webcam path, one face, while two-face photos are analysed | {r['beside_photos_ms_p50']} / "
                     f"{r['beside_photos_ms_p95']} (p95 {r['beside_photos_p95_ratio']}x alone) | |")
    if "speedup_mean" in r:
        lines.append(f"| one face, mean over frames (this app / plain) | {r['end_to_end_ms_mean']} ms, "
                     f"{r['end_to_end_ms_mean'] / r['forward_floor_ms_p50']:.2f}x the floor | "
                     f"{r['baseline_end_to_end_ms_mean']} ms ({r['speedup_mean']}x) |")
    lines.append("| webcam path, one face, p50 by number format | "
                 + ", ".join(f"{p} {ms}" for p, ms in r["one_face_ms_p50_by_precision"].items())
                 + f" (the app takes {r['live_precision']}) | |")
    if "video_default" in r:
        d, e = r["video_default"], r["video_every_check"]
        lines.append(f"| video, one face, {VIDEO_FPS} fps clip, every frame analysed: frames a second | "
                     f"{d['frames_per_s']} (checked {d['checked']} of {d['frames']}); every frame checked "
                     f"{e['frames_per_s']} | |")
    lines.append(f"| peak memory of the run | {r['peak_rss_mb']:.0f} MB | |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m tools.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--frames", type=int, default=100, help="timed frames per case (after 5 warm-up frames)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default=None)
    args = p.parse_args(argv)

    import torch
    import gradio as gr

    torch.set_num_threads(args.threads)
    from emotion.model import load_model

    model = load_model(args.model)  # as the app loads it: $EMOTION_ENGINE, else ONNX Runtime where it runs
    plain = load_model(args.model, engine="torch")  # the plain pipeline runs PyTorch only
    jpeg = gr.Image(format="jpeg", render=False)  # what a plain gr.Image output does with a frame
    encode = jpeg.postprocess
    one, ten = one_face_frame(), ten_face_frame()

    def run(fn, frame, n, precision=None):
        rows, state = [], None
        for i in range(n + 5):
            if fn is app_frame:
                ms, state = app_frame(model, frame, state, precision)
            else:
                ms = baseline_frame(plain, frame, encode)
            if i >= 5:
                rows.append(ms)
        return {k: stats([r[k] for r in rows]) for k in rows[0]}

    from emotion.precision import resolve_precision

    from emotion.precision import native_bf16

    live_precision = resolve_precision(engine=model.engine)  # as the app's webcam tab: $EMOTION_PRECISION, else auto
    floor = forward_floor(model, args.frames, live_precision)
    floor_torch = forward_floor(plain, args.frames)
    base = run(baseline_frame, one, args.frames)
    app = run(app_frame, one, args.frames)
    app_ten = run(app_frame, ten, max(20, args.frames // 4))
    base_ten = run(baseline_frame, ten, max(10, args.frames // 10))
    photo = photo_per_face(model, max(10, args.frames // 5))
    beside = frames_beside_photos(model, one, max(20, args.frames // 2))
    video_default = video_frames_per_second(model)
    video_every = video_frames_per_second(model, 0, seconds=1)  # (every frame checked: 1 s of the clip will do)
    # "auto" must never be the slower choice: the one-face webcam path in each number format this CPU computes
    # natively (bf16 only where it has bf16 instructions; emulated, it is no candidate)
    by_precision = {p: run(app_frame, one, max(20, args.frames // 2), p)["total"]["p50"]
                    for p in (("fp32", "bf16") if native_bf16() else ("fp32",))}
    result = {
        "end_to_end_ms_p50": app["total"]["p50"], "end_to_end_ms_p95": app["total"]["p95"],
        "baseline_end_to_end_ms_p50": base["total"]["p50"], "baseline_end_to_end_ms_p95": base["total"]["p95"],
        "speedup_p50": round(base["total"]["p50"] / app["total"]["p50"], 2),
        "end_to_end_ms_mean": app["total"]["mean"], "baseline_end_to_end_ms_mean": base["total"]["mean"],
        "speedup_mean": round(base["total"]["mean"] / app["total"]["mean"], 2),
        "ten_faces_ms_p50": app_ten["total"]["p50"], "ten_faces_ms_p95": app_ten["total"]["p95"],
        "baseline_ten_faces_ms_p50": base_ten["total"]["p50"],
        "forward_floor_ms_p50": floor["p50"], "forward_floor_ms_p95": floor["p95"],
        "forward_floor_torch_fp32_ms_p50": floor_torch["p50"], "live_precision": live_precision,
        "engine": model.engine, "one_face_ms_p50_by_precision": by_precision,
        "beside_photos_ms_p50": beside["p50"], "beside_photos_ms_p95": beside["p95"],
        "beside_photos_p95_ratio": round(beside["p95"] / app["total"]["p95"], 2), "photos_beside": beside["photos"],
        "auto_is_fastest": by_precision[live_precision] <= min(by_precision.values()) * 1.05,
        "photo_ms_per_face_p50": photo["full"]["p50"], "photo_ms_per_face_p95": photo["full"]["p95"],
        "photo_first_ms_per_face_p50": photo["first"]["p50"], "photo_first_ms_per_face_p95": photo["first"]["p95"],
        "video_default": video_default, "video_every_check": video_every,
        "stages": {"app": app, "baseline": base, "app_ten_faces": app_ten, "baseline_ten_faces": base_ten},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": args.threads, "input_size": model.prep.size, "frames": args.frames,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
    }
    print(f"input {model.prep.size}px, {args.threads} threads, webcam path in {live_precision}, no-gradient passes "
          f"in {model.engine}; ResNet50 forward alone (the floor): p50 {floor['p50']} ms, p95 {floor['p95']} ms "
          f"({floor_torch['p50']} ms in PyTorch float32)")
    for name, table in (("baseline, 1 face", base), ("app, 1 face", app), ("app, 10 faces", app_ten),
                        ("baseline, 10 faces", base_ten)):
        print(f"{name:>20}: " + ", ".join(f"{k} {v['p50']}/{v['p95']}" for k, v in table.items()) + " (ms p50/p95)")
    print(f"end to end, 1 face: app p50 {result['end_to_end_ms_p50']} ms, p95 {result['end_to_end_ms_p95']} ms, "
          f"mean {result['end_to_end_ms_mean']} ms ({result['end_to_end_ms_mean'] / floor['p50']:.2f}x the floor); "
          f"baseline p50 {result['baseline_end_to_end_ms_p50']} ms; {result['speedup_p50']}x faster "
          f"({result['speedup_mean']}x on the mean). "
          f"10 faces: p50 {result['ten_faces_ms_p50']} ms. Photo, per face after detection: first answer p50 "
          f"{photo['first']['p50']} ms, full answer with every check p50 {photo['full']['p50']} ms, p95 "
          f"{photo['full']['p95']} ms. Peak memory {result['peak_rss_mb']} MB.")
    print(f"webcam path, one face, while another thread analyses two-face photos ({beside['photos']} done): p50 "
          f"{beside['p50']} ms, p95 {beside['p95']} ms ({result['beside_photos_p95_ratio']}x its p95 alone)")
    print(f"video, one face, {VIDEO_FPS} fps clip, every frame analysed: {video_default['frames_per_s']} frames a "
          f"second ({video_default['checked']} of {video_default['frames']} checked); every frame checked: "
          f"{video_every['frames_per_s']} frames a second")
    print("webcam path, one face, p50 by number format: "
          + ", ".join(f"{p} {ms} ms" for p, ms in by_precision.items())
          + f"; the app takes {live_precision}" + ("" if result["auto_is_fastest"] else " (NOT the fastest here)"))
    print()
    print(markdown_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
