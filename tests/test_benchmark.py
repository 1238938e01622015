"""tools.benchmark compares like with like: its plain pipeline sees the faces the app's webcam path sees and
classifies them with the same one pass, so the two differ only in how the heatmap is made (and, where the CPU
has bf16, in the number format the webcam path computes in)."""
import gradio as gr
import torch

from emotion.model import dtype
from emotion.precision import resolve_precision
from tools import benchmark


def test_the_plain_pipeline_sees_and_classifies_what_the_live_path_does(model):
    """Every forward pass's input, recorded at the network's first layer: the webcam path makes one (the
    prediction and Grad-CAM together), the plain pipeline two (the prediction, then pytorch-grad-cam's own
    pass), all on the very same face input; no mirrored pass, though the shipped config asks photos for one."""
    assert model.prep.tta_flip
    encode = gr.Image(format="jpeg", render=False).postprocess
    frame = benchmark.one_face_frame()
    seen = []

    def record(_module, args):
        seen.append(args[0].detach().clone())

    live_net = model.network(resolve_precision())  # the webcam path's: the bf16 copy where the CPU has bf16
    hooks = [net.conv1.register_forward_pre_hook(record) for net in {model.net, live_net}]
    try:
        benchmark.baseline_frame(model, frame, encode)
        plain, seen[:] = list(seen), []
        _, state = benchmark.app_frame(model, frame, None, encode)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 1 and len(plain) == 2 and state.precision == resolve_precision()
    assert seen[0].dtype == dtype(live_net) and all(x.dtype == torch.float32 for x in plain)
    # the same crop of the same detection, not mirrored (in the live path's number format)
    assert all(torch.equal(x.to(seen[0].dtype), seen[0]) for x in plain)
