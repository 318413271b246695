"""A small real GAN on scikit-learn's digits, to test a recipe that owns its step: two networks,
two optimizers stepped in the recipe's own order (discriminator, then generator; Goodfellow et
al. 2014, Algorithm 1 with k = 1 and the non-saturating generator loss), named losses logged."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from papercli.registry import Check
from papercli.reproduce.config import bounded
from papercli.reproduce.engine import Recipe, TrainConfig, run


@dataclass
class GANConfig(TrainConfig):
    steps: int = bounded(30, ge=1)
    batch_size: int = bounded(64, ge=1)
    eval_every: int = bounded(10, ge=1)
    lr_d: float = bounded(2e-3, ge=0.0)
    lr_g: float = bounded(2e-3, ge=0.0)
    noise: int = bounded(16, ge=1)


class DigitsGAN(Recipe):
    paper = "tiny-gan"
    config_class = GANConfig
    scales = {"mini": GANConfig()}

    @classmethod
    def claim_checks(cls, paper: str):
        return (Check(metric="d_real_score", op=">", value=0.0, why="D tells real from fake"),)

    def data_source(self) -> str:
        return "digits: scikit-learn digits (bundled)"

    def setup_data(self) -> None:
        from sklearn.datasets import load_digits

        self.real = torch.tensor(load_digits().data, dtype=torch.float32) / 8.0 - 1.0

    def build_model(self) -> nn.Module:
        g = nn.Sequential(nn.Linear(self.cfg.noise, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh())
        d = nn.Sequential(nn.Linear(64, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
        return nn.ModuleDict({"generator": g, "discriminator": d})

    def configure_optimizers(self, model):
        return {
            "d": torch.optim.Adam(model["discriminator"].parameters(), lr=self.cfg.lr_d),
            "g": torch.optim.Adam(model["generator"].parameters(), lr=self.cfg.lr_g),
        }

    def train_batch(self, step: int, micro: int = 0):
        idx = self.ctx.batch_indices(len(self.real), step, micro)
        z = torch.randn(
            len(idx), self.cfg.noise, generator=self.ctx.generator(step, self.ctx.shard(micro))
        )
        return self.real[idx], z

    def d_loss(self, model, batch):
        real, z = batch
        with torch.no_grad():
            fake = model["generator"](z)
        d = model["discriminator"]
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        return {
            "d_real": F.binary_cross_entropy_with_logits(d(real), ones),
            "d_fake": F.binary_cross_entropy_with_logits(d(fake), zeros),
        }

    def g_loss(self, model, batch):
        _, z = batch
        logits = model["discriminator"](model["generator"](z))
        return {"g": F.binary_cross_entropy_with_logits(logits, torch.ones(len(z), 1))}

    def train_step(self, step, trainer):
        d = trainer.accumulate(step, self.d_loss)
        trainer.step_optimizers(["d"])
        g = trainer.accumulate(step, self.g_loss)
        trainer.step_optimizers(["g"])
        return {
            "loss": d["loss"] + g["loss"],
            "d_real": d["d_real"],
            "d_fake": d["d_fake"],
            "g": g["g"],
        }

    def evaluate(self, model):
        z = torch.randn(256, self.cfg.noise, generator=torch.Generator().manual_seed(0))
        d = model["discriminator"]
        real = (
            torch.sigmoid(d(self.real[:256])).mean()
            - torch.sigmoid(d(model["generator"](z))).mean()
        )
        return {"d_real_score": float(real)}

    def on_train_end(self, model):
        flat = {
            name: torch.cat([p.detach().flatten() for p in part.parameters()]).tolist()
            for name, part in model.items()
        }
        (self.ctx.run_dir / "weights.json").write_text(json.dumps(flat))


if __name__ == "__main__":
    run(DigitsGAN)
