"""Exponential moving average of a model's weights (Polyak & Juditsky, 1992).

    θ_ema ← decay · θ_ema + (1 − decay) · θ          after every optimizer step

DDPM samples from the EMA weights (decay 0.9999, Ho et al. 2020, Appendix B), DINO's teacher is
an EMA of the student, and many recipes evaluate EMA weights. The averaged copy is recipe state:
a recipe returns `ema.state_dict()` from its `state_dict()` so that it survives a resume.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for avg, live in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(live.detach(), 1.0 - self.decay)
        for avg, live in zip(self.model.buffers(), model.buffers(), strict=True):
            avg.copy_(live)  # batch-norm statistics and other buffers follow the live model
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
