"""The emotion classifier: load it (timm Hub format, safetensors only) and turn face crops into predictions.

A model folder holds `config.json` (timm's `architecture`, `num_classes`, `label_names`, `pretrained_cfg`,
plus our own `preprocess` block) and `model.safetensors`. It is found, in order, from the `source` argument,
the `EMOTION_MODEL` environment variable, or the `weights/` folder shipped with the project. A source is a
folder path, `local-dir:PATH`, or `hf-hub:owner/name` (downloaded with huggingface_hub, safetensors only).
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import timm
import torch

log = logging.getLogger(__name__)

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
ENV_VAR = "EMOTION_MODEL"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Preprocess:
    """How a face crop becomes model input. Stored in config.json so training and the app agree."""

    size: int = 64  # square input side, from pretrained_cfg["input_size"]
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    grayscale: bool = True  # FER2013 is grey: colour photos are made grey the same way
    native_size: int | None = None  # resolution the training images had (48 for FER2013), see `to_input`
    face_margin: float = 0.25  # without eye_distance: grow the detector's box by this share on every side
    eye_distance: float | None = None  # frame faces so the eyes are this share of the side apart (faces.crop_box)
    eye_line: float = 0.366  # ... with their midpoint this share of the side from the top
    tta_flip: bool = False  # average the prediction with the mirrored face

    @classmethod
    def from_config(cls, pretrained_cfg: dict, extra: dict | None = None) -> "Preprocess":
        extra = extra or {}
        known = {k: extra[k] for k in ("grayscale", "native_size", "face_margin", "eye_distance", "eye_line",
                                               "tta_flip") if k in extra}
        return cls(
            size=int(pretrained_cfg["input_size"][-1]),
            mean=tuple(float(v) for v in pretrained_cfg["mean"]),
            std=tuple(float(v) for v in pretrained_cfg["std"]),
            **known,
        )

    def to_config(self) -> dict:
        return {
            "grayscale": self.grayscale,
            "native_size": self.native_size,
            "face_margin": self.face_margin,
            "eye_distance": self.eye_distance,
            "eye_line": self.eye_line,
            "tta_flip": self.tta_flip,
        }

    def square(self, det, shape) -> tuple[int, int, int, int]:
        """The crop square for a face detection, framed as the training faces were."""
        from emotion.faces import crop_box

        return crop_box(det, self.face_margin, shape, self.eye_distance, self.eye_line)

    def to_input(self, crops: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 crops (any size) -> normalised float batch N x 3 x size x size (channels_last)."""
        out = np.empty((len(crops), self.size, self.size, 3), np.float32)
        for i, crop in enumerate(crops):
            img = face_pixels(crop, self.size, self.grayscale, self.native_size)
            out[i] = img[..., None] if img.ndim == 2 else img
        x = torch.from_numpy(out).permute(0, 3, 1, 2)  # N,3,H,W view over NHWC memory: channels_last
        mean = torch.tensor(self.mean).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std).view(1, 3, 1, 1) * 255.0
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def face_pixels(rgb: np.ndarray, size: int, grayscale: bool = True, native_size: int | None = None) -> np.ndarray:
    """An RGB uint8 face crop as the model's pixels: grey (H x W) or RGB, `size` x `size`, uint8.

    Training (train/data.py) and the app both go through here, so they resize the same way. A crop larger
    than `native_size` is first brought down to it (area averaging, as when the data set was made), so a
    sharp webcam face looks like the low-resolution faces the model learned from.
    """
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if grayscale else rgb
    if native_size and min(img.shape[:2]) > native_size:
        img = cv2.resize(img, (native_size, native_size), interpolation=cv2.INTER_AREA)
    if img.shape[:2] != (size, size):
        interp = cv2.INTER_CUBIC if img.shape[0] < size else cv2.INTER_AREA
        img = cv2.resize(img, (size, size), interpolation=interp)
    return img


