"""Losses on binary mask logits, per mask (so a recipe can pick the best of several outputs, as
SAM does, or match masks to targets, as DETR-style segmenters do).

    focal  FL(p_t) = −α_t (1 − p_t)^γ log p_t, averaged over the pixels (Lin et al., 2017, Eq. 5)
    dice   1 − (2 Σ p·y + 1) / (Σ p + Σ y + 1) over each mask's pixels (Milletari et al., 2016,
           with the +1 smoothing of the DETR and SAM code bases)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """(..., H, W) logits and {0, 1} targets -> (...) the focal loss of each mask."""
    logits, targets = logits.float(), targets.float()
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(..., H, W) logits and {0, 1} targets -> (...) the soft dice loss of each mask."""
    p = logits.float().sigmoid().flatten(-2)
    t = targets.float().flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(..., H, W) logits (thresholded at 0) and {0, 1} targets -> (...) IoU of each mask; 0 when
    both are empty."""
    pred, t = logits > 0, targets.bool()
    inter = (pred & t).flatten(-2).sum(-1).float()
    union = (pred | t).flatten(-2).sum(-1).float()
    return inter / union.clamp(min=1)
