"""Parameter counts: total and trainable, and per arm for models trained side by side.

Works on the meta device too, so a 70B configuration is counted without allocating it."""

from __future__ import annotations

from typing import Any

from torch import nn


def _count(module: nn.Module) -> dict[str, int]:
    params = list(module.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def parameter_counts(model: nn.Module) -> dict[str, Any]:
    """{"total", "trainable"} and, for a ModuleDict (arms, a GAN's networks), "arms": {name: …}."""
    counts: dict[str, Any] = _count(model)
    if isinstance(model, nn.ModuleDict):
        counts["arms"] = {name: _count(part) for name, part in model.items()}
    return counts
