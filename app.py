"""Gradio app: faces in a photo, a video file or a webcam stream, their emotion, every class's probability, and why.

    python app.py                           # the model in weights/
    python app.py --model hf-hub:owner/name # or EMOTION_MODEL=hf-hub:owner/name python app.py

Layout and wiring only; the work is in emotion/service.py.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def tune_malloc() -> bool:
    """Set glibc's allocator for a long-lived server that decodes pictures of every size, before the threads
    and big imports start: one arena (M_ARENA_MAX), and every buffer over 4 MiB mapped on its own (a fixed
    M_MMAP_THRESHOLD), so the memory of a big picture goes back to the system when it is freed.
    With glibc's defaults, 400 damaged pictures left the server 170 MB larger; with 2 arenas, 28 MB
    (docs/reliability.md, "Hostile input and crowds"). Two webcams streaming at once still grew it by about
    10 KB a frame with 2 arenas (20 MB per 2,000 frames, without end), and not at all with one. Left alone where MALLOC_ARENA_MAX or MALLOC_MMAP_THRESHOLD_ is
    set, with EMOTION_MALLOC=default, and where there is no glibc. Returns whether it was set."""
    if os.environ.get("EMOTION_MALLOC") == "default" or {"MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"} & {*os.environ}:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-8, 1) and libc.mallopt(-3, 4 * 2**20))  # M_ARENA_MAX, M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        return False


MALLOC_TUNED = tune_malloc()

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from gradio.utils import get_upload_folder as gradio_upload_folder  # noqa: E402

from emotion import service, timeline, view  # noqa: E402
from emotion.clip import CHECK_EVERY_S  # noqa: E402
from emotion.engine import EngineError  # noqa: E402
from emotion.explain import (CLASS_AGNOSTIC, DEFAULT_LAYER, DEFAULT_METHOD, LAYERS, LIVE_LAYER, LIVE_METHOD,  # noqa: E402
                             METHODS, grid_side)
from emotion.images import MAX_FILE_BYTES, ImageError, load_image  # noqa: E402
from emotion.model import EmotionModel, ModelLoadError, load_model  # noqa: E402
from emotion.precision import resolve_precision  # noqa: E402
from emotion.video import DEFAULT_RATE, EVERY_FRAME, LIMITS, MAX_VIDEO_BYTES  # noqa: E402

log = logging.getLogger("app")
# What a public server holds to (docs/reliability.md, "Limits and safety"); the environment may change the last two.
WORKERS = 2  # photo analyses at once; requests beyond them wait their turn (webcam streams have their own 4)
QUEUE_SIZE = int(os.environ.get("EMOTION_QUEUE_SIZE", "64"))  # more waiting than this: "busy, try again"
CACHE_SECONDS = int(os.environ.get("EMOTION_CACHE_SECONDS", str(24 * 3600)))  # uploads, results, share links
EXAMPLES = Path(__file__).resolve().parent / "examples"
ABOUT = """# Explainable facial-emotion recognition
Finds every face, says which of seven expressions it shows (angry, disgust, fear, happy, neutral, sad,
surprise), draws all seven probabilities, and shows **why** with a heatmap of the pixels that drove the
score. Pick another class under *Heatmap for* to ask "why not X?". Each heatmap is tested: hiding the pixels
it marks must cost the class more than hiding the pixels of a random map, of the class's average map over
many faces, and of another class's map, and the verdict says how far to trust it; a small chart shows how
much of it falls on the eyes, nose, mouth, the rest of the face and outside it, with a tick at what a flat
map would give. A heatmap is evidence about the model, not about the person: expressions are not feelings, and
the model makes mistakes (see its model card)."""
README = Path(__file__).resolve().parent / "README.md"
RESULTS = Path(tempfile.gettempdir()) / "emotion-video"  # one folder per video request, kept an hour
UPLOAD_LIMIT = max(MAX_FILE_BYTES, MAX_VIDEO_BYTES)  # photos are held to their own, smaller limit when read
VIDEO_NOTE = ("Upload a clip (mp4, webm, mov, avi): every face is followed through it, labelled and explained in "
              "the frames analysed; out come a timeline of each person's probabilities, the clip with labels and "
              "heatmaps drawn on, and a CSV.")


def api_doc() -> str:
    """The README's "Call the API" section, so the app and the README show the same call."""
    text = README.read_text() if README.is_file() else ""
    start = text.find("## Call the API")
    end = text.find("\n## ", start + 1)
    return text[start:end].replace("## Call the API", "### API") if start >= 0 else ""


