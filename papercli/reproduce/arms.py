"""Several models trained side by side on the same batches — how a recipe checks a *comparison*
claim (residual vs plain, ViT vs ResNet) in one run. The arms share the engine's loop, checkpoints
and resume; each arm keeps its own optimiser and schedule."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Arms(nn.ModuleDict):
    """A dict of models; `forward(x)` returns each arm's output."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {name: model(x) for name, model in self.items()}


class MultiOptimizer:
    """One optimizer per arm behind the single-optimizer interface the engine uses
    (zero_grad, step, state_dict, load_state_dict)."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state_dict[name])


class MultiScheduler:
    def __init__(self, schedulers: dict[str, Any]):
        self.schedulers = schedulers

    def step(self) -> None:
        for s in self.schedulers.values():
            s.step()

    def state_dict(self) -> dict[str, Any]:
        return {name: s.state_dict() for name, s in self.schedulers.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name, s in self.schedulers.items():
            s.load_state_dict(state_dict[name])
