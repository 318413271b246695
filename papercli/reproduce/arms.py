"""Several models trained side by side on the same batches — how a recipe checks a *comparison*
claim (residual vs plain, ViT vs ResNet) in one run. The arms share the engine's loop, checkpoints
and resume; each arm keeps its own optimiser and schedule (a dict from `configure_optimizers`)."""

from __future__ import annotations

import torch
from torch import nn


class Arms(nn.ModuleDict):
    """A dict of models; `forward(x)` returns each arm's output."""

    def __init__(self, arms: dict[str, nn.Module]):
        if not arms:
            raise ValueError("no arms to train (the list of arms is empty)")
        super().__init__(arms)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {name: model(x) for name, model in self.items()}
