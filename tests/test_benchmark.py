"""tools.benchmark compares like with like: its plain pipeline sees the faces the app's webcam path sees and
classifies them with the same one pass, so the two differ only in how the heatmap is made."""
import gradio as gr
import torch

from tools import benchmark


def test_the_plain_pipeline_sees_and_classifies_what_the_live_path_does(model):
    """Every forward pass's input, recorded at the network's first layer: the webcam path makes one (the
    prediction and Grad-CAM together), the plain pipeline two (the prediction, then pytorch-grad-cam's own
    pass), all on the very same face input; no mirrored pass, though the shipped config asks photos for one."""
    assert model.prep.tta_flip
    encode = gr.Image(format="jpeg", render=False).postprocess
    frame = benchmark.one_face_frame()
    seen = []
    hook = model.net.conv1.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    try:
        benchmark.baseline_frame(model, frame, encode)
        plain, seen[:] = list(seen), []
        benchmark.app_frame(model, frame, None, encode)
    finally:
        hook.remove()
    assert len(seen) == 1 and len(plain) == 2
    assert all(torch.equal(x, seen[0]) for x in plain)  # the same crop of the same detection, not mirrored
