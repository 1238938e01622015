"""Batch augmentation on whatever device the batch is on (the GPU during real training).

Input: uint8 N x C x H x W. Output: float N x 3 x H x W, normalised. Random affine (flip, rotation,
scale, shift: the face detector's jitter and head pose) in one grid_sample; lighting (contrast, brightness,
gamma); image quality (blur, lower resolution, sensor noise; `jpeg` re-encodes on the CPU); random erasing.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 N x C x H x W -> float N x 3 x H x W, (x/255 - mean) / std; grey is repeated to 3 channels."""
    x = x.float().div_(255)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.as_tensor(mean, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def jpeg(x: torch.Tensor, p: float, quality: tuple = (30, 90)) -> torch.Tensor:
    """Re-encode a share `p` of a uint8 batch as JPEG at a random quality (webcam and web photos are JPEG)."""
    if p <= 0:
        return x
    pick = (torch.rand(len(x)) < p).nonzero().flatten().tolist()
    if not pick:
        return x
    x = x.clone()
    some = x[pick].permute(0, 2, 3, 1).cpu().numpy()  # one transfer for the whole share, not one per image
    for j in range(len(some)):
        q = int(torch.randint(quality[0], quality[1] + 1, ()).item())
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


def augment(x: torch.Tensor, mean, std, rotate: float = 15.0, scale: tuple = (0.85, 1.15),
            shift: float = 0.1, jitter: float = 0.3, erase_p: float = 0.5, quality_p: float = 0.3) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    x = x.float().div_(255)
    # geometry: one affine per image (output -> input sampling grid), with a horizontal flip half the time
    angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(rotate)
    s = torch.empty(n, device=dev).uniform_(*scale)
    flip = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([
        torch.stack([cos * flip, -sin, (torch.rand(n, device=dev) * 2 - 1) * shift * 2], 1),
        torch.stack([sin * flip, cos, (torch.rand(n, device=dev) * 2 - 1) * shift * 2], 1),
    ], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # photometric: contrast around the image mean, then brightness
    c = 1 + (torch.rand(n, 1, 1, 1, device=dev) * 2 - 1) * jitter
    b = (torch.rand(n, 1, 1, 1, device=dev) * 2 - 1) * jitter * 0.5
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - m) * c + m + b).clamp_(0, 1)
    gamma = torch.exp((torch.rand(n, 1, 1, 1, device=dev) * 2 - 1) * 0.4)  # 0.67 .. 1.49
    x = x.clamp_min(1e-4).pow(gamma)
    # image quality, each on a share of the batch: blur, lower resolution, sensor noise
    h, w = x.shape[-2:]
    pick = torch.rand(n, device=dev) < quality_p
    if pick.any():
        sigma = torch.empty(n, device=dev).uniform_(0.4, 1.2)
        x = torch.where(pick.view(n, 1, 1, 1), _blur(x, sigma), x)
    pick = torch.rand(n, device=dev) < quality_p
    if pick.any():
        low = int(torch.randint(max(8, h // 3), h, ()).item())
        small = F.interpolate(x, size=(low, low), mode="area")
        x = torch.where(pick.view(n, 1, 1, 1), F.interpolate(small, size=(h, w), mode="bilinear",
                                                             align_corners=False), x)
    pick = (torch.rand(n, 1, 1, 1, device=dev) < quality_p).float()
    x = (x + pick * torch.randn_like(x) * torch.empty(n, 1, 1, 1, device=dev).uniform_(0.0, 0.04)).clamp_(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.as_tensor(mean, device=dev).view(1, 3, 1, 1)
    std = torch.as_tensor(std, device=dev).view(1, 3, 1, 1)
    x = (x - mean) / std
    # random erasing: one rectangle (2-25% of the area) set to 0 (the mean) in a share of the images
    area = torch.empty(n, device=dev).uniform_(0.02, 0.25) * h * w
    aspect = torch.exp(torch.empty(n, device=dev).uniform_(math.log(0.3), math.log(3.3)))
    eh = (area * aspect).sqrt().clamp(1, h)
    ew = (area / aspect).sqrt().clamp(1, w)
    y0 = torch.rand(n, device=dev) * (h - eh)
    x0 = torch.rand(n, device=dev) * (w - ew)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    box = ((ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1)) &
           (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1)))
    box &= (torch.rand(n, device=dev) < erase_p).view(n, 1, 1)
    x = x.masked_fill(box.unsqueeze(1), 0.0)
    return x.contiguous(memory_format=torch.channels_last)
