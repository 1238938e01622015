"""Knowledge distillation: a trained model's answers on each augmented batch as a second training target.

    python -m train ... --size 128 --teacher weights --kd-alpha 0.7 --kd-temp 2
    python -m train ... --size 128 --teacher weights runs/other/best     # two teachers answering as one

The teacher is any model folder the app loads (its own side, normalisation, colour mode and mirror
averaging), loaded by train.py as `--init` loads a start model: its classifier rows matched to our classes
by name. It sees exactly the faces the student sees: the augmented (and mixed) batch is brought back to
pixels, resized to the teacher's side and normalised as the teacher was trained.
The loss is `(1 - alpha) * targets' cross-entropy + alpha * T^2 * KL(teacher || student)`
with both distributions softened by the temperature T (Hinton et al., 2015): T^2 keeps the gradient's scale
as T changes. Several teachers answer as one (`ensemble_logits`): the mean of their logits, whose softmax is
the normalised geometric mean of their probabilities.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from emotion.model import EmotionModel, mirror_average, mirrored

LUMA = (0.299, 0.587, 0.114)  # colour to grey as OpenCV (and so the app) makes it


def teacher_sources(value) -> list[str]:
    """The models `--teacher` names: a list, or one name (as checkpoints and cards written before a run could
    have several keep it); none for None."""
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


class Teacher:
    """A frozen model that answers the student's training batches."""

    def __init__(self, model: EmotionModel, student_mean, student_std, student_grey: bool, device: torch.device,
                 bf16: bool):
        """`model`: its network's own scores (no decision rule), classifier rows in CLASSES order."""
        self.prep, self.bf16 = model.prep, bf16
        self.net = model.net.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
        self.s_mean = torch.tensor(student_mean, device=device).view(1, 3, 1, 1)
        self.s_std = torch.tensor(student_std, device=device).view(1, 3, 1, 1)
        self.t_mean = torch.tensor(self.prep.mean, device=device).view(1, 3, 1, 1)
        self.t_std = torch.tensor(self.prep.std, device=device).view(1, 3, 1, 1)
        self.luma = torch.tensor(LUMA, device=device).view(1, 3, 1, 1) if self.prep.grayscale and not student_grey \
            else None

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The student's normalised batch as the teacher's input: pixels, its side, its colour, its normalisation."""
        pix = x.float() * self.s_std + self.s_mean
        if self.luma is not None:  # a grey teacher, a colour student
            pix = (pix * self.luma).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        side = self.prep.size
        if pix.shape[-1] != side or pix.shape[-2] != side:
            pix = F.interpolate(pix, size=(side, side), mode="bilinear", align_corners=False,
                                antialias=side < pix.shape[-1])
        return ((pix - self.t_mean) / self.t_std).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for a student batch (mirror-averaged if it was built so)."""
        t = self.inputs(x)
        with torch.autocast(t.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.net(t).float()
            if self.prep.tta_flip:
                out = mirror_average(out, self.net(mirrored(t)).float())
        return out


def ensemble_logits(teachers: list[Teacher], x: torch.Tensor) -> torch.Tensor:
    """The teachers' logits for a student batch, averaged: one teacher's own, or an ensemble's."""
    return torch.stack([t.logits(x) for t in teachers]).mean(0)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, rows: int | None = None):
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), summed over rows and divided by `rows` (default:
    this batch's): a process that holds a share of a batch passes the whole batch's count, so the shares'
    parts add up to the whole batch's loss."""
    t = float(temperature)
    log_s = (student.float() / t).log_softmax(1)
    log_t = (teacher.float() / t).log_softmax(1)
    kl = F.kl_div(log_s, log_t, reduction="sum", log_target=True)
    return kl * t * t / (rows or len(student))
