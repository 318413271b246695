"""A tiny but real recipe for testing the engine: an MLP on scikit-learn's bundled 8x8 digits.

Run as a script (`python tests/tiny_recipe.py --out DIR …`), as a module (`python -m
tests.tiny_recipe`, how a registry entry with `recipe: tests.tiny_recipe` runs it), or under
torchrun. Extra knobs via --set: nan_at (make the loss NaN at that step), sleep (seconds per step,
for kill tests), ema_decay (keep an EMA of the weights as recipe state), hidden (layer width),
experts (the hidden layer becomes a top-1 mixture of that many experts: most get no sample in a
step, as MoE experts do, so DDP must look for unused parameters).
Paper "tiny-wide" gets a wider default layer: one recipe, two papers."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from papercli.methods.ema import EMA
from papercli.registry import Check
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import Recipe, TrainConfig, run


@dataclass
class TinyConfig(TrainConfig):
    steps: int = bounded(40, ge=1)
    batch_size: int = bounded(32, ge=1)
    eval_every: int = bounded(10, ge=1)
    lr: float = bounded(0.05, gt=0.0)
    hidden: int = bounded(32, ge=1)
    holdout: float = bounded(0.2, gt=0.0, lt=1.0)  # share of the digits kept for testing
    ema_decay: float = fraction(0.0)  # 0 = no EMA
    nan_at: int = -1
    sleep: float = 0.0
    experts: int = bounded(0, ge=0)
    max_accuracy: float | None = None  # Optional field, for --set coercion tests


class TopOneExperts(nn.Module):
    """Each sample goes through the one expert its router scores highest, times score / score
    detached: 1 in value, so small early scores do not shrink the output, while the router still
    gets a gradient."""

    def __init__(self, dim: int, hidden: int, experts: int):
        super().__init__()
        self.router = nn.Linear(dim, experts)
        self.experts = nn.ModuleList(nn.Linear(dim, hidden) for _ in range(experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.router(x).softmax(-1)
        weight, choice = gate.max(-1)
        out = x.new_zeros(len(x), self.experts[0].out_features)
        for e in choice.unique().tolist():
            rows = choice == e
            scale = weight[rows, None] / weight[rows, None].detach()
            out[rows] = self.experts[e](x[rows]) * scale
        return out


class Tiny(Recipe):
    paper = "tiny"
    config_class = TinyConfig
    scales = {"mini": TinyConfig()}
    unit = "digits"

    @classmethod
    def config_for(cls, scale: str, paper: str) -> TinyConfig:
        cfg = super().config_for(scale, paper)
        return replace(cfg, hidden=64) if paper == "tiny-wide" else cfg

    @classmethod
    def claim_checks(cls, paper: str):
        if paper == "tiny":  # not in any registry: the test's own claim
            return (Check(metric="accuracy", op=">=", value=0.5, why="learns digits"),)
        return super().claim_checks(paper)

    def data_source(self) -> str:
        return "digits: scikit-learn digits (bundled)"

    def setup_data(self) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        y = torch.tensor(digits.target)
        cut = round(len(x) * (1 - self.cfg.holdout))
        self.train_x, self.train_y = x[:cut], y[:cut]
        self.test_x, self.test_y = x[cut:], y[cut:]
        self.seen: list[int] = []

    def steps_per_epoch(self) -> int:
        return max(1, round(1797 * (1 - self.cfg.holdout)) // self.cfg.batch_size)

    @property
    def ddp_find_unused(self) -> bool:
        return self.cfg.experts > 0

    def build_model(self) -> nn.Module:
        first = (
            TopOneExperts(64, self.cfg.hidden, self.cfg.experts)
            if self.cfg.experts
            else nn.Linear(64, self.cfg.hidden)
        )
        model = nn.Sequential(first, nn.ReLU(), nn.Linear(self.cfg.hidden, 10))
        self.ema = EMA(model, self.cfg.ema_decay) if self.cfg.ema_decay else None
        return model

    def configure_optimizers(self, model):
        opt = torch.optim.SGD(model.parameters(), lr=self.cfg.lr, momentum=0.9)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.5)

    def train_batch(self, step: int, micro: int = 0):
        idx = self.ctx.batch_indices(len(self.train_x), step, micro)
        self.seen.extend(idx.tolist())
        if self.cfg.sleep:
            time.sleep(self.cfg.sleep)
        return self.train_x[idx], self.train_y[idx], step

    def loss(self, model, batch):
        x, y, step = batch
        loss = nn.functional.cross_entropy(model(x), y)
        return loss * float("nan") if step == self.cfg.nan_at else loss

    def train_step(self, step, trainer):
        logged = super().train_step(step, trainer)
        if self.ema is not None:
            self.ema.update(trainer.model)
        return logged

    def state_dict(self):
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_state_dict(self, state):
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    def evaluate(self, model):
        metrics = {"accuracy": (model(self.test_x).argmax(1) == self.test_y).float().mean().item()}
        if self.ema is not None:
            pred = self.ema.model(self.test_x).argmax(1)
            metrics["ema_accuracy"] = (pred == self.test_y).float().mean().item()
        return metrics

    def on_train_end(self, model):
        out = self.ctx.run_dir / f"rank{self.ctx.rank}.json"
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        ema = (
            torch.cat([p.flatten() for p in self.ema.model.parameters()]).tolist()
            if self.ema is not None
            else None
        )
        out.write_text(json.dumps({"seen": self.seen, "weights": weights.tolist(), "ema": ema}))


if __name__ == "__main__":
    run(Tiny)
