"""Batched augmentations for in-memory image tensors, in plain torch (no torchvision here)."""

from __future__ import annotations

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
