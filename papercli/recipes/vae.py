"""Auto-Encoding Variational Bayes (Kingma & Welling, 2013).

Central claim (Section 5, Fig. 2): optimising the reparameterised lower bound (the SGVB estimator,
Eq. 10) with an encoder q_φ(z|x) and a decoder p_θ(x|z) trained jointly (AEVB, Algorithm 1)
reaches a better variational lower bound than the wake-sleep algorithm with the same encoder and
decoder, on the training and on the held-out data, for every latent size tried (3 to 200). Fig. 4
draws the learned 2-D latent manifold.

Model (Appendix C): one-hidden-layer MLPs with tanh units; Gaussian encoder
    h = tanh(W₃x + b₃),  μ = W₄h + b₄,  log σ² = W₅h + b₅
Bernoulli decoder on binarised pixels: p(x|z) = Bernoulli(sigmoid(W₂ tanh(W₁z + b₁) + b₂)).
Parameters drawn from N(0, 0.01²); Adagrad with global step size from {0.01, 0.02, 0.1}; M = 100
images per minibatch, L = 1 sample of z per image.

The lower bound for one image (Eq. 10, the KL term in closed form, Appendix B):
    L(θ, φ; x) = ½ Σⱼ (1 + log σⱼ² − μⱼ² − σⱼ²) + log p_θ(x | z),   z = μ + σ ⊙ ε,  ε ~ N(0, I)

Wake-sleep (Hinton et al., 1995), the baseline of Fig. 2, trains the same two networks on the same
minibatches: the wake phase fits the decoder to z ~ q_φ(z|x) (no gradient through the sample),
the sleep phase fits the encoder to dreams z ~ p(z), x ~ p_θ(x|z). Its lower bound is evaluated
with its own encoder, exactly like AEVB's.

    paper  MNIST (binarised), 500 hidden units, latent 3-200, Adagrad, 10⁸ training images
           (here: Fashion-MNIST binarised, since the data-set registry has no MNIST; latent 20)
    mini   Fashion-MNIST binarised at 0.5, the paper's networks (500 hidden, latent 20), 1,800
           minibatches of 100 (3 epochs): AEVB and wake-sleep side by side, plus a 2-D AEVB
           model for Fig. 4

Metrics: <arm>_test_elbo (nats per image, held-out lower bound, L = 1, fixed noise),
elbo_gain = aevb − wake_sleep, fd_<data>_classifier of AEVB's samples (decoder means).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from papercli.recipes._generative import GenerativeConfig, ImageGenerativeRecipe, save_grid
from papercli.reproduce.config import bounded
from papercli.reproduce.engine import run

ARMS = ("aevb", "wake_sleep", "manifold")  # manifold: a 2-D AEVB model for Fig. 4


@dataclass
class VAEConfig(GenerativeConfig):
    arms: tuple[str, ...] = ARMS
    hidden: int = bounded(500, ge=1)
    latent: int = bounded(20, ge=1)  # the manifold arm always has 2
    lr: float = bounded(0.02, gt=0.0)  # Adagrad global step size
    init_std: float = bounded(0.01, gt=0.0)
    binarize: float = bounded(0.5, gt=0.0, lt=1.0)  # pixel threshold
    eval_samples: int = bounded(2000, ge=1)  # held-out images for the lower bound


PAPER = VAEConfig(steps=1_000_000, batch_size=100, eval_every=10_000, log_every=1000)
MINI = VAEConfig(steps=1800, batch_size=100, eval_every=600, log_every=50)  # the paper's nets


class GaussianMLPVAE(nn.Module):
    """Appendix C.2's Gaussian MLP encoder and C.1's Bernoulli MLP decoder."""

    def __init__(self, pixels: int, hidden: int, latent: int, init_std: float):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.Tanh())
        self.mu, self.logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, pixels)
        )
        self.latent = latent
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=init_std)
                nn.init.zeros_(m.bias)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x.flatten(1))
        return self.mu(h), self.logvar(h)

    def elbo(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Eq. 10 per image (L = 1): −KL(q‖p) in closed form + log p(x|z), z = μ + σ ⊙ ε."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps
        neg_kl = 0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        return neg_kl + bernoulli_log_prob(self.decoder(z), x)


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | logits) summed over pixels, per image."""
    return -F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)


