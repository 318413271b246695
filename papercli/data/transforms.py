"""Batched augmentations for in-memory image tensors, in plain torch (no torchvision here)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pad_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """ResNet Section 4.2: pad 4 pixels on each side, take a random crop of the original size, and
    flip horizontally with probability 1/2. x: (B, C, H, W)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
    flip = (torch.rand(b, generator=generator) < 0.5).tolist()
    out = torch.empty_like(x)
    for i in range(b):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> torch.Tensor:
    """Inception-style crops for a whole batch at once: per image, a box of `scale` × the area and
    aspect `ratio` (log-uniform) at a random place, resampled bilinearly to `size` × `size`, then
    flipped horizontally with probability 1/2. x: (B, C, H, W), values already normalised."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_ratio.exp()
    # box sides as fractions of the image, clipped to fit
    w = (area * aspect).sqrt().clamp(max=1.0)
    h = (area / aspect).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=generator) * (1 - w) + w / 2) * 2 - 1  # box centre in [-1, 1]
    cy = (torch.rand(b, generator=generator) * (1 - h) + h / 2) * 2 - 1
    sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if flip else 1.0
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta.to(x), [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
