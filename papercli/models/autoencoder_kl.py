"""The KL-regularised autoencoder of latent diffusion (Rombach et al., 2022, arXiv:2112.10752,
Section 3.1 and Appendix G), laid out as the released `AutoencoderKL` (`ldm/modules/
diffusionmodules/model.py`: Encoder, Decoder).

An encoder E maps an image x ∈ R^{H×W×3} to a latent z = E(x) ∈ R^{h×w×c} with h = H/f, w = W/f
(downsampling factor f = 2^(levels − 1)); the decoder D reconstructs x̃ = D(z). "KL-reg." puts a
slight KL penalty towards a standard normal on the learned latent, as in a VAE (weight ~1e-6), so
the latent space keeps its detail while its scale stays bounded.

- Encoder: conv3x3 -> per level `num_res_blocks` ResBlocks (no time input), a stride-2 conv3x3
  between levels -> middle ResBlock, self-attention, ResBlock -> GroupNorm, SiLU, conv3x3 to 2c
  (mean and log-variance of a diagonal Gaussian) -> 1x1 "quant_conv".
- Decoder: 1x1 "post_quant_conv" -> conv3x3 -> middle ResBlock, attention, ResBlock -> per level
  (deepest first) `num_res_blocks + 1` ResBlocks, nearest 2x upsampling + conv3x3 between levels
  -> GroupNorm, SiLU, conv3x3 to the image channels.

The paper's KL-f4 model (`autoencoder_kl_64x64x3`: ch 128, multipliers 1,2,4, two ResBlocks per
level, c = 3) is `CONFIGS["kl-f4"]`; the perceptual (LPIPS) and patch-discriminator losses it is
trained with are not part of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from papercli.models.diffusion_unet import AttnBlock, ResBlock, Upsample, _norm


@dataclass(frozen=True)
class AutoencoderKLConfig:
    in_channels: int = 3
    z_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)  # f = 2^(len − 1) = 4
    num_res_blocks: int = 2
    groups: int = 32

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


CONFIGS = {"kl-f4": AutoencoderKLConfig()}


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderKLConfig):
        super().__init__()
        ch, g = cfg.ch, cfg.groups
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, ch, 3, padding=1)]
        cur = ch
        for level, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(cur, ch * mult, 0, 0.0, g))
                cur = ch * mult
            if level != len(cfg.ch_mult) - 1:
                layers.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
        layers += [ResBlock(cur, cur, 0, 0.0, g), AttnBlock(cur, g), ResBlock(cur, cur, 0, 0.0, g)]
        layers += [_norm(cur, g), nn.SiLU(), nn.Conv2d(cur, 2 * cfg.z_channels, 3, padding=1)]
        layers.append(nn.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1))  # quant_conv
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x)."""
        mean, logvar = self.layers(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderKLConfig):
        super().__init__()
        ch, g = cfg.ch, cfg.groups
        cur = ch * cfg.ch_mult[-1]
        layers: list[nn.Module] = [
            nn.Conv2d(cfg.z_channels, cfg.z_channels, 1),  # post_quant_conv
            nn.Conv2d(cfg.z_channels, cur, 3, padding=1),
            ResBlock(cur, cur, 0, 0.0, g),
            AttnBlock(cur, g),
            ResBlock(cur, cur, 0, 0.0, g),
        ]
        for level, mult in reversed(list(enumerate(cfg.ch_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResBlock(cur, ch * mult, 0, 0.0, g))
                cur = ch * mult
            if level != 0:
                layers.append(Upsample(cur))
        layers += [_norm(cur, g), nn.SiLU(), nn.Conv2d(cur, cfg.in_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class AutoencoderKL(nn.Module):
    def __init__(self, cfg: AutoencoderKLConfig = AutoencoderKLConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction of x through z = μ + σ ε, and the per-image KL(q(z|x) ‖ N(0, I))."""
        mean, logvar = self.encoder(x)
        z = mean + torch.exp(0.5 * logvar) * eps
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
        return {"recon": self.decoder(z), "kl": kl}


def autoencoder_kl(name: str = "", **overrides) -> AutoencoderKL:
    base = CONFIGS.get(name, AutoencoderKLConfig())
    return AutoencoderKL(AutoencoderKLConfig(**{**base.__dict__, **overrides}))


def _register() -> None:
    from papercli.models import register_model

    for name in CONFIGS:
        register_model(f"autoencoder-{name}", autoencoder_kl, paper="latent-diffusion", name=name)


_register()
