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


def unnormalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """The inverse of `normalize`: back to [0, 1] pixel units."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * s + m


def _chosen(p: float, b: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 1, 1, 1) booleans: which images of the batch a transform with probability p touches."""
    return (torch.rand(b, generator=generator) < p).view(b, 1, 1, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (PIL's 'L' conversion) of (B, 3, H, W), kept as (B, 1, H, W); a grey batch
    is its own luma."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def color_jitter(
    x: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    p: float = 0.8,
    grayscale_p: float = 0.2,
) -> torch.Tensor:
    """BYOL's colour distortion (Grill et al., 2020, Appendix B; DINO's Appendix uses the same)
    without the hue shift, on (B, C, H, W) in [0, 1]. With probability p, per image: brightness ×
    U(1 − b, 1 + b), contrast (blend with the image's mean luma) and saturation (blend with its
    luma) by factors U(1 − c, 1 + c) and U(1 − s, 1 + s), each clamped to [0, 1]. Then, with
    probability `grayscale_p`, the luma in every channel. torchvision draws the order of the three
    per image; here it is fixed: without the clamps they are linear maps that commute, so the
    order changes only what the clamps cut. On grey images saturation and grayscale do nothing."""
    b = x.shape[0]

    def factor(strength: float) -> torch.Tensor:
        return (
            torch.empty(b)
            .uniform_(1 - strength, 1 + strength, generator=generator)
            .view(b, 1, 1, 1)
            .to(x)
        )

    jitter = _chosen(p, b, generator).to(x.device)
    out = (x * factor(brightness)).clamp(0, 1)
    mean = _gray(out).mean((1, 2, 3), keepdim=True)
    out = (mean + factor(contrast) * (out - mean)).clamp(0, 1)
    gray = _gray(out)
    out = (gray + factor(saturation) * (out - gray)).clamp(0, 1)
    out = torch.where(jitter, out, x)
    to_gray = _chosen(grayscale_p, b, generator).to(x.device)
    return torch.where(to_gray, _gray(out).expand_as(out), out)


def gaussian_blur(
    x: torch.Tensor,
    p: float,
    generator: torch.Generator,
    sigma: tuple[float, float] = (0.1, 2.0),
) -> torch.Tensor:
    """With probability p per image, a Gaussian blur of standard deviation U(sigma) pixels
    (BYOL / DINO: 0.1–2 px at 224 px), separable, with reflected borders. x: (B, C, H, W)."""
    b, c, h, w = x.shape
    s = torch.empty(b).uniform_(*sigma, generator=generator)
    chosen = _chosen(p, b, generator).to(x.device)
    radius = min(math.ceil(3 * sigma[1]), h - 1, w - 1)
    if radius < 1:
        return x
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * s[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(x).repeat_interleave(c, 0)  # (B·C, 2r+1)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(b * c, 1, 1, -1), groups=b * c)  # along rows
    y = F.conv2d(y, kernel.view(b * c, 1, -1, 1), groups=b * c)  # along columns
    return torch.where(chosen, y.view(b, c, h, w), x)


def solarize(
    x: torch.Tensor, p: float, generator: torch.Generator, threshold: float = 0.5
) -> torch.Tensor:
    """With probability p per image, every pixel at or above `threshold` becomes 1 − x (PIL's
    solarize at 128 / 255; BYOL / DINO). x in [0, 1]."""
    chosen = _chosen(p, x.shape[0], generator).to(x.device)
    return torch.where(chosen & (x >= threshold), 1 - x, x)


def mixup_cutmix(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    switch_prob: float = 0.5,
    prob: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al., 2018) and CutMix (Yun et al., 2019) as DeiT trains with them (Table 9:
    α = 0.8 and 1.0, one of the two per image; timm's `Mixup` in its per-element mode). Each image
    is mixed, with probability `prob`, with its partner in the reversed batch: CutMix (with
    probability `switch_prob` when both alphas are > 0) pastes a box of the partner covering about
    1 − λ of the area, Mixup blends λ·x + (1 − λ)·partner, λ ~ Beta(α, α); an alpha of 0 turns its
    method off. A CutMix box is clipped at the borders and λ becomes the area actually kept.
    x: (B, C, H, W), y: (B,) class indices. Returns the mixed images and their (B, num_classes)
    targets λ·onehot(y) + (1 − λ)·onehot(y_partner), for a cross-entropy on probabilities."""
    import numpy as np

    b, _, h, w = x.shape
    # Beta draws need numpy; its generator is seeded from `generator`, so a step replays exactly
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    if cutmix_alpha > 0 and mixup_alpha > 0:
        cut = rng.random(b) < switch_prob
    else:
        cut = np.full(b, cutmix_alpha > 0)
    lam = np.where(
        cut,
        rng.beta(cutmix_alpha, cutmix_alpha, b) if cutmix_alpha > 0 else 1.0,
        rng.beta(mixup_alpha, mixup_alpha, b) if mixup_alpha > 0 else 1.0,
    )
    lam = np.where(rng.random(b) < prob, lam, 1.0)
    # CutMix boxes: sides √(1 − λ) of the image's, centred anywhere, clipped to the image
    side = np.sqrt(1.0 - lam)
    cy, cx = rng.integers(0, h, b), rng.integers(0, w, b)
    half_h, half_w = (side * h).astype(int) // 2, (side * w).astype(int) // 2
    y0, y1 = np.clip(cy - half_h, 0, h), np.clip(cy + half_h, 0, h)
    x0, x1 = np.clip(cx - half_w, 0, w), np.clip(cx + half_w, 0, w)
    lam = np.where(cut, 1.0 - (y1 - y0) * (x1 - x0) / (h * w), lam)

    def column(a) -> torch.Tensor:
        return torch.as_tensor(a, device=x.device).view(b, 1, 1, 1)

    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    box = (rows >= column(y0)) & (rows < column(y1)) & (cols >= column(x0)) & (cols < column(x1))
    partner = x.flip(0)
    weight = column(lam).to(x.dtype)
    blended = weight * x + (1 - weight) * partner
    mixed = torch.where(column(cut), torch.where(box, partner, x), blended)
    onehot = F.one_hot(y, num_classes).to(torch.float32)
    lam_y = torch.as_tensor(lam, dtype=torch.float32, device=y.device).view(b, 1)
    return mixed, lam_y * onehot + (1 - lam_y) * onehot.flip(0)
