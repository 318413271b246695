"""Denoising Diffusion Probabilistic Models (Ho, Jain & Abbeel, 2020, arXiv:2006.11239).

Central claims: a U-Net ε_θ trained with the simplified objective

    L_simple(θ) = E_{t, x_0, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²                 (Eq. 14)

and sampled by ancestral sampling (Algorithm 2) generates images of better quality than other
likelihood-based models and than GANs of its time (Table 1: CIFAR-10 FID 3.17), and — Table 2 —
L_simple gives far better samples than training on the true variational bound L_vlb with the same
fixed isotropic Σ (FID 3.17 against 13.22 for "L, fixed isotropic Σ", ε-prediction). The
process, objectives and sampler are `papercli.methods.diffusion`; the network is
`papercli.models.diffusion_unet`.

    paper  CIFAR-10 32x32 (--data, the data-set registry's cifar10), the 35.7M U-Net (ch 128,
           multipliers 1,2,2,2, attention at 16x16, dropout 0.1), T = 1000, β 1e-4 → 0.02, Adam
           lr 2e-4 with 5,000 warm-up steps, batch 128, 800k steps, gradient clipping at norm 1,
           EMA 0.9999, random horizontal flips (Appendix B and the released configs), σ_t² = β_t
    mini   scikit-learn's 8x8 digits: pixel-space diffusion on 28x28 Fashion-MNIST does not fit the
           budget (measured: a 1.1M-parameter U-Net at 28x28 costs 1.1 GFLOP per training image,
           ~1 s per batch of 64 on 2 cores, and 1,000 samples × 50 steps another ~6 min per arm).
           The same U-Net class at ch 16, multipliers 1,2, one ResBlock per level, attention at
           4x4 (177k parameters per arm); the paper's T = 1000 and β schedule for training.
           Changed: Adam lr 1e-3 with 100 warm-up steps, batch 64 for 1,000 steps, EMA 0.995 (a
           0.9999 average needs ~10⁴ steps to forget its initialisation), no flips (digits are
           not mirror-symmetric), and sampling walks a respaced subsequence of 50 of the 1,000
           timesteps (Nichol & Dhariwal, 2021) — the same ᾱ_t at the visited steps, so the
           network is used at the t it was trained on; 500 samples per Fréchet score.

Both arms — L_simple and L_vlb — are the same network and optimiser, trained side by side on the
same images, timesteps and noise; each samples from its EMA weights with the same noise.

Metrics: fd_<data>_classifier (the L_simple arm's samples), vlb_fd_<data>_classifier, fd_gain =
vlb − simple, <arm>_test_loss_simple (held-out Eq. 14 at fixed t and ε).
Figures: samples.png, samples_vlb.png and reverse_process.png (x_T … x_0 of Algorithm 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from papercli.methods.diffusion import GaussianDiffusion, VarType, linear_betas, sqrt_linear_betas
from papercli.methods.ema import EMA
from papercli.models.diffusion_unet import DiffusionUNet, DiffusionUNetConfig
from papercli.recipes._generative import GenerativeConfig, ImageGenerativeRecipe, save_grid
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import run

ARMS = ("simple", "vlb")  # Table 2: L_simple and the true bound, both with fixed isotropic Σ


@dataclass
class DDPMConfig(GenerativeConfig):
    dataset: Literal["fashion-mnist", "digits", "cifar10"] = "cifar10"
    arms: tuple[str, ...] = ARMS
    # the U-Net (Appendix B)
    ch: int = bounded(128, ge=1)
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = bounded(2, ge=1)
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = fraction(0.1)
    groups: int = bounded(32, ge=1)
    # the diffusion (Section 4)
    T: int = bounded(1000, ge=2)
    beta_1: float = bounded(1e-4, gt=0.0, lt=1.0)
    beta_T: float = bounded(0.02, gt=0.0, lt=1.0)
    beta_schedule: Literal["linear", "sqrt-linear"] = "linear"  # sqrt-linear: latent diffusion's
    var_type: Literal["fixedlarge", "fixedsmall"] = "fixedlarge"
    sample_steps: int = bounded(1000, ge=1)  # < T: a respaced subsequence of the T steps
    # optimisation (Appendix B)
    lr: float = bounded(2e-4, gt=0.0)
    warmup: int = bounded(5000, ge=0)
    ema_decay: float = fraction(0.9999)
    hflip: bool = True
    strip_rows: int = bounded(8, ge=1)  # reverse-process strip: samples shown …
    strip_cols: int = bounded(10, ge=2)  # … at this many timesteps from x_T to x_0


PAPER = DDPMConfig(
    steps=800_000,
    batch_size=128,
    grad_clip=1.0,
    eval_every=50_000,
    log_every=500,
    fd_samples=10_000,
)
MINI = DDPMConfig(
    dataset="digits",
    ch=16,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    groups=8,
    dropout=0.0,
    lr=1e-3,
    warmup=100,
    ema_decay=0.995,
    hflip=False,
    sample_steps=50,
    steps=1000,
    batch_size=64,
    grad_clip=1.0,
    eval_every=1000,
    log_every=50,
    fd_samples=500,
    fd_classifier_steps=800,
)


def unet_config(cfg: DDPMConfig, channels: int, side: int) -> DiffusionUNetConfig:
    return DiffusionUNetConfig(
        in_channels=channels,
        resolution=side,
        ch=cfg.ch,
        ch_mult=cfg.ch_mult,
        num_res_blocks=cfg.num_res_blocks,
        attn_resolutions=cfg.attn_resolutions,
        dropout=cfg.dropout,
        groups=cfg.groups,
    )


def diffusion_for(cfg: DDPMConfig) -> GaussianDiffusion:
    betas = {"linear": linear_betas, "sqrt-linear": sqrt_linear_betas}[cfg.beta_schedule]
    var: VarType = cfg.var_type
    return GaussianDiffusion(betas(cfg.T, cfg.beta_1, cfg.beta_T), var)


def warmup_adam(params, cfg: DDPMConfig):
    """Adam with the learning rate ramped linearly over `warmup` steps (Appendix B)."""
    opt = torch.optim.Adam(params, lr=cfg.lr)
    ramp = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup) if cfg.warmup else 1.0
    )
    return opt, ramp


def diffusion_batch(diffusion: GaussianDiffusion, x0: torch.Tensor, g: torch.Generator):
    """Uniform t and ε ~ N(0, I) for each image (Algorithm 1), drawn on the CPU generator."""
    t = torch.randint(diffusion.T, (len(x0),), generator=g).to(x0.device)
    return t, torch.randn(x0.shape, generator=g).to(x0.device)


class DDPMRecipe(ImageGenerativeRecipe):
    paper = "ddpm"
    config_class = DDPMConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: DDPMConfig

    def setup_data(self) -> None:
        super().setup_data()
        self.diffusion = diffusion_for(self.cfg)
        self.sampler = self.diffusion.respaced(self.cfg.sample_steps)

    def build_model(self) -> nn.Module:
        unknown = set(self.cfg.arms) - set(ARMS)
        if unknown:
            raise ValueError(
                f"unknown arm(s) {', '.join(sorted(unknown))} (known: {', '.join(ARMS)})"
            )
        c, side = self.spec.shape[0], self.spec.shape[-1]
        return nn.ModuleDict(
            {arm: DiffusionUNet(unet_config(self.cfg, c, side)) for arm in self.cfg.arms}
        )

    def configure_optimizers(self, model: nn.Module):
        # the model is on its device now: the EMA copies start from the same weights there
        self.ema = {arm: EMA(m, self.cfg.ema_decay) for arm, m in model.items()}
        return {arm: warmup_adam(m.parameters(), self.cfg) for arm, m in model.items()}

    def train_batch(self, step: int, micro: int = 0):
        x0 = self.train_images(step, micro) * 2 - 1  # [0, 1] -> [−1, 1] (Section 4)
        g = self.ctx.generator(step, self.ctx.shard(micro))
        if self.cfg.hflip:
            flip = torch.rand(len(x0), generator=g).to(x0.device) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        return x0, *diffusion_batch(self.diffusion, x0, g)

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Every arm sees the same x_0, t and ε; each loss reaches only its own network."""
        x0, t, noise = batch
        d = self.diffusion
        objective = {"simple": d.loss_simple, "vlb": d.loss_vlb}
        return {arm: objective[arm](m, x0, t, noise).mean() for arm, m in model.items()}

    def train_step(self, step: int, trainer) -> dict[str, float]:
        losses = trainer.accumulate(step, self.loss)
        trainer.step_optimizers()
        for arm, ema in self.ema.items():
            ema.update(trainer.model[arm])
        return losses

    def state_dict(self) -> dict:
        return {"ema": {arm: e.state_dict() for arm, e in self.ema.items()}}

    def load_state_dict(self, state: dict) -> None:
        for arm, s in state.get("ema", {}).items():
            self.ema[arm].load_state_dict(s)

    def sample_shape(self, arm: str) -> tuple[int, ...]:
        return self.spec.shape

    def to_images(self, arm: str, x: torch.Tensor) -> torch.Tensor:
        """What the sampler returns (here: pixels in [−1, 1]) as images in [0, 1]."""
        return (x + 1) / 2

    def samples(self, arm: str, n: int, seed: int = 0, snapshots: int = 0):
        """n images in [0, 1] from the arm's EMA network (and the reverse-process snapshots)."""
        net = self.ema[arm].model
        g = torch.Generator().manual_seed(seed)
        parts, strip = [], []
        for i in range(0, n, 500):  # bounded memory for large n
            shape = (min(500, n - i), *self.sample_shape(arm))
            x, s = self.sampler.sample(
                net, shape, g, self.ctx.device, snapshots=snapshots if i == 0 else 0
            )
            parts.append(self.to_images(arm, x))
            strip = strip or [self.to_images(arm, v) for v in s]
        return torch.cat(parts), strip

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        metrics: dict[str, float] = {}
        x0 = self.test_x[:500].to(self.ctx.device) * 2 - 1
        t, noise = diffusion_batch(self.diffusion, x0, torch.Generator().manual_seed(1234))
        for arm in model:
            net = self.ema[arm].model
            metrics[f"{arm}_test_loss_simple"] = float(
                self.diffusion.loss_simple(net, x0, t, noise).mean()
            )
            prefix = "" if arm == "simple" else f"{arm}_"
            metrics.update(self.sample_quality(self.samples(arm, self.cfg.fd_samples)[0], prefix))
        if {"simple", "vlb"} <= set(model):
            metrics["fd_gain"] = metrics[f"vlb_{self.fd_name}"] - metrics[self.fd_name]
        return metrics

    def plots(self, model: nn.Module, run_dir: Path) -> None:
        with torch.no_grad():
            for arm in model:
                save_grid(
                    self.samples(arm, 100)[0],
                    run_dir / ("samples.png" if arm == "simple" else f"samples_{arm}.png"),
                    f"DDPM samples, L_{arm} (EMA, {self.sampler.T} sampling steps)",
                )
            self.save_strip("simple" if "simple" in model else next(iter(model)), run_dir)

    def save_strip(self, arm: str, run_dir: Path) -> None:
        """reverse_process.png: row r is sample r from x_T (left) to x_0 (right)."""
        rows, cols = self.cfg.strip_rows, min(self.cfg.strip_cols, self.sampler.T + 1)
        _, strip = self.samples(arm, rows, seed=1, snapshots=cols)
        grid = torch.stack(strip, dim=1).flatten(0, 1)
        title = f"reverse process x_T … x_0 ({arm})"
        save_grid(grid, run_dir / "reverse_process.png", title, cols)


if __name__ == "__main__":
    run(DDPMRecipe)
