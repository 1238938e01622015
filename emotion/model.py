"""The emotion classifier: load it (timm Hub format, safetensors only) and turn face crops into predictions.

A model folder holds `config.json` (timm's `architecture`, `num_classes`, `label_names`, `pretrained_cfg`,
plus our own `preprocess` block) and `model.safetensors`. It is found, in order, from the `source` argument,
the `EMOTION_MODEL` environment variable, or the `weights/` folder shipped with the project. A source is a
folder path, `local-dir:PATH`, or `hf-hub:owner/name` (downloaded with huggingface_hub, safetensors only).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import timm
import torch

from emotion.decision import Decision
from emotion.engine import OnnxNet, resolve_engine, torch_gradcam
from emotion.framing import FER_FRAMING, centre_square, crop_box
from emotion.precision import DTYPES
from emotion.priority import LIVE_FIRST, LiveFirst

log = logging.getLogger(__name__)

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
ENV_VAR = "EMOTION_MODEL"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# the mean heatmaps the honesty check compares each map with (emotion/faithfulness.py): optional, made by
# `python -m train.face_prior` for the model beside it
FACE_PRIOR_FILE = "face_prior.npz"


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and what to do."""


# What the heatmaps (emotion/explain.py) read from the network: a timm ResNet's stem, stages and head.
RESNET_PARTS = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4", "forward_head")


