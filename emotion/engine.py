"""ONNX Runtime for the network's float32 passes that need no gradient.

Those are most of the work: every prediction, the mirror pass, the faithfulness check's deletion passes
and, written out as below, Grad-CAM's forward and backward pass themselves. At batch 1 and 64 px,
PyTorch runs most of a ResNet50's convolutions on its native fallback path (oneDNN takes only larger
inputs), and ONNX Runtime ran the whole forward pass twice as fast or more on a 2-core CPU (`python -m
tools.benchmark` prints both).

Grad-CAM needs one gradient, d(class logit)/d(activations of the layer read), and ONNX has no autograd:
`_GradCamGraph` writes the backward pass of the stages above that layer as forward operations (each
convolution's transpose with its batch norm's scale, each ReLU's mask, the average pool's even spread), so
the whole of Grad-CAM's forward and backward pass runs in one ONNX Runtime call, held to pytorch-grad-cam's
maps by tests/test_explain.py and tests/test_engine.py.

Each graph (the forward pass; Grad-CAM at layer2, layer3, layer4) is exported with `torch.onnx.export` (the
torch.export-based exporter) on first use and cached on disk, keyed by a hash of the weights, the layout, the
input side and the library versions (`EMOTION_ONNX_CACHE`, default ~/.cache/emotion/onnx).

`EMOTION_ENGINE` chooses: "auto" (the default) takes ONNX Runtime where onnxruntime and the exporter are
installed and the export works, else PyTorch, with a warning; "torch" always runs PyTorch; "onnx" fails
loudly when it cannot be had, on every call that needs the graph that failed, not only the first. A graph
that fails is left to PyTorch alone: one Grad-CAM graph that could not be exported (a full disk, say) does not
move the forward pass or the other layers' graphs off ONNX Runtime. The bf16 webcam path
(emotion/precision.py) always runs PyTorch.

ONNX Runtime's sessions run concurrently from several threads, so its passes take no lock
(`EmotionModel.guard`): only PyTorch's, whose hooks and gradients live on the one shared network, hold the
model's lock.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

ENV_VAR = "EMOTION_ENGINE"
CACHE_ENV_VAR = "EMOTION_ONNX_CACHE"
ENGINES = ("auto", "onnx", "torch")
STAGES = ("layer1", "layer2", "layer3", "layer4")  # a timm ResNet's stages, input to output
GRAPHS = 1  # the exported graphs' version: a change to them must not meet an older cached export


class EngineError(RuntimeError):
    """ONNX Runtime was asked for and cannot run this network."""


def resolve_engine(setting: str | None = None) -> str:
    """"auto", "onnx" or "torch" for `setting` in any case; None reads $EMOTION_ENGINE ("auto" if unset)."""
    value = str(setting if setting is not None else os.environ.get(ENV_VAR) or "auto").strip().lower()
    if value not in ENGINES:
        where = f"${ENV_VAR}" if setting is None else "engine"
        raise ValueError(f"Unknown {where} {value!r}; choose from {', '.join(ENGINES)}.")
    return value


def features(net: torch.nn.Module, x: torch.Tensor, stage: str) -> torch.Tensor:
    """A timm ResNet's activations at the output of `stage` ("layer1" to "layer4") for a batch: its stem,
    then each stage up to that one."""
    a = net.maxpool(net.act1(net.bn1(net.conv1(x))))
    for name in STAGES[: STAGES.index(stage) + 1]:
        a = getattr(net, name)(a)
    return a


def split_forward(net: torch.nn.Module, x: torch.Tensor, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The activations at `stage`'s output (a leaf that requires grad) and the logits differentiable with
    respect to them only: the network runs without autograd up to that stage, with it above."""
    with torch.no_grad():  # below the layer read nothing needs a gradient
        a = features(net, x, stage)
    a = a.detach().requires_grad_(True)
    with torch.enable_grad():
        h = a
        for name in STAGES[STAGES.index(stage) + 1:]:
            h = getattr(net, name)(h)
        logits = net.forward_head(h)
    return a, logits