@dataclass
class EmotionModel:
    """A loaded classifier with its labels and preprocessing. `net` is in eval mode on the CPU.

    Explanations hook into `net` and leave gradients on it, so every use of `net` holds `lock`: two
    requests never share hook state, and neither sees the other's activations.
    """

    net: torch.nn.Module
    labels: tuple[str, ...]
    prep: Preprocess
    source: str
    config: dict = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @torch.inference_mode()
    def predict(self, crops: list[np.ndarray]) -> np.ndarray:
        """Class probabilities, one row per RGB crop (N x num_classes)."""
        if not crops:
            return np.zeros((0, len(self.labels)), np.float32)
        x = self.prep.to_input(crops)
        with self.lock:
            logits = self.net(x)
            if self.prep.tta_flip:
                logits = (logits + self.net(torch.flip(x, dims=[3]))) / 2
        return logits.softmax(1).float().numpy()


def create_net(num_classes: int = len(CLASSES), pretrained: bool = False, **kwargs) -> torch.nn.Module:
    """A fresh timm ResNet50 for training (ImageNet weights with `pretrained=True`, which needs internet)."""
    return timm.create_model("resnet50", pretrained=pretrained, num_classes=num_classes, **kwargs)


def _check_folder(path: Path) -> None:
    """Fail with a plain sentence when a model folder cannot be what we expect."""
    if not path.is_dir():
        raise ModelLoadError(f"Model folder not found: {path}")
    cfg_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    missing = [p.name for p in (cfg_file, weights_file) if not p.is_file()]
    if missing:
        raise ModelLoadError(
            f"Model folder {path} is missing {', '.join(missing)}. A model folder holds config.json and "
            "model.safetensors (timm Hub format); train one with `python -m train` or pass --model hf-hub:owner/name."
        )
    try:
        cfg = json.loads(cfg_file.read_text())
        cfg["architecture"], cfg["pretrained_cfg"]["input_size"]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{cfg_file} is not a valid timm model config ({type(e).__name__}: {e}).") from e
    if weights_file.stat().st_size < 8:
        raise ModelLoadError(f"{weights_file} is empty or truncated.")


def _download_from_hub(repo: str) -> Path:
    """Fetch config.json and model.safetensors (never a pickle) of `owner/name[@revision]` into the HF cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, _, revision = repo.partition("@")
    try:
        folder = snapshot_download(repo_id, revision=revision or None, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE])
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        raise ModelLoadError(
            f"Could not download hf-hub:{repo} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "Check the name and the network, or use a local folder."
        ) from e
    return Path(folder)


def load_model(source: str | os.PathLike | None = None, fallback: bool = True) -> EmotionModel:
    """Load the classifier from `source`, $EMOTION_MODEL or `weights/`.

    When a Hub model cannot be fetched and `fallback` is true, the shipped `weights/` folder is used
    instead (with a warning) so the app still starts offline.
    """
    source = str(source or os.environ.get(ENV_VAR) or DEFAULT_WEIGHTS)
    if source.startswith("hf-hub:"):
        try:
            folder = _download_from_hub(source[len("hf-hub:"):])
        except ModelLoadError as e:
            if not fallback or not (DEFAULT_WEIGHTS / WEIGHTS_FILE).is_file():
                raise
            log.warning("%s Falling back to the shipped model in %s.", e, DEFAULT_WEIGHTS)
            folder = DEFAULT_WEIGHTS
    else:
        folder = Path(source.removeprefix("local-dir:")).expanduser()
    _check_folder(folder)
    try:
        # timm prefers model.safetensors in the folder; _check_folder made sure it is there.
        net = timm.create_model(f"local-dir:{folder}", pretrained=True)
    except Exception as e:  # timm/safetensors raise many kinds of errors for a broken file
        raise ModelLoadError(f"Could not load the model in {folder}: {type(e).__name__}: {e}") from e
    config = json.loads((folder / CONFIG_FILE).read_text())
    labels = tuple(net.pretrained_cfg.get("label_names") or CLASSES)
    if len(labels) != net.num_classes:
        raise ModelLoadError(f"{folder}: {len(labels)} label_names for a model with {net.num_classes} outputs.")
    prep = Preprocess.from_config(net.pretrained_cfg, config.get("preprocess"))
    net = net.eval().to(memory_format=torch.channels_last)
    return EmotionModel(net=net, labels=labels, prep=prep, source=str(folder), config=config)