def wake_sleep_loss(model: GaussianMLPVAE, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Negative wake + sleep objectives (Hinton et al., 1995) for continuous z, per image."""
    n = len(x)
    mu, logvar = model.encode(x)
    # wake: the decoder learns to explain the data from the encoder's (fixed) latent sample
    eps = torch.randn(n, model.latent, generator=g).to(x.device)
    z = (mu + torch.exp(0.5 * logvar) * eps).detach()
    wake = bernoulli_log_prob(model.decoder(z), x)
    # sleep: the encoder learns to invert dreams of the (fixed) generative model
    with torch.no_grad():
        z_dream = torch.randn(n, model.latent, generator=g).to(x.device)
        probs = torch.sigmoid(model.decoder(z_dream))
        x_dream = (torch.rand(probs.shape, generator=g).to(x.device) < probs).float()
    mu_d, logvar_d = model.encode(x_dream)
    sleep = (
        -0.5 * (logvar_d + (z_dream - mu_d).pow(2) / logvar_d.exp() + math.log(2 * math.pi))
    ).sum(1)
    return -(wake + sleep).mean()


class VAERecipe(ImageGenerativeRecipe):
    paper = "vae"
    config_class = VAEConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: VAEConfig

    def setup_data(self) -> None:
        super().setup_data()
        self.train_bin = (self.train_x > self.cfg.binarize).float()
        self.test_bin = (self.test_x[: self.cfg.eval_samples] > self.cfg.binarize).float()

    def build_model(self) -> nn.Module:
        unknown = set(self.cfg.arms) - set(ARMS)
        if unknown:  # the engine reports a ValueError here as a one-line usage error
            raise ValueError(
                f"unknown arm(s) {', '.join(sorted(unknown))} (known: {', '.join(ARMS)})"
            )
        pixels = math.prod(self.spec.shape)
        return nn.ModuleDict(
            {
                arm: GaussianMLPVAE(
                    pixels,
                    self.cfg.hidden,
                    2 if arm == "manifold" else self.cfg.latent,
                    self.cfg.init_std,
                )
                for arm in self.cfg.arms
            }
        )

    def configure_optimizers(self, model: nn.Module):
        return {
            arm: torch.optim.Adagrad(m.parameters(), lr=self.cfg.lr) for arm, m in model.items()
        }

    def train_batch(self, step: int, micro: int = 0):
        idx = self.ctx.batch_indices(len(self.train_bin), step, micro)
        return self.train_bin[idx].to(self.ctx.device), self.ctx.generator(
            step, self.ctx.shard(micro)
        )

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Every arm sees the same minibatch; each arm's loss reaches only its own parameters."""
        x, g = batch
        losses = {}
        for arm, m in model.items():
            if arm == "wake_sleep":
                losses[arm] = wake_sleep_loss(m, x, g)
            else:  # AEVB: maximise the SGVB estimate of the lower bound
                eps = torch.randn(len(x), m.latent, generator=g).to(x.device)
                losses[arm] = -m.elbo(x, eps).mean()
        return losses

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        g = torch.Generator().manual_seed(1234)  # the same noise at every evaluation
        metrics = {}
        x = self.test_bin.to(self.ctx.device)
        for arm, m in model.items():
            eps = torch.randn(len(x), m.latent, generator=g).to(x.device)
            metrics[f"{arm}_test_elbo"] = float(m.elbo(x, eps).mean())
        if "aevb" in model:
            metrics.update(
                self.sample_quality(self.sample_means(model["aevb"], self.cfg.fd_samples))
            )
        return metrics

    def sample_means(self, m: GaussianMLPVAE, n: int, seed: int = 0) -> torch.Tensor:
        z = torch.randn(n, m.latent, generator=torch.Generator().manual_seed(seed))
        probs = torch.sigmoid(m.decoder(z.to(self.ctx.device)))
        return probs.view(n, *self.spec.shape)

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        if {"aevb_test_elbo", "wake_sleep_test_elbo"} <= set(m):
            m["elbo_gain"] = m["aevb_test_elbo"] - m["wake_sleep_test_elbo"]
        return m

    def plots(self, model: nn.Module, run_dir: Path) -> None:
        model.eval()
        with torch.no_grad():
            if "aevb" in model:
                save_grid(
                    self.sample_means(model["aevb"], 100),
                    run_dir / "samples.png",
                    f"AEVB samples (decoder means), latent {self.cfg.latent}",
                )
            if "manifold" in model:
                # Fig. 4: decode a grid of z at the N(0, I) quantiles of evenly spaced levels
                n = 15
                q = torch.special.ndtri(torch.linspace(0.05, 0.95, n))
                z = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).view(-1, 2)
                probs = torch.sigmoid(model["manifold"].decoder(z.to(self.ctx.device)))
                save_grid(
                    probs.view(-1, *self.spec.shape),
                    run_dir / "manifold.png",
                    "learned 2-D latent manifold (Fig. 4)",
                    nrow=n,
                )


if __name__ == "__main__":
    run(VAERecipe)