@dataclass(frozen=True)
class Preprocess:
    """How a face crop becomes model input. Stored in config.json so training and the app agree."""

    size: int = 64  # square input side, from pretrained_cfg["input_size"]
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    grayscale: bool = True  # FER2013 is grey: colour photos are made grey the same way
    native_size: int | None = None  # resolution the training images had (48 for FER2013), see `to_input`
    face_margin: float = 0.25  # without eye_distance: grow the detector's box by this share on every side
    eye_distance: float | None = None  # frame faces so the eyes are this share of the side apart (framing.crop_box)
    eye_line: float = FER_FRAMING[1]  # ... with their midpoint this share of the side from the top
    tta_flip: bool = False  # average the prediction with the mirrored face

    @classmethod
    def from_config(cls, pretrained_cfg: dict, extra: dict | None = None) -> "Preprocess":
        """From timm's pretrained_cfg and our `preprocess` block. Without the block (a model made elsewhere)
        the input is what timm's pretrained_cfg describes: colour."""
        if extra is None:
            extra = {"grayscale": False}
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
        """The crop square for a face detection, framed as the training faces were. A whole picture taken
        as the face gives its centred square (a picture that is not square is cropped, never squashed)."""
        if det.whole_image:
            return centre_square(*det.box)
        return crop_box(det, self.face_margin, shape, self.eye_distance, self.eye_line)

    def describe(self) -> str:
        framing = (f"framed on the eyes ({self.eye_distance} of the side apart)" if self.eye_distance
                   else f"detector box + {self.face_margin:.0%} margin")
        return (f"{'grey' if self.grayscale else 'colour'} {self.size}x{self.size}, mean {self.mean}, "
                f"std {self.std}, faces {framing}{', mirrored-face averaging' if self.tta_flip else ''}")

    def to_input(self, crops: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 crops (any size) -> normalised float batch N x 3 x size x size (channels_last)."""
        return self.pixels_input([self.pixels(crop) for crop in crops])

    def pixels(self, crop: np.ndarray) -> np.ndarray:
        """An RGB uint8 crop (any size) as the model's pixels (`face_pixels`: grey or RGB, size x size)."""
        return face_pixels(crop, self.size, self.grayscale, self.native_size)

    def pixels_input(self, pixels: list[np.ndarray]) -> torch.Tensor:
        """The model's pixels (`pixels`) -> normalised float batch N x 3 x size x size (channels_last)."""
        out = np.empty((len(pixels), self.size, self.size, 3), np.float32)
        for i, img in enumerate(pixels):
            out[i] = img[..., None] if img.ndim == 2 else img
        x = torch.from_numpy(out).permute(0, 3, 1, 2)  # N,3,H,W view over NHWC memory: channels_last
        mean = torch.tensor(self.mean).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std).view(1, 3, 1, 1) * 255.0
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def face_pixels(rgb: np.ndarray, size: int, grayscale: bool = True, native_size: int | None = None) -> np.ndarray:
    """An RGB uint8 face crop as the model's pixels: grey (H x W) or RGB, `size` x `size`, uint8.

    Training (train/data.py) and the app both go through here, so they resize the same way. A crop larger
    than `native_size` is first brought down to it (area averaging, as when the data set was made), so a
    sharp webcam face looks like the low-resolution faces the model learned from. A crop that is not square
    is cut to its centred square first, never squashed.
    """
    h, w = rgb.shape[:2]
    if h != w:
        x0, y0, x1, y1 = centre_square(0, 0, w, h)
        rgb = rgb[y0:y1, x0:x1]
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
    requests never share hook state, and neither sees the other's activations. ONNX Runtime's passes
    (`onnx`) never touch `net` and its sessions run concurrently, so they hold no lock (`guard`): a photo's
    occlusion passes do not stall a webcam stream, and they wait between small batches while a live frame is
    analysed (`turns`, emotion/priority.py). `network("bf16")` is a bfloat16 copy of `net` for the
    webcam path (emotion/precision.py), made on first use.
    """

    net: torch.nn.Module
    labels: tuple[str, ...]
    prep: Preprocess
    source: str  # the folder the weights were read from
    config: dict = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    origin: dict = field(default_factory=dict)  # what was asked for and what answered: see `load_model`
    decision: Decision = field(default_factory=Decision)  # how logits become the probabilities shown
    _bf16: torch.nn.Module | None = field(default=None, init=False, repr=False, compare=False)  # network("bf16")
    # ONNX Runtime for the float32 passes without gradient (emotion/engine.py); None: PyTorch runs them
    onnx: OnnxNet | None = field(default=None, repr=False, compare=False)
    # live webcam frames first: other threads' passes wait between small batches (emotion/priority.py)
    turns: LiveFirst = field(default=LIVE_FIRST, repr=False, compare=False)

    def describe(self) -> dict:
        """The model that answers, for the API's JSON: source (hf-hub:owner/name or a folder), the Hub's
        revision (commit) when it came from there, and, when the shipped model stands in for a Hub model
        that could not be reached, which one and why."""
        d = {"source": self.origin.get("source", self.source), "revision": self.origin.get("revision"),
             "decision_rule": self.decision.rule}
        if self.decision.rule == "balanced":
            d["decision_tau"] = self.decision.tau  # the share of the log prior divided out
        if self.origin.get("fallback_reason"):
            d.update(standing_in_for=self.origin["requested"], fallback_reason=self.origin["fallback_reason"])
        return d

    def name(self) -> str:
        """One line naming the model, for status text."""
        return model_name(self.describe())

    def network(self, precision: str = "fp32") -> torch.nn.Module:
        """`net` for "fp32"; for "bf16", a bfloat16 copy of it (made on first use, from `net` as it is then,
        with no weight gradients: it only answers and is differentiated with respect to activations).
        Its input must be bfloat16 too (`x.to(dtype)` with this network's `dtype(...)`)."""
        if precision not in DTYPES:
            raise ValueError(f"Unknown precision {precision!r}; choose from {', '.join(DTYPES)}.")
        if precision == "fp32":
            return self.net
        with self.lock:
            if self._bf16 is None:
                copy = deepcopy(self.net).to(DTYPES["bf16"]).eval()
                self._bf16 = copy.requires_grad_(False)
            return self._bf16

    @property
    def engine(self) -> str:
        """What runs the float32 passes without gradient: "onnx" (ONNX Runtime) or "torch"."""
        return "onnx" if self.onnx is not None and self.onnx.usable(self.net) else "torch"

    def on_onnx(self, precision: str = "fp32") -> bool:
        """Whether ONNX Runtime runs a pass in `precision`: float32, with engine "onnx"."""
        return precision == "fp32" and self.engine == "onnx"

    def guard(self, precision: str = "fp32"):
        """What a forward pass in `precision` must hold: nothing where ONNX Runtime runs it (`on_onnx`), else
        the model's lock (PyTorch's passes share `net` and its hooks)."""
        return contextlib.nullcontext() if self.on_onnx(precision) else self.lock

    def gradcam_parts(self, x: torch.Tensor, stage: str, classes: list[int | None],
                      mirror_logits: torch.Tensor | None = None,
                      precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Grad-CAM's ingredients for a prepared float32 batch: (float32 logits, the activations A at `stage`'s
        output, d(class logit)/dA); a class of None is the predicted one (with `mirror_logits`, of the mirror
        average). The one place that decides where they are computed: in one ONNX Runtime call, holding no
        lock, where `engine` is "onnx", `precision` float32 and the network's backward pass can be written out
        (`OnnxNet.gradcam`); else by PyTorch (`engine.torch_gradcam`) on `network(precision)`, under the lock."""
        self.turns.wait_turn()
        if self.on_onnx(precision):
            parts = self.onnx.gradcam(x, stage, classes, mirror_logits)
            if parts is not None:
                return parts
        with self.lock:
            net = self.network(precision)
            return torch_gradcam(net, x.to(dtype(net)), stage, classes, mirror_logits)

    @torch.no_grad()  # (not inference mode: the result may meet autograd tensors, as in explain's mirror_logits)
    def logits(self, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """The network's float32 logits for a prepared batch (`prep.to_input`), computed in `precision`
        ("fp32" or "bf16"; float32 by ONNX Runtime, with no lock, where `engine` is "onnx"; else by PyTorch
        under the model's lock)."""
        if self.on_onnx(precision):
            if not len(x):
                return self.onnx.logits(x)
            return torch.cat([self.onnx.logits(part) for part in self.turns.batches(x)])
        self.turns.wait_turn()
        with self.lock:
            net = self.network(precision)
            return net(x.to(dtype(net))).float()

    @torch.inference_mode()
    def predict(self, crops: list[np.ndarray], flip: bool | None = None, precision: str = "fp32") -> np.ndarray:
        """Class probabilities, one row per RGB crop (N x num_classes); `flip` averages them with the
        mirrored crops' (None: as the config's `tta_flip` says). `precision`: as for `logits`."""
        if not crops:
            return np.zeros((0, len(self.labels)), np.float32)
        return self.probabilities(self.prep.to_input(crops), flip, precision)

    @torch.inference_mode()
    def probabilities(self, x: torch.Tensor, flip: bool | None = None, precision: str = "fp32") -> np.ndarray:
        """`predict` for a prepared batch (`prep.to_input` or `prep.pixels_input`)."""
        flip = self.prep.tta_flip if flip is None else flip
        if self.on_onnx(precision):  # no lock: ONNX Runtime's sessions run concurrently
            logits = self.logits(torch.cat([x, mirrored(x)]) if flip else x)
            logits = mirror_average(*logits.split(len(x))) if flip else logits
            return logits.softmax(1).numpy()
        self.turns.wait_turn()
        with self.lock:
            net = self.network(precision)
            x = x.to(dtype(net))
            logits = net(x)
            if flip:
                logits = mirror_average(logits, net(mirrored(x)))
        return logits.float().softmax(1).numpy()


def mirrored(x: torch.Tensor) -> torch.Tensor:
    """A batch of faces (N x C x H x W) mirrored left to right."""
    return torch.flip(x, dims=[3])


def mirror_average(logits: torch.Tensor, mirror_logits: torch.Tensor | None) -> torch.Tensor:
    """Mirror averaging: the mean of a batch's logits and its mirrored faces' (`mirrored`); the logits alone
    when `mirror_logits` is None. The app, the evaluation and training's validation all decide by it."""
    return logits if mirror_logits is None else (logits + mirror_logits) / 2


def dtype(net: torch.nn.Module) -> torch.dtype:
    """The number format of a network's weights (its input must have it too)."""
    return next(net.parameters()).dtype


def model_name(d: dict) -> str:
    """EmotionModel.describe()'s dict as one line of text."""
    text = d.get("source", "?") + (f" (revision {d['revision'][:12]})" if d.get("revision") else "")
    if d.get("fallback_reason"):
        text += f", standing in for {d['standing_in_for']}: {d['fallback_reason']}"
    if d.get("decision_rule") == "balanced":
        tau = d.get("decision_tau", 1)
        text += ("; probabilities read balanced (the training class balance divided out"
                 + (f", tau {tau:g})" if tau != 1 else ")"))
    elif d.get("decision_rule") == "prior":
        text += "; probabilities read with the training class balance"
    return text


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


class HubUnreachable(ModelLoadError):
    """The Hub could not be reached (no network, offline mode, a timeout, or the Hub is down)."""


def _unreachable(e: BaseException) -> bool:
    """True when an error from huggingface_hub (or its cause) means the Hub was not reached, as opposed to
    the Hub answering "no" (repo or revision not found, a refused token, ...)."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    while e is not None:
        if isinstance(e, (OfflineModeIsEnabled, httpx.ConnectError, httpx.TimeoutException, ConnectionError)):
            return True
        if isinstance(e, HfHubHTTPError) and e.response is not None:
            return e.response.status_code >= 500
        e = e.__cause__ or e.__context__
    return False


def _reason(e: BaseException) -> str:
    """What happened, in a line: the Hub's answer (status and message) when there was one."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    chain, cause = [], e
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for c in chain:
        if isinstance(c, HfHubHTTPError) and c.response is not None:
            why = (c.response.headers.get("X-Error-Message") or type(c).__name__).rstrip(".")
            return f"the Hub answered {c.response.status_code}: {why}"
        if isinstance(c, OfflineModeIsEnabled):
            return "HF_HUB_OFFLINE is set and no copy is cached"
    lines = [ln for ln in str(chain[-1]).splitlines() if ln.strip()]
    return f"{type(chain[-1]).__name__}: {lines[0] if lines else ''}"


def _download_from_hub(repo: str) -> tuple[Path, str]:
    """Fetch config.json, model.safetensors (never a pickle) and, where the repo has it, face_prior.npz of
    `owner/name[@revision]` into the HF cache.

    Returns the folder and the commit it holds. Raises HubUnreachable when the Hub cannot be reached (and
    the files are not cached), ModelLoadError with the Hub's reason when it answered but refused.
    """
    from huggingface_hub import snapshot_download

    repo_id, _, revision = repo.partition("@")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None,
                                        allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, FACE_PRIOR_FILE]))
    except Exception as e:  # huggingface_hub raises many kinds: sort them into "not reached" and "refused"
        if _unreachable(e):
            raise HubUnreachable(f"The Hub could not be reached for hf-hub:{repo} ({_reason(e)}).") from e
        raise ModelLoadError(
            f"Could not load hf-hub:{repo}: {_reason(e)}. Check the name (owner/name, and @revision if given) "
            "and your access token (`hf auth login` or HF_TOKEN)."
        ) from e
    return folder, folder.name  # the cache's snapshot folder is named after the commit


