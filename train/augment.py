"""Batch augmentation on whatever device the batch is on (the GPU during real training).

Input: uint8 N x C x H x W. Output: float N x 3 x H x W, normalised. Random affine (flip, rotation,
scale, shift: the face detector's jitter and head pose) in one grid_sample; lighting (contrast, brightness,
gamma); image quality (blur, lower resolution, sensor noise, and optionally sharpening; `jpeg` re-encodes on
the CPU); random erasing.
`mixer`/`mix`: timm's mixup and cutmix over an augmented batch and its target distributions.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 N x C x H x W -> float N x 3 x H x W, (x/255 - mean) / std; grey is repeated to 3 channels."""
    x = x.float().div_(255)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.as_tensor(mean, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def jpeg(x: torch.Tensor, p: float, quality: tuple = (30, 90), generator: torch.Generator | None = None,
         keep: torch.Tensor | None = None) -> torch.Tensor:
    """Re-encode a share `p` of a uint8 batch as JPEG at a random quality (webcam and web photos are JPEG).

    `generator` (a CPU one) draws which images and at what quality. With `keep` (row indices), the draws are
    made for the whole batch but only those rows are re-encoded: a process that trains on its share of a
    batch re-encodes its images exactly as a single process would (the other rows come back as they were)."""
    if p <= 0:
        return x
    pick = (torch.rand(len(x), generator=generator) < p).nonzero().flatten().tolist()
    qualities = [int(torch.randint(quality[0], quality[1] + 1, (), generator=generator).item()) for _ in pick]
    if keep is not None:
        wanted = set(keep.tolist())
        pick, qualities = [i for i in pick if i in wanted], [q for i, q in zip(pick, qualities) if i in wanted]
    if not pick:
        return x
    x = x.clone()
    some = x[pick].permute(0, 2, 3, 1).cpu().numpy()  # one transfer for the whole share, not one per image
    for j, q in enumerate(qualities):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(some[j]), [cv2.IMWRITE_JPEG_QUALITY, q])
        dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        some[j] = dec[..., None] if dec.ndim == 2 else dec
    x[pick] = torch.from_numpy(some).permute(0, 3, 1, 2).to(x.device)
    return x


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with one sigma per image (5-tap separable kernel)."""
    n, c = x.shape[:2]
    t = torch.arange(-2, 3, device=x.device, dtype=x.dtype).view(1, 5)
    k = torch.exp(-t ** 2 / (2 * sigma.view(n, 1) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c) x 5
    y = x.reshape(1, n * c, *x.shape[2:])
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="reflect"), k.view(n * c, 1, 1, 5), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="reflect"), k.view(n * c, 1, 5, 1), groups=n * c)
    return y.view_as(x)


def augment(x: torch.Tensor, mean, std, rotate: float = 15.0, scale: tuple = (0.85, 1.3),
            shift: float = 0.1, jitter: float = 0.3, erase_p: float = 0.5, quality_p: float = 0.3,
            yaw: float = 0.3, squeeze: float = 0.25, mouth_p: float = 0.0, sharpen_p: float = 0.0,
            generator: torch.Generator | None = None, keep: torch.Tensor | None = None,
            with_whole: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The augmented, normalised batch; `generator` (on x's device) draws every random choice.

    Geometry covers faces unlike FER2013's: rotation, zoom (up to 1.3, for crops tighter than the app's
    framing), shift, mirror, and a head turned away (horizontal perspective and a narrower face).

    With `keep` (row indices), every draw is made for the whole batch and only those rows are augmented and
    returned: a process that trains on its share of a batch sees the pictures a single process would.

    `mouth_p`: the share of faces whose lower part (from 60-72% of the height down: the mouth and chin in the
    app's framing, eyes at about 38%) is blanked, so that brows and eyes must carry the expression, as in a
    posed, closed-mouth anger. At 0 nothing is drawn for it, and the other draws are those of earlier runs.
    With `with_whole`, the pair (batch, the same batch before any mouth was blanked) is returned: a teacher
    can then answer on the whole face while the student sees only its upper part.

    `sharpen_p`: the share of faces given an unsharp mask (the picture plus 0.3-1.5 times its difference from
    a blur of sigma 1), as crisp as studio photographs downscaled, where FER2013's are soft. At 0 nothing is
    drawn for it; its draws come after those of the erasing, so every other change is drawn as without it."""
    dev = x.device
    n = x.shape[0]
    if keep is not None:
        x = x[keep]
    rows = len(x)

    def rand(*shape):  # uniform draws for the whole batch, the kept rows returned
        r = torch.rand(n, *shape, device=dev, generator=generator)
        return r if keep is None else r[keep]

    def uniform(lo, hi):
        return lo + (hi - lo) * rand()

    x = x.float().div_(255)
    # geometry: one affine per image (output -> input sampling grid), with a horizontal flip half the time
    angle = (rand() * 2 - 1) * math.radians(rotate)
    s = uniform(*scale)
    flip = torch.where(rand() < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([
        torch.stack([cos * flip, -sin, (rand() * 2 - 1) * shift * 2], 1),
        torch.stack([sin * flip, cos, (rand() * 2 - 1) * shift * 2], 1),
    ], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # head turned about the vertical axis: a horizontal perspective (the near side of the face larger, the far
    # side smaller; `yaw` is the largest change of scale across the picture) and a narrower face, as in 3/4 views
    k = ((rand() * 2 - 1) * yaw).view(rows, 1, 1)
    narrow = (1 + rand() * squeeze).view(rows, 1, 1)
    gx, gy = grid[..., 0], grid[..., 1]
    depth = 1 + k * gx
    grid = torch.stack([gx * narrow / depth, gy / depth], -1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # photometric: contrast around the image mean, then brightness
    c = 1 + (rand(1, 1, 1) * 2 - 1) * jitter
    b = (rand(1, 1, 1) * 2 - 1) * jitter * 0.5
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - m) * c + m + b).clamp_(0, 1)
    gamma = torch.exp((rand(1, 1, 1) * 2 - 1) * 0.4)  # 0.67 .. 1.49
    x = x.clamp_min(1e-4).pow(gamma)
    # image quality, each on a share of the batch: blur, lower resolution, sensor noise
    h, w = x.shape[-2:]
    pick = rand() < quality_p
    sigma = uniform(0.4, 1.2)
    if pick.any():
        x = torch.where(pick.view(rows, 1, 1, 1), _blur(x, sigma), x)
    pick = rand() < quality_p
    low = int(torch.randint(max(8, h // 3), h, (), device=dev, generator=generator).item())
    if pick.any():
        small = F.interpolate(x, size=(low, low), mode="area")
        x = torch.where(pick.view(rows, 1, 1, 1), F.interpolate(small, size=(h, w), mode="bilinear",
                                                                align_corners=False), x)
    pick = (rand(1, 1, 1) < quality_p).float()
    noise = torch.randn(n, *x.shape[1:], device=dev, generator=generator)
    noise = noise if keep is None else noise[keep]
    x = (x + pick * noise * uniform(0.0, 0.04).view(rows, 1, 1, 1)).clamp_(0, 1)
    # random erasing: one rectangle (2-25% of the area) set to 0 (the mean) in a share of the images (drawn
    # here, applied once the batch is normalised)
    area = uniform(0.02, 0.25) * h * w
    aspect = torch.exp(uniform(math.log(0.3), math.log(3.3)))
    eh = (area * aspect).sqrt().clamp(1, h)
    ew = (area / aspect).sqrt().clamp(1, w)
    y0 = rand() * (h - eh)
    x0 = rand() * (w - ew)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    box = ((ys >= y0.view(rows, 1, 1)) & (ys < (y0 + eh).view(rows, 1, 1)) &
           (xs >= x0.view(rows, 1, 1)) & (xs < (x0 + ew).view(rows, 1, 1)))
    box &= (rand() < erase_p).view(rows, 1, 1)
    if sharpen_p > 0:  # unsharp mask: the detail a blur removes, added back 0.3-1.5 times
        amount = uniform(0.3, 1.5) * (rand() < sharpen_p)
        x = (x + amount.view(rows, 1, 1, 1) * (x - _blur(x, torch.ones_like(amount)))).clamp_(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.as_tensor(mean, device=dev).view(1, 3, 1, 1)
    std = torch.as_tensor(std, device=dev).view(1, 3, 1, 1)
    x = (x - mean) / std
    x = x.masked_fill(box.unsqueeze(1), 0.0).contiguous(memory_format=torch.channels_last)
    whole = x
    if mouth_p > 0:
        top = uniform(0.6, 0.72) * h
        band = (ys >= top.view(rows, 1, 1)) & (rand() < mouth_p).view(rows, 1, 1)
        x = x.masked_fill(band.unsqueeze(1), 0.0).contiguous(memory_format=torch.channels_last)
    return (x, whole) if with_whole else x


def mixer(mixup: float, cutmix: float, prob: float, classes: int) -> Mixup | None:
    """timm's batch mixing, or None when both alphas are 0: with probability `prob` a batch is blended with
    itself reversed (mixup, lambda ~ Beta(mixup, mixup)) or has a box pasted from it (cutmix, Beta(cutmix,
    cutmix), the box's area setting lambda); with both, each mixed batch takes one of the two at even odds.
    Targets are distributions (FER+'s votes, or one-hot), mixed by the same lambda; smoothing and class
    weights are left to the loss."""
    if mixup <= 0 and cutmix <= 0:
        return None
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=0.5, mode="batch",
                 label_smoothing=0.0, num_classes=classes, multi_label=True)


def mix(m: Mixup, x: torch.Tensor, targets: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`m` applied to a whole (even) batch, its random draws taken from `seed`: timm draws from numpy's global
    generator, which is set for the call and put back after, so a run and its resume, and every process of
    a distributed run, mix each batch alike. x is changed in place."""
    state = np.random.get_state()
    np.random.seed(seed % 2 ** 32)
    try:
        return m(x, targets.float())
    finally:
        np.random.set_state(state)
