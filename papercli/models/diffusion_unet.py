"""The time-conditioned U-Net of DDPM (Ho, Jain & Abbeel, 2020, arXiv:2006.11239), Appendix B.

"Our neural network architecture follows the backbone of PixelCNN++, which is a U-Net based on a
Wide ResNet. We replaced weight normalization with group normalization. Our 32x32 models use four
feature map resolutions (32x32 to 4x4) … two convolutional residual blocks per resolution level and
self-attention blocks at the 16x16 resolution between the convolutional blocks. Diffusion time t is
specified by adding the Transformer sinusoidal position embedding into each residual block."

Laid out as in the authors' released code (`diffusion_tf/models/unet.py`):
- time: sinusoidal embedding of t (ch dims) -> Linear(ch, 4ch) -> SiLU -> Linear(4ch, 4ch);
  every ResBlock adds Linear(SiLU(emb)) to its hidden map (one bias per channel);
- ResBlock: GroupNorm(32) -> SiLU -> conv3x3 -> (+ time) -> GroupNorm -> SiLU -> dropout ->
  conv3x3, plus a 1x1 "network-in-network" shortcut when the channel count changes;
- attention: GroupNorm, then single-head self-attention over the H·W positions with 1x1 q, k, v
  and output projections, residual;
- down path: per level `num_res_blocks` ResBlocks (+ attention at the listed resolutions), then a
  stride-2 conv3x3 (not after the last level); every output is kept for a skip connection;
- middle: ResBlock, attention, ResBlock;
- up path: per level `num_res_blocks + 1` ResBlocks on [h, skip] concatenations, then nearest
  2x upsampling + conv3x3 (not after the first level);
- out: GroupNorm -> SiLU -> conv3x3 to the image channels (ε has the image's shape).

The CIFAR-10 model (ch 128, multipliers 1,2,2,2, attention at 16, dropout 0.1) has 35,746,307
parameters — the paper's "35.7 million". The same class runs the mini (fewer channels, 28x28) and
latent diffusion (latent channels in and out, attention at the latent resolution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DiffusionUNetConfig:
    in_channels: int = 3
    out_channels: int | None = None  # None: same as in_channels (ε-prediction)
    resolution: int = 32  # input side, to place attention by resolution
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    groups: int = 32  # GroupNorm groups (the paper's 32)


CONFIGS = {
    "ddpm-cifar10": DiffusionUNetConfig(),  # Appendix B: 35.7M parameters
    # CelebA-HQ / LSUN 256x256 (Appendix B: six resolutions, 114M parameters)
    "ddpm-256": DiffusionUNetConfig(resolution=256, ch_mult=(1, 1, 2, 2, 4, 4)),
}


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The Transformer's sinusoidal position embedding of (integer) timesteps, shape (N, dim):
    [sin(t·ω_k), cos(t·ω_k)] with ω_k = 10000^(−k/(dim/2−1)), as in the released code."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1)
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


class ResBlock(nn.Module):
    """`temb` = 0: no time input (the latent-diffusion autoencoder's blocks)."""

    def __init__(self, cin: int, cout: int, temb: int, dropout: float, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb, cout) if temb else None
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.temb_proj is not None:
            h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions (the released code's attn_block)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)  # q, k and v: three 1x1 projections
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj_out(a.transpose(1, 2).reshape(n, c, h, w))


class DiffusionUNet(nn.Module):
    """ε_θ(x_t, t): the noise in x_t, the same shape as x_t."""

    def __init__(self, cfg: DiffusionUNetConfig = DiffusionUNetConfig()):
        super().__init__()
        self.cfg = cfg
        ch, g, drop = cfg.ch, cfg.groups, cfg.dropout
        temb = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()  # (block, is_resblock) in order; every output is a skip
        skips, cur, res, sides = [ch], ch, cfg.resolution, []
        for level, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(ResBlock(cur, ch * mult, temb, drop, g))
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    self.down.append(AttnBlock(cur, g))
                skips.append(cur)
            sides.append(res)
            if level != len(cfg.ch_mult) - 1:
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
                res = (res + 1) // 2  # an odd side (7) rounds up (4)

        self.mid = nn.ModuleList([ResBlock(cur, cur, temb, drop, g), AttnBlock(cur, g)])
        self.mid.append(ResBlock(cur, cur, temb, drop, g))

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.ch_mult))):
            res = sides[level]
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(ResBlock(cur + skips.pop(), ch * mult, temb, drop, g))
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    self.up.append(AttnBlock(cur, g))
            if level != 0:
                self.up.append(Upsample(cur))
        self.norm_out = _norm(cur, g)
        self.conv_out = nn.Conv2d(cur, cfg.out_channels or cfg.in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.temb(timestep_embedding(t, self.cfg.ch))
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            if isinstance(block, AttnBlock):
                h = hs[-1] = block(h)  # attention refines the ResBlock output that is skipped
                continue
            h = block(h, temb) if isinstance(block, ResBlock) else block(h)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, temb)), temb)
        for block in self.up:
            if isinstance(block, ResBlock):
                skip = hs.pop()
                if skip.shape[-1] != h.shape[-1]:  # an odd side (7 -> 4 -> 8): crop back to 7
                    h = h[..., : skip.shape[-2], : skip.shape[-1]]
                h = block(torch.cat([h, skip], dim=1), temb)
            else:
                h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then conv3x3 (resamp_with_conv)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def diffusion_unet(name: str = "", **overrides) -> DiffusionUNet:
    """A registered config by name, or the CIFAR-10 one, with fields overridden."""
    base = CONFIGS.get(name, DiffusionUNetConfig())
    return DiffusionUNet(DiffusionUNetConfig(**{**base.__dict__, **overrides}))


def _register() -> None:
    from papercli.models import register_model

    for name in CONFIGS:
        register_model(name, diffusion_unet, paper="ddpm", name=name)


_register()
