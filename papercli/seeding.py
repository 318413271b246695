"""Random generators keyed by (seed, step, stream): the engine and the data loaders (also in
DataLoader workers) derive the same numbers for the same step, so resumed runs repeat exactly."""

from __future__ import annotations

import torch


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7_919 + stream) % (2**63 - 1))
    return g
