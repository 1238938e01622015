"""Batch augmentation on whatever device the batch is on (the GPU during real training).

Input: uint8 N x C x H x W. Output: float N x 3 x H x W, normalised. Random affine (flip, rotation,
scale, shift) in one grid_sample, brightness/contrast jitter, and random erasing.
"""
from __future__ import annotations

import math

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


def augment(x: torch.Tensor, mean, std, rotate: float = 15.0, scale: tuple = (0.85, 1.15),
            shift: float = 0.1, jitter: float = 0.3, erase_p: float = 0.5) -> torch.Tensor:
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
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.as_tensor(mean, device=dev).view(1, 3, 1, 1)
    std = torch.as_tensor(std, device=dev).view(1, 3, 1, 1)
    x = (x - mean) / std
    # random erasing: one rectangle (2-25% of the area) set to 0 (the mean) in a share of the images
    h, w = x.shape[-2:]
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
