"""tools.benchmark compares like with like: its plain pipeline sees the faces the app's webcam path sees and
classifies them with the same one pass, so the two differ only in how the heatmap is made (and, where the CPU
has bf16, in the number format the webcam path computes in)."""
import gradio as gr
import torch

from emotion.model import DEFAULT_WEIGHTS, dtype, load_model
from emotion.precision import resolve_precision
from tools import benchmark


def test_the_plain_pipeline_sees_and_classifies_what_the_live_path_does():
    """Every forward pass's input, recorded at the network's first layer: the webcam path makes one (the
    prediction and Grad-CAM together), the plain pipeline two (the prediction, then pytorch-grad-cam's own
    pass), all on the very same face input; no mirrored pass, though the shipped config asks photos for one.
    (Both in PyTorch, where the first layer can be watched; tests/test_engine.py holds ONNX Runtime's passes
    to PyTorch's.)"""
    model = load_model(DEFAULT_WEIGHTS, fallback=False, engine="torch")
    assert model.prep.tta_flip
    encode = gr.Image(format="jpeg", render=False).postprocess
    frame = benchmark.one_face_frame()
    seen = []

    def record(_module, args):
        seen.append(args[0].detach().clone())

    live = resolve_precision(engine=model.engine)  # the webcam path's: bf16 where PyTorch runs it on AMX
    live_net = model.network(live)
    hooks = [net.conv1.register_forward_pre_hook(record) for net in {model.net, live_net}]
    try:
        benchmark.baseline_frame(model, frame, encode)
        plain, seen[:] = list(seen), []
        _, state = benchmark.app_frame(model, frame, None)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 1 and len(plain) == 2 and state.precision == live
    assert seen[0].dtype == dtype(live_net) and all(x.dtype == torch.float32 for x in plain)
    # the same crop of the same detection, not mirrored (in the live path's number format)
    assert all(torch.equal(x.to(seen[0].dtype), seen[0]) for x in plain)


def test_the_readme_table_is_the_runs_figures():
    st = lambda p50, p95=0.0: {"p50": p50, "p95": p95}  # noqa: E731
    app = {"detect": st(7.5), "classify_explain": st(15.0), "draw": st(1.0), "encode": st(2.0), "total": st(26.0, 33.0)}
    base = {"detect": st(7.0), "classify": st(20.0), "explain": st(64.0), "draw": st(0.5), "encode": st(2.0),
            "total": st(95.0, 118.0)}
    r = {"stages": {"app": app, "baseline": base}, "ten_faces_ms_p50": 99.0, "ten_faces_ms_p95": 115.0,
         "baseline_ten_faces_ms_p50": 370.0, "photo_ms_per_face_p50": 131.0, "photo_ms_per_face_p95": 160.0,
         "photo_first_ms_per_face_p50": 21.0, "photo_first_ms_per_face_p95": 25.0,
         "forward_floor_ms_p50": 8.4, "forward_floor_ms_p95": 11.9, "forward_floor_torch_fp32_ms_p50": 19.9,
         "speedup_p50": 3.65, "peak_rss_mb": 1671.4, "input_size": 64, "threads": 2, "live_precision": "fp32",
         "engine": "onnx", "one_face_ms_p50_by_precision": {"fp32": 26.0, "bf16": 44.5},
         "end_to_end_ms_mean": 16.8, "baseline_end_to_end_ms_mean": 84.0, "speedup_mean": 5.0,
         "beside_photos_ms_p50": 30.0, "beside_photos_ms_p95": 60.0, "beside_photos_p95_ratio": 1.82,
         "video_default": {"frames": 50, "checked": 2, "seconds": 4.2, "frames_per_s": 11.9},
         "video_every_check": {"frames": 50, "checked": 50, "seconds": 41.7, "frames_per_s": 1.2}}
    table = benchmark.markdown_table(r).splitlines()
    assert table[0].startswith("| 64 px input, 2 threads, fp32, passes without gradient in onnx |")
    assert "| webcam path, one face, end to end | 26.0 / 33.0 | 95.0 / 118.0 |" in table
    assert "| of which: classify + Grad-CAM | 15.0 | 84.0 |" in table  # the plain pipeline's two stages summed
    assert "| of which: draw + JPEG encode | 3.0 | 2.5 |" in table
    assert "| plain pipeline / this app, one face (p50) | 3.65x | |" in table and table[-1] == "| peak memory of the run | 1671 MB | |"
    assert "| webcam path, one face, p50 by number format | fp32 26.0, bf16 44.5 (the app takes fp32) | |" in table
    assert "| one face, mean over frames (this app / plain) | 16.8 ms, 2.00x the floor | 84.0 ms (5.0x) |" in table
    assert "| webcam path, one face, while two-face photos are analysed | 30.0 / 60.0 (p95 1.82x alone) | |" in table
    assert "| photo, first answer (labels, Grad-CAM), per face after detection | 21.0 / 25.0 (2.5x the floor) |  |" in table
    assert ("| photo, full answer (the chosen map and every check), per face after detection | 131.0 / 160.0 "
            "(15.6x the floor) |  |") in table
    assert ("| video, one face, 25 fps clip, every frame analysed: frames a second | 11.9 (checked 2 of 50); every "
            "frame checked 1.2 | |") in table
