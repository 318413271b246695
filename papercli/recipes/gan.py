"""Generative Adversarial Networks (Goodfellow et al., 2014).

Central claim (Section 3, Eq. 1; Section 5, Table 1): a generator G trained against a discriminator
D in the two-player minimax game

    min_G max_D V(D, G) = E_x[log D(x)] + E_z[log(1 − D(G(z)))]                         (Eq. 1)

learns to produce samples of the data distribution. In practice (Section 3) G maximises log D(G(z))
instead of minimising log(1 − D(G(z))) — the non-saturating loss, with strong gradients early on.
Algorithm 1 alternates k = 1 discriminator step and one generator step per iteration. Table 1
scores the samples by a Gaussian Parzen-window estimate of the test log-likelihood, σ chosen by
cross-validation on a validation set (MNIST: 225 ± 2 nats).

Model (Section 5 and the released MNIST code): G is an MLP with ReLU hidden layers and a sigmoid
output, noise only at its bottom layer; D is an MLP of maxout layers with dropout and a sigmoid
output (here: logits, with the sigmoid inside the loss for numerical stability).
    paper  MNIST-shaped data, G 100→1200→1200→784, D maxout 240×5 → 240×5 → 1, SGD with
           momentum, batch 100 (here on Fashion-MNIST: the data-set registry has no MNIST)
    mini   Fashion-MNIST at 28x28, G 64→512→512→784, D maxout 128×3 → 128×3 → 1, Adam
           (lr 2e-4, β₁ = 0.5: converges in the few minutes of a CPU budget, where the paper's
           momentum SGD needs hours), 3,000 iterations of 100 (5 epochs)

Metrics: parzen_ll (nats per test image, σ chosen on a validation split held out of training),
parzen_gain = parzen_ll − that of the untrained generator (same σ search), fd_<data>_classifier
of G's samples and fd_drop = untrained − trained Fréchet distance.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from papercli.recipes._generative import GenerativeConfig, ImageGenerativeRecipe, save_grid
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import run


@dataclass
class GANConfig(GenerativeConfig):
    noise: int = bounded(100, ge=1)
    g_hidden: int = bounded(1200, ge=1)
    d_units: int = bounded(240, ge=1)
    d_pieces: int = bounded(5, ge=1)  # maxout pieces per unit
    d_dropout: float = fraction(0.5)
    optimizer: Literal["sgd", "adam"] = "sgd"  # the paper: momentum SGD
    lr: float = bounded(0.1, gt=0.0)
    momentum: float = fraction(0.5)  # SGD momentum, or Adam's β₁
    parzen_samples: int = bounded(10_000, ge=10)  # generated samples in the Parzen window
    parzen_test: int = bounded(10_000, ge=1)  # test images scored
    parzen_val: int = bounded(1000, ge=1)  # training images held out to choose σ
    sigmas: tuple[float, ...] = (0.05, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3)


PAPER = GANConfig(steps=100_000, batch_size=100, eval_every=5000, log_every=500)
MINI = GANConfig(
    noise=64,
    g_hidden=512,
    d_units=128,
    d_pieces=3,
    optimizer="adam",
    lr=2e-4,
    momentum=0.5,
    steps=3000,
    batch_size=100,
    eval_every=1000,
    log_every=50,
    parzen_samples=2000,
    parzen_test=1000,
    fd_samples=2000,
)


class Maxout(nn.Module):
    """max over `pieces` affine maps per unit (Goodfellow et al., 2013)."""

    def __init__(self, inputs: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(inputs, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(-1, self.units, self.pieces).amax(-1)


def parzen_log_likelihood(x: torch.Tensor, samples: torch.Tensor, sigma: float) -> torch.Tensor:
    """log of the Gaussian Parzen window (kernel width σ on `samples`) at each row of x:
    log (1/N) Σᵢ N(x; sᵢ, σ² I)."""
    x, s = x.flatten(1).double(), samples.flatten(1).double()
    d = x.shape[1]
    sq = (x * x).sum(1, keepdim=True) + (s * s).sum(1) - 2 * x @ s.T
    log_k = -sq.clamp_min(0) / (2 * sigma**2)
    return torch.logsumexp(log_k, 1) - math.log(len(s)) - 0.5 * d * math.log(2 * math.pi * sigma**2)


class GANRecipe(ImageGenerativeRecipe):
    paper = "gan"
    config_class = GANConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: GANConfig

    def setup_data(self) -> None:
        super().setup_data()
        n = self.cfg.parzen_val  # held out of training: it only chooses σ
        self.val_x, self.train_x = self.train_x[-n:], self.train_x[:-n]

    def build_model(self) -> nn.Module:
        pixels = math.prod(self.spec.shape)
        h, u, k = self.cfg.g_hidden, self.cfg.d_units, self.cfg.d_pieces
        generator = nn.Sequential(
            nn.Linear(self.cfg.noise, h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.ReLU(),
            nn.Linear(h, pixels),
            nn.Sigmoid(),
        )
        discriminator = nn.Sequential(
            nn.Flatten(),
            Maxout(pixels, u, k),
            nn.Dropout(self.cfg.d_dropout),
            Maxout(u, u, k),
            nn.Dropout(self.cfg.d_dropout),
            nn.Linear(u, 1),
        )
        # the untrained generator is the baseline of parzen_gain and fd_drop
        self.initial_generator = copy.deepcopy(generator)
        return nn.ModuleDict({"generator": generator, "discriminator": discriminator})

    def configure_optimizers(self, model: nn.Module):
        def make(params):
            if self.cfg.optimizer == "adam":
                return torch.optim.Adam(params, lr=self.cfg.lr, betas=(self.cfg.momentum, 0.999))
            return torch.optim.SGD(params, lr=self.cfg.lr, momentum=self.cfg.momentum)

        return {  # Algorithm 1: the discriminator first, then the generator
            "d": make(model["discriminator"].parameters()),
            "g": make(model["generator"].parameters()),
        }

    def train_batch(self, step: int, micro: int = 0):
        return self.train_images(step, micro), step, self.ctx.shard(micro)

    def _noise(self, n: int, step: int, stream: int) -> torch.Tensor:
        g = self.ctx.generator(step, stream)
        return torch.randn(n, self.cfg.noise, generator=g).to(self.ctx.device)

    def d_loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Ascend V(D, G) of Eq. 1 in D: cross-entropy of real (label 1) vs generated (label 0)."""
        x, step, shard = batch
        with torch.no_grad():
            fake = model["generator"](self._noise(len(x), step, 2 * shard)).view_as(x)
        real_logits, fake_logits = model["discriminator"](x), model["discriminator"](fake)
        return {
            "d_real": F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)),
            "d_fake": F.binary_cross_entropy_with_logits(
                fake_logits, torch.zeros_like(fake_logits)
            ),
        }

    def g_loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Non-saturating: maximise log D(G(z)) on a fresh noise minibatch (Section 3)."""
        x, step, shard = batch
        fake = model["generator"](self._noise(len(x), step, 2 * shard + 1)).view_as(x)
        logits = model["discriminator"](fake)
        return {"g": F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))}

    def train_step(self, step: int, trainer) -> dict[str, float]:
        d = trainer.accumulate(step, self.d_loss)  # k = 1 discriminator step …
        trainer.step_optimizers(["d"])
        g = trainer.accumulate(step, self.g_loss)  # … then one generator step
        trainer.step_optimizers(["g"])
        return {"loss": d["loss"] + g["loss"], **{k: v for k, v in d.items() if k != "loss"}, **g}

    def samples(self, generator: nn.Module, n: int, seed: int = 0) -> torch.Tensor:
        z = torch.randn(n, self.cfg.noise, generator=torch.Generator().manual_seed(seed))
        return generator(z.to(self.ctx.device)).view(n, *self.spec.shape)

    def parzen(self, generator: nn.Module) -> float:
        """Table 1's estimate: σ maximises the validation log-likelihood, then score the test set."""
        s = self.samples(generator, self.cfg.parzen_samples, seed=1)
        best = max(
            self.cfg.sigmas, key=lambda sg: float(parzen_log_likelihood(self.val_x, s, sg).mean())
        )
        test = self.test_x[: self.cfg.parzen_test].to(s.device)
        return float(parzen_log_likelihood(test, s, best).mean())

    def scores(self, generator: nn.Module) -> tuple[float, dict[str, float]]:
        return self.parzen(generator), self.sample_quality(
            self.samples(generator, self.cfg.fd_samples)
        )

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if not hasattr(self, "baseline"):
            self.baseline = self.scores(self.initial_generator.to(self.ctx.device).eval())
        parzen, quality = self.scores(model["generator"])
        return {
            "parzen_ll": parzen,
            "parzen_gain": parzen - self.baseline[0],
            **quality,
            "fd_drop": self.baseline[1][self.fd_name] - quality[self.fd_name],
        }

    def plots(self, model: nn.Module, run_dir: Path) -> None:
        model.eval()
        with torch.no_grad():
            save_grid(
                self.samples(model["generator"], 100),
                run_dir / "samples.png",
                "GAN samples (non-saturating generator loss)",
            )


if __name__ == "__main__":
    run(GANRecipe)
