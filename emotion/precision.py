"""Which number format the webcam path computes in: bfloat16 where the hardware does it natively, else float32.

bf16 halves the bytes each weight and activation takes and, on CPUs with native bf16 instructions
(x86's AVX512_BF16 or AMX-BF16; oneDNN uses them for convolutions), speeds the network up; elsewhere it
would be emulated and slower, so "auto" keeps float32 there. On CUDA, "auto" means bf16 where the GPU
supports it. Photos, videos and the API always run in float32: their heatmaps go through the honesty
checks, and the float32 path is the one tests/test_explain.py holds equal to pytorch-grad-cam.
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


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """True where `device` computes bf16 natively: a CPU with AVX512_BF16 or AMX-BF16, or a CUDA GPU that
    supports bf16."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    caps = torch.cpu.get_capabilities()
    return any(bool(caps.get(name)) for name in NATIVE_BF16)


def resolve_precision(setting: str | None = None, device: str | torch.device = "cpu") -> str:
    """"bf16" or "fp32" for `setting`: "auto" (bf16 only where `native_bf16`), "bf16" or "fp32", in any case;
    None reads $EMOTION_PRECISION, and "auto" when it is unset or empty."""
    value = str(setting if setting is not None else os.environ.get(ENV_VAR) or "auto").strip().lower()
    if value not in PRECISIONS:
        where = f"${ENV_VAR}" if setting is None else "precision"
        raise ValueError(f"Unknown {where} {value!r}; choose from {', '.join(PRECISIONS)}.")
    if value == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return value
