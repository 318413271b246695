"""Optimizer helpers shared by recipes: parameter groups and learning-rate schedules.

A recipe with a paper-specific schedule (the Transformer's Eq. 3, ResNet's step drops) writes it
inline where the paper defines it; what several papers share lives here."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def weight_decay_groups(
    model: nn.Module, weight_decay: float, skip: Iterable[str] = ()
) -> list[dict]:
    """Two parameter groups: weight matrices (and conv kernels) decay, everything else does not —
    biases, norm scales, and parameters whose name contains one of `skip` (position embeddings,
    class tokens …). The convention of ViT, GPT-2, BERT and T5 training code."""
    skip = tuple(skip)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim > 1 and not any(s in name for s in skip):
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero (ViT Appendix B.1 uses warm-up + cosine/linear)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
