"""Classification metrics on logits (torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """How many argmax predictions equal the labels."""
    return int((logits.argmax(1) == labels).sum().item())


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Summed (not averaged) cross-entropy in float32, so batches of any size add up exactly."""
    return F.cross_entropy(logits.float(), labels, reduction="sum").item()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return correct(logits, labels) / max(len(labels), 1)
