"""A tiny but real recipe for testing the engine: an MLP on scikit-learn's bundled 8x8 digits.

Run as a script (`python tests/tiny_recipe.py --out DIR …`) or under torchrun. Extra knobs via
--set: nan_at (make the loss NaN at that step), sleep (seconds per step, for kill tests)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import torch
from torch import nn

from papercli.registry import Check
from papercli.reproduce.engine import Recipe, TrainConfig, run


@dataclass
class TinyConfig(TrainConfig):
    steps: int = 40
    batch_size: int = 32
    eval_every: int = 10
    lr: float = 0.05
    nan_at: int = -1
    sleep: float = 0.0


class Tiny(Recipe):
    paper = "tiny"
    config_class = TinyConfig
    scales = {"mini": TinyConfig()}

    @classmethod
    def claim_checks(cls):
        return (Check(metric="accuracy", op=">=", value=0.5, why="learns digits"),)

    def data_source(self) -> str:
        return "scikit-learn digits (bundled)"

    def setup_data(self) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        y = torch.tensor(digits.target)
        self.train_x, self.train_y = x[:1400], y[:1400]
        self.test_x, self.test_y = x[1400:], y[1400:]
        self.seen: list[int] = []

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def configure_optimizers(self, model):
        opt = torch.optim.SGD(model.parameters(), lr=self.cfg.lr, momentum=0.9)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.5)

    def train_batch(self, step: int):
        # a global batch drawn from (seed, step), split into disjoint per-rank shards
        g = self.ctx.generator(step)
        idx = torch.randperm(len(self.train_x), generator=g)[: self.cfg.batch_size * self.ctx.world]
        idx = idx.view(self.ctx.world, -1)[self.ctx.rank]
        self.seen.extend(idx.tolist())
        if self.cfg.sleep:
            time.sleep(self.cfg.sleep)
        return self.train_x[idx], self.train_y[idx], step

    def loss(self, model, batch):
        x, y, step = batch
        loss = nn.functional.cross_entropy(model(x), y)
        return loss * float("nan") if step == self.cfg.nan_at else loss

    def evaluate(self, model):
        pred = model(self.test_x).argmax(1)
        return {"accuracy": (pred == self.test_y).float().mean().item()}

    def on_train_end(self, model):
        out = self.ctx.run_dir / f"rank{self.ctx.rank}.json"
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        out.write_text(json.dumps({"seen": self.seen, "weights": weights.tolist()}))


if __name__ == "__main__":
    run(Tiny)