def load_model(source: str | os.PathLike | None = None, fallback: bool = True,
               rule: str | None = None, engine: str | None = None) -> EmotionModel:
    """Load the classifier from `source`, $EMOTION_MODEL or `weights/`.

    `rule` overrides the decision rule of its config.json (emotion/decision.py): "prior" gives the network's
    own scores (training from a model, averaging models), "balanced" divides the training prior out.
    `engine` ("auto", "onnx", "torch"; None reads $EMOTION_ENGINE) says what runs the float32 passes without
    gradient (emotion/engine.py); "onnx" raises EngineError here when ONNX Runtime cannot run the model.

    When the Hub cannot be reached and `fallback` is true, the shipped `weights/` folder is used instead
    (with a warning) so the app still starts offline. When the Hub answers but refuses (a mistyped name, a
    refused token), loading fails with the Hub's reason: another model never silently stands in.
    The loaded model's `origin` names what answered (`describe()`, `name()`).
    """
    source = str(source or os.environ.get(ENV_VAR) or DEFAULT_WEIGHTS)
    origin = {"requested": source, "source": source, "revision": None}
    if source.startswith("hf-hub:"):
        try:
            folder, origin["revision"] = _download_from_hub(source[len("hf-hub:"):])
            origin["source"] = source.partition("@")[0]
        except HubUnreachable as e:
            if not fallback or not (DEFAULT_WEIGHTS / WEIGHTS_FILE).is_file():
                raise
            log.warning("%s Falling back to the shipped model in %s.", e, DEFAULT_WEIGHTS)
            folder = DEFAULT_WEIGHTS
            origin.update(source=str(DEFAULT_WEIGHTS), fallback_reason=str(e))
    else:
        folder = Path(source.removeprefix("local-dir:")).expanduser()
        origin["source"] = str(folder)
    _check_folder(folder)
    try:
        # timm prefers model.safetensors in the folder; _check_folder made sure it is there.
        net = timm.create_model(f"local-dir:{folder}", pretrained=True)
    except Exception as e:  # timm/safetensors raise many kinds of errors for a broken file
        raise ModelLoadError(f"Could not load the model in {folder}: {type(e).__name__}: {e}") from e
    config = json.loads((folder / CONFIG_FILE).read_text())
    missing = [m for m in RESNET_PARTS if not hasattr(net, m)]
    if missing:
        raise ModelLoadError(
            f"{folder}: architecture {config.get('architecture')!r} is not a ResNet (it has no "
            f"{', '.join(missing)}). The heatmaps read a ResNet's stages (layer2 to layer4); use a timm "
            "ResNet (e.g. resnet50) model.")
    labels = tuple(net.pretrained_cfg.get("label_names") or CLASSES)
    if len(labels) != net.num_classes:
        raise ModelLoadError(f"{folder}: {len(labels)} label_names for a model with {net.num_classes} outputs.")
    prep = Preprocess.from_config(net.pretrained_cfg, config.get("preprocess"))
    told = "config.json's preprocess block" if "preprocess" in config else \
        "timm's pretrained_cfg (config.json has no preprocess block: a model made elsewhere)"
    log.info("Model %s: input %s, from %s.", origin["source"], prep.describe(), told)
    try:
        decision = Decision.from_config(config)
        if rule is not None:
            decision = Decision(rule=rule, tau=decision.tau, prior=decision.prior)
        offset = torch.from_numpy(decision.logit_offset(labels))
    except ValueError as e:
        raise ModelLoadError(f"{folder}: config.json's decision block: {e}") from e
    if offset.any():  # the rule's shift of the logits, folded into the classifier's bias (emotion/decision.py)
        fc = net.get_classifier()
        with torch.no_grad():
            fc.bias.add_(offset.to(fc.bias.dtype))
    net = net.eval().to(memory_format=torch.channels_last)
    engine = resolve_engine(engine)
    lock = threading.RLock()  # the model's (EmotionModel.lock), also held while a graph is exported
    onnx = None if engine == "torch" else OnnxNet(net, prep.size, required=engine == "onnx", guard=lock)
    if engine == "onnx":
        onnx.available()  # export (or read the cached export) now, and fail here if it cannot be had
    return EmotionModel(net=net, labels=labels, prep=prep, source=str(folder), config=config, origin=origin,
                        decision=decision, onnx=onnx, lock=lock)