def torch_gradcam(net: torch.nn.Module, x: torch.Tensor, stage: str, classes: list[int | None],
                  mirror_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's Grad-CAM ingredients, as `OnnxNet.gradcam` gives ONNX Runtime's: (float32 logits, the
    activations A at `stage`, d(class logit)/dA) for a batch in `net`'s own number format. A class of None is
    the predicted one (argmax of the logits plus `mirror_logits`). One pass: autograd only above the stage,
    and only with respect to its activations (no gradient reaches the weights or the input)."""
    a, logits = split_forward(net, x, stage)
    with torch.enable_grad():
        mirror = None if mirror_logits is None else mirror_logits.float()
        picked = (logits.detach().float() + (0 if mirror is None else mirror)).argmax(1)
        target = torch.tensor([int(p) if c is None else int(c) for c, p in zip(classes, picked)])
        (grads,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), a)
    return logits.detach().float(), a.detach(), grads


class _BlockBackward(torch.nn.Module):
    """One timm Bottleneck (eval mode, ReLU, no SE/anti-aliasing/drop-block) forward, keeping what its
    backward pass needs, and that backward pass written as forward operations (ONNX has no autograd)."""

    def __init__(self, block: torch.nn.Module):
        super().__init__()
        self.block = block
        convs = [(block.conv1, block.bn1), (block.conv2, block.bn2), (block.conv3, block.bn3)]
        if block.downsample is not None:
            convs.append((block.downsample[0], block.downsample[1]))
        for i, (conv, bn) in enumerate(convs):  # d bn(conv(x)) / dx: conv's weights times bn's scale
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            self.register_buffer(f"w{i}", (conv.weight * scale.view(-1, 1, 1, 1)).detach().clone())

    @staticmethod
    def _back(g, w, conv, size):
        """The gradient with respect to `conv`'s input (of spatial `size`) for gradient `g` at its output."""
        s, p, d = conv.stride[0], conv.padding[0], conv.dilation[0]
        extra = size - ((g.shape[-1] - 1) * s - 2 * p + d * (w.shape[-1] - 1) + 1)
        return torch.nn.functional.conv_transpose2d(g, w, stride=s, padding=p, output_padding=extra, dilation=d)

    def forward(self, x):
        b = self.block
        h1 = b.act1(b.bn1(b.conv1(x)))
        h2 = b.act2(b.bn2(b.conv2(h1)))
        main = b.bn3(b.conv3(h2))
        short = x if b.downsample is None else b.downsample(x)
        out = torch.relu(main + short)
        return out, (x, h1, h2, out)

    def backward(self, g, saved):
        b = self.block
        x, h1, h2, out = saved
        g = g * (out > 0)
        gm = self._back(g, self.w2, b.conv3, h2.shape[-1]) * (h2 > 0)
        gm = self._back(gm, self.w1, b.conv2, h1.shape[-1]) * (h1 > 0)
        gm = self._back(gm, self.w0, b.conv1, x.shape[-1])
        gs = g if b.downsample is None else self._back(g, self.w3, b.downsample[0], x.shape[-1])
        return gm + gs


class _GradCamGraph(torch.nn.Module):
    """Grad-CAM's ingredients for a timm ResNet at one stage, as forward operations only (exportable to
    ONNX): from a batch `x`, the classes asked (-1: the predicted one) and the logits to add before picking
    the predicted class (the mirrored faces' in mirror averaging, else zeros), the logits, the stage's
    activations A and d(class logit)/dA."""

    def __init__(self, net: torch.nn.Module, stage: str):
        super().__init__()
        self.net = net
        self.stage = STAGES.index(stage)
        self.above = torch.nn.ModuleList(_BlockBackward(blk) for name in STAGES[self.stage + 1:]
                                         for blk in getattr(net, name))

    def forward(self, x, classes, mirror):
        n = self.net
        a = features(n, x, STAGES[self.stage])
        h, saved = a, []
        for blk in self.above:
            h, s = blk(h)
            saved.append(s)
        logits = n.forward_head(h)
        target = torch.where(classes >= 0, classes, (logits + mirror).argmax(1))
        onehot = (torch.arange(logits.shape[1])[None, :] == target[:, None]).to(logits.dtype)
        g = (onehot @ n.get_classifier().weight)[:, :, None, None] / (h.shape[-1] * h.shape[-2])
        g = g.expand(-1, -1, h.shape[-2], h.shape[-1])  # the average pool spreads the fc's weight evenly
        for blk, s in zip(reversed(self.above), reversed(saved)):
            g = blk.backward(g, s)
        return logits, a, g


def supports_gradcam(net: torch.nn.Module) -> bool:
    """Whether `_GradCamGraph` can write this ResNet's backward pass: global average pooling (its gradient is
    the classifier's weight spread evenly; a max or avg-max pool sends it elsewhere) and Bottleneck blocks
    with ReLUs and no squeeze-excitation, anti-aliasing, drop-block or drop-path (timm's resnet50 and its
    kin). Any other network's Grad-CAM runs in PyTorch."""
    pool = getattr(net, "global_pool", None)
    if getattr(pool, "pool_type", None) != "avg" or not isinstance(getattr(pool, "pool", None),
                                                                     torch.nn.AdaptiveAvgPool2d):
        return False
    for name in STAGES[1:]:
        for blk in getattr(net, name):
            if not all(hasattr(blk, k) for k in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")):
                return False
            if getattr(blk, "se", None) is not None:
                return False
            for k in ("aa", "drop_block", "drop_path"):
                extra = getattr(blk, k, None)
                if extra is not None and not isinstance(extra, torch.nn.Identity):
                    return False
            if not all(isinstance(getattr(blk, k, None), torch.nn.ReLU) for k in ("act1", "act2", "act3")):
                return False
    return True


def _fingerprint(net: torch.nn.Module) -> tuple[tuple[int, int], ...]:
    """A check, cheap enough for every pass, that the network is the one exported: the storage and version
    counter of its first and last weights (a change in place bumps the counter; a tensor put in its place has
    another storage). Summing the weights instead cost 0.2 ms a call, several calls a webcam frame."""
    fc = net.get_classifier()
    weights = [net.conv1.weight, fc.weight] + ([fc.bias] if fc.bias is not None else [])
    return tuple((t.data_ptr(), t._version) for t in weights)


def _detached_copy(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of `net` for the exporter, without the hooks an explanation may have on it at this moment (they
    belong to that request) and without gradients."""
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    empty = {id(getattr(m, h)): type(getattr(m, h))() for m in net.modules() for h in hooks}  # not copied
    clone = copy.deepcopy(net, empty)
    for p in clone.parameters():
        p.grad = None
        p.requires_grad_(False)
    return clone.eval()


def _weights_hash(net: torch.nn.Module, side: int) -> str:
    """The cache key of a network's exports: its weights, its layout (the modules' repr, which holds every
    convolution's stride, padding and dilation: the same weights at another output stride are another
    graph), the input side and the library versions."""
    import onnxruntime

    h = hashlib.sha256(f"{GRAPHS}|{torch.__version__}|{onnxruntime.__version__}|{side}".encode())
    h.update(repr(net).encode())
    for name, t in sorted({**dict(net.named_parameters()), **dict(net.named_buffers())}.items()):
        h.update(name.encode())
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "emotion" / "onnx").expanduser()


class OnnxNet:
    """The network's float32 passes without autograd in ONNX Runtime, one InferenceSession per graph, each
    exported (or read from the cache) on first use: "logits" (the forward pass) and "gradcam-layerN"
    (`_GradCamGraph`). `usable(net)` says whether it still runs `net` as it is now: a network changed after
    the export (its weights' fingerprint) is left to PyTorch.
    """

    def __init__(self, net: torch.nn.Module, side: int, required: bool = False,
                 guard: threading.RLock | None = None):
        self.net, self.side, self.required = net, side, required
        # The exporter hooks every module's forward pass in the process while it runs, so PyTorch passes made
        # meanwhile fail: a graph is exported (or read) holding `guard`, the lock the model's PyTorch passes
        # hold (EmotionModel.lock), always taken before this object's own.
        self._guard = guard or threading.RLock()
        self.gradcam_ok = supports_gradcam(net)
        self._sessions: dict[str, object] = {}
        self._failed: dict[str, str] = {}  # graph -> why ONNX Runtime cannot run it (PyTorch does)
        self._print = _fingerprint(net)
        self._hash: str | None = None
        self._lock = threading.Lock()

    def usable(self, net: torch.nn.Module) -> bool:
        return net is self.net and self.available()

    def available(self) -> bool:
        """ONNX Runtime runs this network (the forward pass's graph is ready: exported or read now)."""
        return self._session("logits") is not None and _fingerprint(self.net) == self._print

    def failures(self) -> dict[str, str]:
        """The graphs ONNX Runtime could not be given, and why (PyTorch runs those passes)."""
        return dict(self._failed)

    def warm(self, layers=()) -> None:
        """Make the graphs the app will need now rather than on a request: the forward pass and Grad-CAM's
        at each of `layers`."""
        if self.available() and self.gradcam_ok:
            for layer in layers:
                self._session(f"gradcam-{layer.split()[0]}")

    def _session(self, part: str):
        """The graph's session; None where it cannot be had (EngineError instead when ONNX Runtime is required)."""
        if part not in self._sessions and part not in self._failed:
            with self._guard, self._lock:
                if part not in self._sessions and part not in self._failed:
                    self._open(part)
        if part in self._failed and self.required:
            raise EngineError(f"ONNX Runtime cannot run this model ({self._failed[part]}).")
        return self._sessions.get(part)

    def _open(self, part: str) -> None:
        """Export `part` (or read its cached export) and open its session, or record why not."""
        if part != "logits" and "logits" in self._failed:  # no runtime, or no exporter: no graph at all
            self._failed[part] = self._failed["logits"]
            return
        try:
            import onnxruntime as ort

            self._hash = self._hash or _weights_hash(self.net, self.side)
            path = cache_dir() / f"{part}-{self._hash}.onnx"
            if not path.is_file():
                self._export(part, path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            # no busy-waiting between runs: the same cores run the detector and the rest of the app
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._sessions[part] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - a missing package, an exporter or runtime refusal: PyTorch
            self._failed[part] = f"{type(e).__name__}: {e}"
            if not self.required:
                what = "the network runs" if part == "logits" else f"{part} runs"
                log.warning("ONNX Runtime unavailable for %s (%s); %s in PyTorch.", part, self._failed[part], what)

    def _export(self, part: str, path: Path) -> None:
        """Export `part` of a copy of the network: the exporter swaps a traced module's weights for stand-ins
        while it runs (seconds), and the app's own network must go on answering requests meanwhile."""
        path.parent.mkdir(parents=True, exist_ok=True)
        n = torch.export.Dim("batch")
        x = torch.zeros(2, 3, self.side, self.side)
        net = _detached_copy(self.net)
        if part == "logits":
            module, args, inputs, outputs = net, (x,), ["x"], ["logits"]
        else:
            module = _GradCamGraph(net, part.split("-")[1])
            args = (x, torch.full((2,), -1, dtype=torch.int64), torch.zeros(2, net.num_classes))
            inputs, outputs = ["x", "classes", "mirror"], ["logits", "activations", "gradients"]
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the exporter's notes on axis names and its progress lines
            program = torch.onnx.export(module.eval(), args, dynamo=True, verbose=False, input_names=inputs,
                                        output_names=outputs, dynamic_shapes={k: {0: n} for k in inputs})
        tmp = path.with_suffix(f".{os.getpid()}.part")
        tmp.write_bytes(program.model_proto.SerializeToString())
        os.replace(tmp, path)  # whole or not at all, also with several processes exporting at once
        log.info("Exported %s for ONNX Runtime to %s.", part, path)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The float32 logits of a prepared batch."""
        out = self._session("logits").run(["logits"], {"x": _feed(x)})[0]
        return torch.from_numpy(out)

    def gradcam(self, x: torch.Tensor, layer: str, classes: list[int | None],
                mirror_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(logits, activations A of `layer`, d(class logit)/dA) for a prepared batch; a class of None is the
        predicted one (argmax of the logits plus `mirror_logits`, mirror averaging's pick). None where this
        network's backward pass cannot be written out (`supports_gradcam`)."""
        session = self._session(f"gradcam-{layer.split()[0]}") if self.gradcam_ok else None
        if session is None:
            return None
        cls = np.array([-1 if c is None else int(c) for c in classes], np.int64)
        mirror = np.zeros((len(cls), self.net.num_classes), np.float32) if mirror_logits is None else \
            np.ascontiguousarray(mirror_logits.detach().float().numpy())
        out = session.run(None, {"x": _feed(x), "classes": cls, "mirror": mirror})
        return tuple(torch.from_numpy(v) for v in out)


def _feed(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().numpy())
