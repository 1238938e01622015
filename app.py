"""Gradio app: faces in a photo or a webcam stream, their emotion, every class's probability, and why.

    python app.py                           # the model in weights/
    python app.py --model hf-hub:owner/name # or EMOTION_MODEL=hf-hub:owner/name python app.py

Layout and wiring only; the work is in emotion/service.py.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from emotion import service, view  # noqa: E402
from emotion.explain import CLASS_AGNOSTIC, DEFAULT_LAYER, DEFAULT_METHOD, LAYERS, METHODS  # noqa: E402
from emotion.images import MAX_FILE_BYTES, ImageError  # noqa: E402
from emotion.model import EmotionModel, load_model  # noqa: E402

log = logging.getLogger("app")
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


def _user_error(e: Exception) -> gr.Error:
    if isinstance(e, (ImageError, ValueError)):
        return gr.Error(str(e), print_exception=False)
    log.exception("analysis failed")
    return gr.Error("Something went wrong while analysing this picture; the server is still running.")


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
MIRRORED = True  # the webcam preview is a mirror, as people expect; Gradio then sends mirrored frames too


def unmirror(frame):
    """A frame from the mirrored webcam in the person's real orientation (what photos of them show)."""
    return frame if frame is None or not MIRRORED else np.ascontiguousarray(frame[:, ::-1])


def build_demo(model: EmotionModel) -> gr.Blocks:
    def on_photo(image, method, layer, explain_for, whole):
        if image is None:
            return None, "", "Upload a photo, paste one, or pick an example.", None
        if method in CLASS_AGNOSTIC:  # the radio is reset too, but this event may have fired first
            explain_for = service.PREDICTED
        try:
            v = service.photo(model, image, method, layer, explain_for, whole)
        except Exception as e:  # a bad picture must not take the page down
            err = _user_error(e)
            return None, "", f"**Could not analyse this picture:** {err.message}", None
        return v.annotated, v.faces, v.status, v.result

    def on_method(method):
        if method in CLASS_AGNOSTIC:
            return gr.Radio(value=service.PREDICTED, interactive=False, info=AGNOSTIC_NOTE.format(m=method))
        return gr.Radio(interactive=True, info="Pick another class to see what in the face speaks for it.")

    def on_predict(image, method, layer, heatmap_for, whole_image):
        try:
            return service.predict(model, image, method, layer, heatmap_for, whole_image)
        except Exception as e:
            raise _user_error(e) from None

    def on_frame(frame, state, method, layer):
        try:
            return service.live_frame(model, unmirror(frame), state, method, layer)
        except Exception as e:  # keep the stream alive through a bad frame
            log.warning("webcam frame failed: %s", e)
            return gr.skip(), gr.skip(), state

    classes = [service.PREDICTED, *model.labels]
    methods, layers = list(METHODS), list(LAYERS)
    with gr.Blocks(title="Explainable facial-emotion recognition") as demo:
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
        with gr.Tab("Webcam (live)"):
            gr.Markdown("Turn on the camera: every frame is labelled and explained. The preview is a mirror; "
                        "the frames are analysed, and shown on the right, the right way round. Labels are "
                        "averaged over the last few frames; each heatmap is the frame's own, for the class "
                        "named under the label. Frames that arrive while one is being analysed are skipped.")
            with gr.Row():
                cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera",
                               webcam_options=gr.WebcamOptions(mirror=MIRRORED))
                live = gr.Image(label="Live: heatmap and label", interactive=False, format="jpeg")
            with gr.Row():
                live_method = gr.Dropdown(methods, value=DEFAULT_METHOD, label="Explanation method")
                live_layer = gr.Dropdown(layers, value=DEFAULT_LAYER, label="Layer it reads")
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
                          "for one image.")
        method.change(on_method, method, explain_for, api_visibility="private", queue=False)
        gr.on([run.click, image.change, explain_for.change, method.change, layer.change, whole.change],
              on_photo, [image, method, layer, explain_for, whole], [annotated, faces, status, result],
              api_visibility="undocumented", trigger_mode="always_last"
              ).success(None, js=SHOW_RESULT_ON_PHONE)
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="folder, local-dir:PATH or hf-hub:owner/name "
                                                 "(default: $EMOTION_MODEL, else weights/)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = load_model(args.model)
    log.info("model %s (%s px, %s)", model.source, model.prep.size, ", ".join(model.labels))
    build_demo(model).launch(server_name=args.host, server_port=args.port, max_file_size=MAX_FILE_BYTES,
                             show_error=True, css=PAGE_CSS)


if __name__ == "__main__":
    main()
