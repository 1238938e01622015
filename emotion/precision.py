"""Which number format the webcam path computes in: float32, or bfloat16 where that is the faster path.

bf16 halves the bytes each weight and activation takes, but it speeds the network up only where the
CPU's matrix units do it (AMX-BF16), and only PyTorch runs it: ONNX Runtime (emotion/engine.py) runs the
float32 passes, Grad-CAM included. Measured with `python -m tools.benchmark`, which prints both:
- with ONNX Runtime serving the model, its float32 path beat PyTorch's bf16 one on every CPU tried, AMX
  included (a 2-core Xeon with AMX: classify + Grad-CAM 21.6 ms in float32 against 45.1 ms in bf16);
- with PyTorch alone, bf16 beat float32 only with AMX. With AVX512_BF16 alone the webcam frame was slower in
  bf16 (oneDNN re-arranges every convolution's weights on each call), and without native bf16 it would be
  emulated.
So "auto" takes bf16 only where PyTorch runs the network (`engine` "torch") on a CPU with AMX-BF16, and
float32 everywhere else. On CUDA, "auto" means bf16 where the GPU supports it. Photos, videos and the API
always run in float32: their heatmaps go through the honesty checks, and the float32 path is the one
tests/test_explain.py holds equal to pytorch-grad-cam.
`EMOTION_PRECISION=fp32` (or `bf16`) overrides "auto" for the webcam path.
"""
from __future__ import annotations

import os

import torch

ENV_VAR = "EMOTION_PRECISION"
PRECISIONS = ("auto", "bf16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# CPU features (torch.cpu.get_capabilities' names) that mean bf16 arithmetic in hardware
NATIVE_BF16 = ("avx512_bf16", "amx_bf16")
FAST_BF16 = ("amx_bf16",)  # ... and those where bf16 was faster than float32 for the webcam path


def fast_bf16(device: str | torch.device = "cpu") -> bool:
    """True where "auto" takes bf16: a CPU with AMX-BF16, or a CUDA GPU that supports bf16."""
    if torch.device(device).type == "cuda":
        return native_bf16(device)
    caps = torch.cpu.get_capabilities()
    return any(bool(caps.get(name)) for name in FAST_BF16)


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """True where `device` computes bf16 natively: a CPU with AVX512_BF16 or AMX-BF16, or a CUDA GPU that
    supports bf16."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    caps = torch.cpu.get_capabilities()
    return any(bool(caps.get(name)) for name in NATIVE_BF16)


def resolve_precision(setting: str | None = None, device: str | torch.device = "cpu",
                      engine: str | None = None) -> str:
    """"bf16" or "fp32" for `setting`: "auto", "bf16" or "fp32", in any case; None reads $EMOTION_PRECISION,
    and "auto" when it is unset or empty.

    "auto" is bf16 only where `fast_bf16` and the model's float32 passes are not ONNX Runtime's (`engine`, the
    model's `EmotionModel.engine`: "onnx" or "torch"; None: not known, as "torch")."""
    value = str(setting if setting is not None else os.environ.get(ENV_VAR) or "auto").strip().lower()
    if value not in PRECISIONS:
        where = f"${ENV_VAR}" if setting is None else "precision"
        raise ValueError(f"Unknown {where} {value!r}; choose from {', '.join(PRECISIONS)}.")
    if value == "auto":
        return "bf16" if engine != "onnx" and fast_bf16(device) else "fp32"
    return value
