"""High-Resolution Image Synthesis with Latent Diffusion Models (Rombach et al., 2022,
arXiv:2112.10752).

Central claim (Section 3, Section 4.1, Fig. 6): separate perceptual compression from generation.
First train an autoencoder — encoder E, decoder D, z = E(x) ∈ R^{h×w×c}, downsampling factor
f = H/h — with a KL-regularisation "slight KL-penalty towards a standard normal on the learned
latent" (Section 3.1); then train a diffusion model on z with the DDPM objective

    L_LDM = E_{E(x), ε ~ N(0,1), t} ‖ε − ε_θ(z_t, t)‖²                                (Eq. 2)

and decode its samples with D. Fig. 6: with f = 4 … 16 the latent models reach far better sample
quality (FID) than pixel-space diffusion (LDM-1) for the same training budget — "LDM-1 requires
substantially larger training times", the diffusion U-Net no longer spends its compute on
imperceptible pixel detail.

Here the autoencoder is `papercli.models.autoencoder_kl` (the released KL-f4 layout); the latent
denoiser and the pixel-space baseline are both the DDPM U-Net (`papercli.models.diffusion_unet`),
trained and sampled by `papercli.methods.diffusion` with latent diffusion's own schedule (√β linear
from 0.0015 to 0.0195, T = 1000, released configs). The latent is scaled to unit variance before
diffusion (Section 4.3.2 / Appendix G: "rescale the latent by the component-wise standard
deviation"; one scalar here, as the released code's `scale_factor`).

    paper  CelebA-HQ 256x256-shaped: KL-f4 autoencoder (ch 128, multipliers 1,2,4, 2 ResBlocks,
           z 64x64x3, KL weight 1e-6; trained with L1 + LPIPS + a patch discriminator) and the
           LDM-4 U-Net of the paper's unconditional table (ch 224, multipliers 1,2,3,4, attention
           at 32, 16, 8, 2 ResBlocks: 274M parameters), batch 48, lr 9.6e-5 (the released
           base_learning_rate 2e-6 × batch 48), 410k steps. No CelebA-HQ loader exists here yet:
           --data must hold images of that shape (see the data-set registry).
    mini   Fashion-MNIST 28x28: a KL-f4 autoencoder (ch 8, multipliers 1,2,2, 1 ResBlock,
           z 7x7x3, KL weight 1e-6, L1 reconstruction only — the perceptual and adversarial
           losses need a pretrained VGG and a second network, dropped; Adam lr 2e-3), trained
           first for `ae_fraction` = 30 % of the 600 steps of 32 images, then frozen; the latent
           U-Net (ch 16, multipliers 1,2, attention at 4x4) for the other 420. The pixel-space
           baseline (the same U-Net width, multipliers 1,2,2, attention at 7x7) trains on the same
           batches for as many steps as buy the same training FLOPs as autoencoder and latent
           model together (counted with torch's FlopCounterMode, forward and backward, the frozen
           encoder's forward included): 79 steps. Both: lr 1e-3 (50 warm-up steps), EMA 0.99,
           25 respaced sampling steps of the T = 1000, 300 samples per Fréchet score.

Metrics: fd_<data>_classifier (latent model, decoded samples), pixel_fd_<data>_classifier,
fd_gain = pixel − latent, ae_recon_mse and ae_psnr (held-out images in [0, 1]), pixel_steps,
latent_tflops / pixel_tflops (training FLOPs each side spent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from papercli.methods.ema import EMA
from papercli.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from papercli.models.diffusion_unet import DiffusionUNet
from papercli.recipes._generative import save_grid
from papercli.recipes.ddpm import DDPMConfig, DDPMRecipe, diffusion_batch, unet_config, warmup_adam
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import run

LATENT_ARMS = ("latent", "pixel")  # each samples from its own EMA U-Net


@dataclass
class LDMConfig(DDPMConfig):
    dataset: Literal["fashion-mnist", "digits", "cifar10", "imagenet"] = "fashion-mnist"
    image_size: int = bounded(0, ge=0)  # 0: the data set's own side
    arms: tuple[str, ...] = LATENT_ARMS
    beta_schedule: Literal["linear", "sqrt-linear"] = "sqrt-linear"  # the released configs
    # the first stage (Section 3.1)
    ae_ch: int = bounded(128, ge=1)
    ae_ch_mult: tuple[int, ...] = (1, 2, 4)  # f = 2^(len − 1)
    ae_num_res_blocks: int = bounded(2, ge=1)
    z_channels: int = bounded(3, ge=1)
    kl_weight: float = bounded(1e-6, ge=0.0)
    ae_lr: float = bounded(4.5e-6, gt=0.0)
    ae_fraction: float = fraction(0.3)  # share of the steps that train the autoencoder
    # the pixel-space baseline (LDM-1): the latent U-Net's width, more levels for more pixels
    pixel_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    pixel_attn_resolutions: tuple[int, ...] = (32, 16, 8)


PAPER = LDMConfig(
    dataset="imagenet",  # a folder of images at 256x256: see the docstring
    image_size=256,
    ch=224,
    ch_mult=(1, 2, 3, 4),
    attn_resolutions=(32, 16, 8),
    dropout=0.0,
    beta_1=0.0015,
    beta_T=0.0195,
    lr=9.6e-5,
    warmup=0,
    ema_decay=0.9999,
    hflip=True,
    steps=410_000,
    batch_size=48,
    eval_every=50_000,
    log_every=500,
    fd_samples=10_000,
)
MINI = LDMConfig(
    dataset="fashion-mnist",
    ch=16,
    ch_mult=(1, 2),
    attn_resolutions=(4,),
    num_res_blocks=1,
    groups=4,
    dropout=0.0,
    beta_1=0.0015,
    beta_T=0.0195,
    lr=1e-3,
    warmup=50,
    ema_decay=0.99,
    hflip=False,
    sample_steps=25,
    ae_ch=8,
    ae_ch_mult=(1, 2, 2),
    ae_num_res_blocks=1,
    ae_lr=2e-3,
    ae_fraction=0.3,
    pixel_ch_mult=(1, 2, 2),
    pixel_attn_resolutions=(7,),
    steps=600,
    batch_size=32,
    grad_clip=1.0,
    eval_every=600,
    log_every=50,
    fd_samples=300,
)


def train_flops(model_step, *inputs: torch.Tensor) -> int:
    """FLOPs of one training step on one image (forward + backward), counted on the meta device."""
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        model_step(*inputs).sum().backward()
    return counter.get_total_flops()


class LatentDiffusionRecipe(DDPMRecipe):
    paper = "latent-diffusion"
    config_class = LDMConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: LDMConfig

    # --- model ------------------------------------------------------------------------------------
    @property
    def ae_config(self) -> AutoencoderKLConfig:
        return AutoencoderKLConfig(
            in_channels=self.spec.shape[0],
            z_channels=self.cfg.z_channels,
            ch=self.cfg.ae_ch,
            ch_mult=self.cfg.ae_ch_mult,
            num_res_blocks=self.cfg.ae_num_res_blocks,
            groups=self.cfg.groups,
        )

    @property
    def image_shape(self) -> tuple[int, ...]:
        c, side = self.spec.shape[0], self.cfg.image_size or self.spec.shape[-1]
        return (c, side, side)

    def sample_shape(self, arm: str) -> tuple[int, ...]:
        if arm == "pixel":
            return self.image_shape
        side = -(-self.image_shape[-1] // self.ae_config.factor)  # 28 / 4 = 7, 256 / 4 = 64
        return (self.cfg.z_channels, side, side)

    def build_model(self) -> nn.Module:
        unknown = set(self.cfg.arms) - set(LATENT_ARMS)
        if unknown or not self.cfg.arms:
            raise ValueError(f"arms must be among {', '.join(LATENT_ARMS)}")
        parts: dict[str, nn.Module] = {"autoencoder": AutoencoderKL(self.ae_config)}
        if "latent" in self.cfg.arms:
            z, _, zside = self.sample_shape("latent")
            parts["latent"] = DiffusionUNet(unet_config(self.cfg, z, zside))
        if "pixel" in self.cfg.arms:
            c, _, side = self.image_shape
            pixel = replace(
                unet_config(self.cfg, c, side),
                ch_mult=self.cfg.pixel_ch_mult,
                attn_resolutions=self.cfg.pixel_attn_resolutions,
            )
            parts["pixel"] = DiffusionUNet(pixel)
        return nn.ModuleDict(parts)

    def configure_optimizers(self, model: nn.Module):
        self.ema = {arm: EMA(model[arm], self.cfg.ema_decay) for arm in self.cfg.arms}
        self.budget(model)
        opts = {
            "autoencoder": torch.optim.Adam(model["autoencoder"].parameters(), lr=self.cfg.ae_lr)
        }
        return {
            **opts,
            **{arm: warmup_adam(model[arm].parameters(), self.cfg) for arm in self.cfg.arms},
        }

    # --- equal compute ----------------------------------------------------------------------------
    @property
    def ae_steps(self) -> int:
        return round(self.cfg.ae_fraction * self.cfg.steps)

    def budget(self, model: nn.Module) -> None:
        """Training FLOPs per image of each part (forward + backward, counted on the meta device);
        the pixel arm gets the steps that spend what autoencoder and latent model spend together."""
        with torch.device("meta"):
            ae = AutoencoderKL(self.ae_config)
            x = torch.zeros(1, *self.image_shape)
            z = torch.zeros(1, *self.sample_shape("latent"))
            t = torch.zeros(1, dtype=torch.long)
            flops = {"autoencoder": train_flops(lambda x: ae(x, z)["recon"], x)}
            if "latent" in model:
                encode = train_flops(lambda x: ae.encoder(x)[0], x) / 3  # forward only
                flops["latent"] = train_flops(DiffusionUNet(model["latent"].cfg), z, t) + encode
            if "pixel" in model:
                flops["pixel"] = train_flops(DiffusionUNet(model["pixel"].cfg), x, t)
        b, latent_steps = self.cfg.batch_size, self.cfg.steps - self.ae_steps
        spent = (self.ae_steps * flops["autoencoder"] + latent_steps * flops.get("latent", 0)) * b
        self.spent = {"latent": spent}
        self.pixel_steps = 0
        if "pixel" in model:
            self.pixel_steps = min(self.cfg.steps, math.floor(spent / (flops["pixel"] * b)))
            self.spent["pixel"] = self.pixel_steps * flops["pixel"] * b

    # --- training ---------------------------------------------------------------------------------
    def train_batch(self, step: int, micro: int = 0):
        x0 = self.train_images(step, micro) * 2 - 1
        g = self.ctx.generator(step, self.ctx.shard(micro))
        t, noise = diffusion_batch(self.diffusion, x0, g)
        z_shape = (len(x0), *self.sample_shape("latent"))
        eps_z, noise_z = (torch.randn(z_shape, generator=g).to(x0.device) for _ in range(2))
        return x0, t, noise, eps_z, noise_z

    def ae_loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """L1 reconstruction + kl_weight · KL(q(z|x) ‖ N(0, I)), per image (Section 3.1)."""
        x0, _, _, eps_z, _ = batch
        out = model["autoencoder"](x0, eps_z)
        pixels = x0[0].numel()  # both terms per pixel: the L1 mean and the KL sum over z / pixels
        return {
            "ae_rec": (out["recon"] - x0).abs().mean(),
            "ae_kl": self.cfg.kl_weight * out["kl"].mean() / pixels,
        }

    @torch.no_grad()
    def encode(self, ae: nn.Module, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """A posterior sample of z, scaled to unit variance (the frozen first stage)."""
        mean, logvar = ae.encoder(x0)
        return (mean + torch.exp(0.5 * logvar) * eps) * self.latent_scale(ae)

    def latent_scale(self, ae: nn.Module) -> float:
        """1 / std of the latents of 1,000 training images (cached once the autoencoder is
        frozen; recomputed after a resume, from the same weights)."""
        if getattr(self, "_scale", None) is None:
            with torch.no_grad():
                mean, _ = ae.encoder(self.train_x[:1000].to(self.ctx.device) * 2 - 1)
            self._scale = float(1.0 / mean.std().clamp_min(1e-6))
        return self._scale

    def latent_loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x0, t, _, eps_z, noise_z = batch
        z = self.encode(model["autoencoder"], x0, eps_z)
        return {"latent": self.diffusion.loss_simple(model["latent"], z, t, noise_z).mean()}

    def pixel_loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x0, t, noise, _, _ = batch
        return {"pixel": self.diffusion.loss_simple(model["pixel"], x0, t, noise).mean()}

    def train_step(self, step: int, trainer) -> dict[str, float]:
        logged: dict[str, float] = {}
        if step < self.ae_steps:  # stage 1: the autoencoder
            logged.update(trainer.accumulate(step, self.ae_loss))
            trainer.step_optimizers(["autoencoder"])
            self._scale = None  # the latent scale is measured on the final autoencoder
        elif "latent" in self.cfg.arms:  # stage 2: diffusion on the frozen autoencoder's latents
            logged.update(trainer.accumulate(step, self.latent_loss))
            trainer.step_optimizers(["latent"])
            self.ema["latent"].update(trainer.model["latent"])
        if "pixel" in self.cfg.arms and step < self.pixel_steps:  # LDM-1 on the same images
            logged.update(trainer.accumulate(step, self.pixel_loss))
            trainer.step_optimizers(["pixel"])
            self.ema["pixel"].update(trainer.model["pixel"])
        logged["loss"] = sum(v for k, v in logged.items() if k != "loss")
        return logged

    # --- evaluation ---------------------------------------------------------------------------------
    def to_images(self, arm: str, x: torch.Tensor) -> torch.Tensor:
        if arm == "latent":  # undo the scaling, decode with D
            ae = self._model["autoencoder"]
            x = ae.decoder(x / self.latent_scale(ae))
        return ((x + 1) / 2).clamp(0, 1)

    def reconstruct(self, ae: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """D(E(x)) at the posterior mean, images in [0, 1]."""
        return self.to_images("pixel", ae.decoder(ae.encoder(x * 2 - 1)[0]))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self._model = model
        ae = model["autoencoder"]
        x = self.test_x[:1000].to(self.ctx.device)
        mse = float(F.mse_loss(self.reconstruct(ae, x), x))
        metrics = {"ae_recon_mse": mse, "ae_psnr": 10 * math.log10(1 / max(mse, 1e-12))}
        for arm in self.cfg.arms:
            prefix = "" if arm == "latent" else f"{arm}_"
            metrics.update(self.sample_quality(self.samples(arm, self.cfg.fd_samples)[0], prefix))
            metrics[f"{arm}_tflops"] = self.spent[arm] / 1e12
        if "pixel" in self.cfg.arms:
            metrics["pixel_steps"] = float(self.pixel_steps)
            if "latent" in self.cfg.arms:
                metrics["fd_gain"] = metrics[f"pixel_{self.fd_name}"] - metrics[self.fd_name]
        return metrics

    def plots(self, model: nn.Module, run_dir: Path) -> None:
        self._model = model
        with torch.no_grad():
            for arm in self.cfg.arms:
                name = "samples.png" if arm == "latent" else f"samples_{arm}.png"
                title = f"{arm} diffusion samples (EMA, {self.sampler.T} sampling steps)"
                save_grid(self.samples(arm, 100)[0], run_dir / name, title)
            self.save_strip(self.cfg.arms[0], run_dir)
            x = self.test_x[:50].to(self.ctx.device)
            recon = self.reconstruct(model["autoencoder"], x)
            title = f"test images / KL-f{self.ae_config.factor} reconstructions"
            save_grid(torch.cat([x, recon]), run_dir / "reconstructions.png", title)


if __name__ == "__main__":
    run(LatentDiffusionRecipe)