class ImageInput(gr.Image):
    """gr.Image that passes the upload's path on unopened, so emotion.images gives the error messages."""

    def get_block_name(self) -> str:  # same front-end component as gr.Image
        return "image"

    def preprocess(self, payload):
        if payload is None or (payload.url or "").startswith("data:"):
            return super().preprocess(payload)
        return payload.path


class FrameOutput(gr.Image):
    """gr.Image that sends each frame inline (a JPEG data: URL in the stream's message) instead of writing
    it to Gradio's file cache: a webcam session makes about 3,000 frames in 5 minutes."""

    def get_block_name(self) -> str:  # same front-end component as gr.Image
        return "image"

    def postprocess(self, value):
        if not isinstance(value, np.ndarray):
            return super().postprocess(value)
        # a plain dict, not FileData: Gradio then has no file to move into its cache
        return {"url": view.data_url(value, quality=view.LIVE_QUALITY), "path": None, "orig_name": "live.jpg", "is_stream": False}


def prune_share_links(folder: Path, max_age_s: float) -> int:
    """Delete the share links (Gradio's `deep_links/<id>/state.json`, which hold a result's pictures) older
    than `max_age_s`: Gradio keeps them until the server restarts. Returns how many went."""
    gone = 0
    for state in folder.glob("deep_links/*/state.json"):
        with contextlib.suppress(OSError):
            if time.time() - state.stat().st_mtime > max_age_s:
                state.unlink()
                state.parent.rmdir()
                gone += 1
    return gone


def _keep_pruning(folder: Path, max_age_s: float, every_s: float) -> None:
    while True:
        time.sleep(every_s)
        prune_share_links(folder, max_age_s)


def _user_error(e: Exception, what: str = "picture") -> gr.Error:
    if isinstance(e, gr.Error):  # already a message for the user (the server is full)
        return e
    if isinstance(e, (ImageError, ValueError)):  # VideoError is a ValueError
        return gr.Error(str(e), print_exception=False)
    log.exception("analysis failed")
    return gr.Error(f"Something went wrong while analysing this {what}; the server is still running.")


AGNOSTIC_NOTE = ("{m} draws the same map whatever the class (it shows where the layer's activations are "
                 "strongest), so it cannot answer \"why not X?\": its heatmap is for each face as it is.")
# the face cards use the whole width; on a phone they reach into the page's 32 px margins, 8 px from the edge
PAGE_CSS = """
#faces .html-container { padding: 0; }
@media (max-width: 600px) {
  #faces { margin-left: -24px !important; margin-right: -24px !important; width: auto !important; }
}
"""
# on a phone the controls sit above the results: bring the first face card into view once it is there
SHOW_RESULT_ON_PHONE = """() => { const s = document.querySelector('#status');
    if (s && window.innerWidth <= 600) s.scrollIntoView({block: 'start'}); }"""
# the timeline's playhead follows the annotated clip as it plays; a click on the timeline seeks the clip there
TIMELINE_JS = """() => {
  const chart = () => document.querySelector('#timeline .ev-timeline');
  const clip = () => document.querySelector('#video-clip video');
  const place = (fig, t) => {
    const d = fig.dataset, span = (+d.t1 - +d.t0) || 1;
    const x = +d.left + (t - +d.t0) / span * (+d.right - +d.left);
    fig.querySelector('.ev-playhead').style.left = (Math.max(0, Math.min(1, x)) * 100).toFixed(3) + '%';
    fig.dataset.time = t.toFixed(3);
  };
  const follow = e => {
    const fig = chart();
    if (fig && e.target instanceof HTMLVideoElement && e.target.closest('#video-clip')) place(fig, e.target.currentTime);
  };
  for (const kind of ['timeupdate', 'seeked', 'loadeddata']) document.addEventListener(kind, follow, true);
  document.addEventListener('click', e => {
    const area = e.target.closest && e.target.closest('#timeline .ev-chart'), v = clip();
    if (!area || !v) return;
    const fig = area.closest('.ev-timeline'), d = fig.dataset, r = area.getBoundingClientRect();
    const f = ((e.clientX - r.left) / r.width - +d.left) / (+d.right - +d.left);
    v.currentTime = Math.max(0, Math.min(v.duration || 0, +d.t0 + f * (+d.t1 - +d.t0)));
  });
}"""
MIRRORED = True  # the webcam preview is a mirror, as people expect; Gradio then sends mirrored frames too


