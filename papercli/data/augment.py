"""Augmentations in plain torch (torchvision is not available here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def elastic_grid(
    batch: int, size: int, sigma: float, points: int, generator: torch.Generator
) -> torch.Tensor:
    """U-Net Section 3.1: random displacement vectors on a coarse `points` x `points` grid, drawn from a
    Gaussian with `sigma` pixels standard deviation, interpolated bicubically to per-pixel shifts.
    Returns a sampling grid (batch, size, size, 2) in [-1, 1] coordinates for `grid_sample`."""
    coarse = torch.randn(batch, 2, points, points, generator=generator) * sigma
    dense = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    lin = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    base = torch.stack([xx, yy], dim=-1).expand(batch, size, size, 2)
    return base + dense.permute(0, 2, 3, 1) * (2.0 / (size - 1))


def warp(x: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """Resample (B, C, H, W) with a grid; mirror at the border like the paper's tiling."""
    return F.grid_sample(x, grid, mode=mode, padding_mode="reflection", align_corners=True)


def flip_rotate(tensors: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """The same random flip and 90-degree rotation for every tensor (shift/rotation invariance)."""
    k = int(torch.randint(0, 4, (1,), generator=generator))
    flip = bool(torch.randint(0, 2, (1,), generator=generator))
    out = []
    for t in tensors:
        t = torch.rot90(t, k, dims=(-2, -1))
        out.append(torch.flip(t, dims=(-1,)) if flip else t)
    return out