def unmirror(frame):
    """A frame from the mirrored webcam in the person's real orientation (what photos of them show)."""
    return frame if frame is None or not MIRRORED else np.ascontiguousarray(frame[:, ::-1])


def _warm(model: EmotionModel, layers: list[str]) -> None:
    """Export (or read from the cache) ONNX Runtime's Grad-CAM graphs for `layers`, so that the first request
    at another layer does not wait for it; a graph that cannot be had is said in the log."""
    try:
        model.onnx.warm(layers)
    except EngineError as e:  # EMOTION_ENGINE=onnx: the requests that need this graph will say it too
        log.error("%s", e)


def build_demo(model: EmotionModel, live_precision: str | None = None) -> gr.Blocks:
    """The app's page; the webcam tab computes in `live_precision` (None: $EMOTION_PRECISION, else "auto":
    the faster of float32 and bf16 for this model's engine, emotion/precision.py). Photos and videos are
    always float32."""
    live_precision = resolve_precision(live_precision, engine=model.engine)

    # Photos are decoded (and refused, if they must be) as soon as they arrive; only the analysis waits its turn
    # for one of WORKERS, so a damaged file gets its message at once even behind a crowd of photos.
    analyses = threading.BoundedSemaphore(WORKERS)
    # The events themselves run without a limit, so Gradio's own queue no longer bounds the photos waiting for
    # a worker: past WORKERS + QUEUE_SIZE of them, a photo is turned away with the queue's plain message.
    admitted, admitted_lock = [0], threading.Lock()

    @contextlib.contextmanager
    def turn():
        with admitted_lock:
            if admitted[0] >= WORKERS + QUEUE_SIZE:
                raise gr.Error(service.BUSY)
            admitted[0] += 1
        try:
            with analyses:
                yield
        finally:
            with admitted_lock:
                admitted[0] -= 1

    def on_photo(image, method, layer, explain_for, whole):
        """Two answers: the faces, labels and a quick Grad-CAM first, then the checked result."""
        if image is None:
            yield None, "", "Upload a photo, paste one, or pick an example.", None
            return
        if method in CLASS_AGNOSTIC:  # the radio is reset too, but this event may have fired first
            explain_for = service.PREDICTED
        try:
            steps = service.photo_steps(model, load_image(image), method, layer, explain_for, whole)
            while True:
                with turn():
                    v = next(steps, None)
                if v is None:
                    return
                yield v.annotated, v.faces, v.status, v.result
        except Exception as e:  # a bad picture must not take the page down
            err = _user_error(e)
            yield None, "", f"**Could not analyse this picture:** {err.message}", None

    def on_method(method):
        if method in CLASS_AGNOSTIC:
            return gr.Radio(value=service.PREDICTED, interactive=False, info=AGNOSTIC_NOTE.format(m=method))
        return gr.Radio(interactive=True, info="Pick another class to see what in the face speaks for it.")

    def on_predict(image, method, layer, heatmap_for, whole_image):
        try:
            loaded = load_image(image)
            with turn():
                return service.predict(model, loaded, method, layer, heatmap_for, whole_image)
        except Exception as e:
            raise _user_error(e) from None

    def on_video(path, every, rate, method, layer, progress=gr.Progress()):
        if path is None:
            return None, "", None, VIDEO_NOTE
        try:
            v = service.video(model, path, EVERY_FRAME if every else rate, method, layer,
                              folder=service.result_folder(RESULTS), progress=lambda f, d: progress(f, desc=d))
        except Exception as e:  # a bad file must not take the page down
            return None, "", None, f"**Could not analyse this video:** {_user_error(e, 'video').message}"
        return v.clip, v.timeline, v.csv, v.status

    def on_predict_video(video, frames_per_second, method, layer, check_every, progress=gr.Progress()):
        try:
            return service.predict_video(model, video, frames_per_second, method, layer,
                                         progress=lambda f, d: progress(f, desc=d),
                                         check_every=CHECK_EVERY_S if check_every is None else check_every)
        except Exception as e:
            raise _user_error(e, "video") from None

    def on_frame(frame, state, method, layer):
        try:
            return service.live_frame(model, unmirror(frame), state, method, layer, live_precision)
        except Exception as e:  # keep the stream alive through a bad frame
            log.warning("webcam frame failed: %s", e)
            return gr.skip(), gr.skip(), state

    classes = [service.PREDICTED, *model.labels]
    methods = list(METHODS)
    # each layer named with its grid over the face at this model's input side (the value stays the layer's key)
    grids = {k: grid_side(model.net, k, model.prep.size) for k in LAYERS}
    layers = [(f"{k} - {g} x {g} cells", k) for k, g in grids.items()]
    # uploads and results leave Gradio's cache CACHE_SECONDS after they were made (checked 4 times as often)
    with gr.Blocks(title="Explainable facial-emotion recognition",
                   delete_cache=(max(1, CACHE_SECONDS // 4), CACHE_SECONDS)) as demo:
        gr.Markdown(ABOUT)
        with gr.Tab("Photo"):
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    image = ImageInput(type="filepath", sources=["upload", "clipboard"], label="Photo", height=320)
                    gr.Examples(sorted(str(p) for p in EXAMPLES.glob("*.*")), inputs=[image])
                    explain_for = gr.Radio(classes, value=service.PREDICTED, label="Heatmap for (why not X?)",
                                           info="Pick another class to see what in the face speaks for it.")
                    with gr.Row():
                        method = gr.Dropdown(methods, value=DEFAULT_METHOD, label="Explanation method")
                        layer = gr.Dropdown(layers, value=DEFAULT_LAYER, label="Layer it reads")
                    whole = gr.Checkbox(False, label="The picture is one face (already cropped)")
                    run = gr.Button("Analyse", variant="primary")
                with gr.Column(scale=3, min_width=300):
                    status = gr.Markdown(elem_id="status")
                    faces = gr.HTML("", elem_id="faces", css_template=view.CSS, js_on_load=None)
                    annotated = gr.Image(label="Faces found (numbered as the cards)", interactive=False,
                                         format="jpeg", height=300)
                    gr.DeepLinkButton()
        with gr.Tab("Video"):
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    clip_in = gr.Video(sources=["upload"], label="Video clip", height=280)
                    rate = gr.Slider(0.5, 10, value=DEFAULT_RATE, step=0.5, label="Frames analysed per second",
                                     info="Fewer is quicker; the limit on frames analysed a clip still holds.")
                    every = gr.Checkbox(False, label="Analyse every frame")
                    with gr.Row():
                        video_method = gr.Dropdown(methods, value=DEFAULT_METHOD, label="Explanation method")
                        video_layer = gr.Dropdown(layers, value=DEFAULT_LAYER, label="Layer it reads")
                    video_run = gr.Button("Analyse video", variant="primary")
                    gr.Markdown(f"Limits: {LIMITS}. The sound is not analysed.", elem_id="video-limits")
                with gr.Column(scale=3, min_width=300):
                    video_status = gr.Markdown(VIDEO_NOTE, elem_id="video-status")
                    timeline_view = gr.HTML("", elem_id="timeline", css_template=timeline.CSS, js_on_load=None)
                    clip_out = gr.Video(label="The clip with labels and heatmaps", interactive=False,
                                        elem_id="video-clip", height=360)
                    csv_out = gr.File(label="Results per frame and person (CSV)", interactive=False)
        with gr.Tab("Webcam (live)"):
            gr.Markdown("Turn on the camera: every frame is labelled and explained. The preview is a mirror; "
                        "the frames are analysed, and shown on the right, the right way round. Labels are "
                        "averaged over the last few frames; each heatmap is the frame's own, for the class "
                        "named under the label. Frames that arrive while one is being analysed are skipped. The "
                        "webcam reads Grad-CAM at layer3, fast enough for every frame; Occlusion, the photos' "
                        "default, blurs each of 64 cells in turn, a forward pass each.")
            with gr.Row():
                cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera",
                               webcam_options=gr.WebcamOptions(mirror=MIRRORED))
                live = FrameOutput(label="Live: heatmap and label", interactive=False, format="jpeg")
            with gr.Row():
                live_method = gr.Dropdown(methods, value=LIVE_METHOD, label="Explanation method")
                live_layer = gr.Dropdown(layers, value=LIVE_LAYER, label="Layer it reads")
            live_probs = gr.Label(num_top_classes=7, label="Probabilities (largest face, smoothed)")
            state = gr.State(None)  # a LiveState per session, made on the first frame
            cam.stream(on_frame, [cam, state, live_method, live_layer], [live, live_probs, state],
                       stream_every=0.1, time_limit=300, concurrency_limit=4, api_visibility="undocumented")
        with gr.Tab("API"):
            gr.Markdown(api_doc())
            result = gr.JSON(label="What /predict answers for the photo in the Photo tab (heatmaps left out)",
                             open=False)
            # the documented endpoint: same inputs, JSON out (hidden components, wired to /predict)
            api_in = ImageInput(type="filepath", visible=False, label="image")
            api_method = gr.Textbox(DEFAULT_METHOD, visible=False, label="method")
            api_layer = gr.Textbox(DEFAULT_LAYER.split()[0], visible=False, label="layer")
            api_for = gr.Textbox(service.PREDICTED, visible=False, label="heatmap_for")
            api_whole = gr.Checkbox(False, visible=False, label="whole_image")
            api_out = gr.JSON(visible=False, label="result")
            api_btn = gr.Button(visible=False)
            api_btn.click(on_predict, [api_in, api_method, api_layer, api_for, api_whole], api_out,
                          api_name="predict", api_description="Faces, labels, probabilities and heatmaps "
                          "for one image.", concurrency_limit=None)  # (the analyses take turns inside)
            api_video = gr.Video(sources=["upload"], visible=False, label="video")
            api_rate = gr.Number(DEFAULT_RATE, visible=False, label="frames_per_second")
            api_video_method = gr.Textbox(DEFAULT_METHOD, visible=False, label="method")
            api_video_layer = gr.Textbox(DEFAULT_LAYER.split()[0], visible=False, label="layer")
            api_check_every = gr.Number(CHECK_EVERY_S, visible=False, label="check_every")
            api_video_out = gr.JSON(visible=False, label="result")
            api_video_btn = gr.Button(visible=False)
            api_video_btn.click(on_predict_video,
                                [api_video, api_rate, api_video_method, api_video_layer, api_check_every],
                                api_video_out, api_name="predict_video", concurrency_id="video",
                                concurrency_limit=1, api_description="Per analysed frame and person: box, label, "
                                "probabilities and the heatmap's verdict, for one video file.")
        method.change(on_method, method, explain_for, api_visibility="private", queue=False)
        gr.on([video_run.click, clip_in.upload], on_video, [clip_in, every, rate, video_method, video_layer],
              [clip_out, timeline_view, csv_out, video_status], api_visibility="undocumented",
              concurrency_id="video", concurrency_limit=1, trigger_mode="always_last",
              show_progress_on=clip_out)  # one progress bar, on the clip's box, not on every output
        gr.on([run.click, image.change, explain_for.change, method.change, layer.change, whole.change],
              on_photo, [image, method, layer, explain_for, whole], [annotated, faces, status, result],
              api_visibility="undocumented", trigger_mode="always_last", concurrency_limit=None
              ).success(None, js=SHOW_RESULT_ON_PHONE)
    demo.queue(default_concurrency_limit=WORKERS, max_size=QUEUE_SIZE)
    return demo


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="folder, local-dir:PATH or hf-hub:owner/name "
                                                 "(default: $EMOTION_MODEL, else weights/)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        live_precision = resolve_precision()  # $EMOTION_PRECISION, else "auto"
    except ValueError as e:
        raise SystemExit(f"Could not start: {e}") from None
    try:
        model = load_model(args.model)
        if model.onnx is not None:  # ONNX Runtime's graphs (exported, or read from the cache) now, not on a request:
            model.onnx.warm([LIVE_LAYER])  # the webcam's before the page opens, the other layers' beside it
            threading.Thread(target=_warm, args=(model, [k for k in LAYERS if k.split()[0] != LIVE_LAYER]),
                             daemon=True, name="onnx-warm").start()
        engine = model.engine
        live_precision = resolve_precision(None, engine=engine)  # "auto" depends on the engine that loaded
    except (ModelLoadError, EngineError, ValueError) as e:  # a plain sentence, not a traceback
        raise SystemExit(f"Could not start: {e}") from None
    log.info("model %s (%s px, %s); webcam path in %s; passes without gradient in %s; allocator %s", model.source,
             model.prep.size, ", ".join(model.labels), live_precision, engine,
             "tuned (1 arena, 4 MiB mmap threshold)" if MALLOC_TUNED else "as the environment set it")
    threading.Thread(target=_keep_pruning, args=(Path(gradio_upload_folder()), CACHE_SECONDS,
                                                 max(1, CACHE_SECONDS // 4)), daemon=True).start()
    build_demo(model, live_precision).launch(server_name=args.host, server_port=args.port,
                                             max_file_size=UPLOAD_LIMIT, show_error=True, css=PAGE_CSS,
                                             js=TIMELINE_JS)


if __name__ == "__main__":
    main()
