"""U-Net (Ronneberger, Fischer & Brox, 2015, arXiv:1505.04597), Fig. 1 and Section 2.

Contracting path: repeated blocks of two unpadded 3x3 convolutions, each followed by a ReLU, then a
2x2 max-pool with stride 2; the number of channels doubles at each downsampling (64 -> 1024).
Expanding path: a 2x2 up-convolution that halves the channels, concatenation with the centre crop of
the matching contracting feature map ("cropping is necessary due to the loss of border pixels in
every convolution"), two 3x3 convolutions with ReLU. A final 1x1 convolution maps 64 features to the
classes. No batch norm (it did not exist yet). With the paper's settings a 572x572 tile gives a
388x388 segmentation map.

`padding=1` keeps sizes (output = input); the mini recipe uses it with fewer channels so it trains on
a laptop CPU in minutes. Everything else is the same network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1
    num_classes: int = 2
    base_channels: int = 64  # the paper's 64 -> 128 -> 256 -> 512 -> 1024
    depth: int = 4  # number of 2x2 max-pool steps
    padding: int = 0  # 0 = the paper's unpadded ("valid") convolutions
    dropout: float = 0.0  # the paper puts drop-out at the end of the contracting path


CONFIGS = {
    "unet-paper": UNetConfig(),
    "unet-mini": UNetConfig(base_channels=16, depth=3, padding=1),
}


class DoubleConv(nn.Sequential):
    """conv 3x3 -> ReLU -> conv 3x3 -> ReLU (the blue arrows of Fig. 1)."""

    def __init__(self, cin: int, cout: int, padding: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=padding),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=padding),
            nn.ReLU(inplace=True),
        )


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig = UNetConfig()):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.base_channels * 2**i for i in range(cfg.depth + 1)]
        self.down = nn.ModuleList()
        cin = cfg.in_channels
        for w in widths:
            self.down.append(DoubleConv(cin, w, cfg.padding))
            cin = w
        self.dropout = nn.Dropout2d(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(
                nn.ConvTranspose2d(w * 2, w, kernel_size=2, stride=2)
            )  # "up-convolution"
            self.up_conv.append(DoubleConv(w * 2, w, cfg.padding))
        self.head = nn.Conv2d(widths[0], cfg.num_classes, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Section 3: weights from a Gaussian with std sqrt(2/N), N = incoming nodes of one neuron
        # (3*3*64 for a 3x3 conv with 64 input channels) — He initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                k = m.kernel_size[0] * m.kernel_size[1]
                fan_in = k * (m.in_channels if isinstance(m, nn.Conv2d) else m.out_channels)
                nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_in))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        x = self.dropout(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips), strict=True):
            x = up(x)
            x = conv(torch.cat([center_crop(skip, x.shape[-2:]), x], dim=1))
        return self.head(x)

    # --- geometry: which tile sizes work, and how much border each loses -----------------------
    def output_size(self, size: int) -> int:
        """Output side for an input side, or ValueError if a max-pool would see an odd size."""
        shrink = 2 * (2 - 2 * self.cfg.padding)  # two 3x3 convs, each loses 2 - 2*padding pixels
        for _ in range(self.cfg.depth):
            size -= shrink
            if size <= 0 or size % 2:
                raise ValueError("tile size does not pool evenly")
            size //= 2
        size -= shrink
        for _ in range(self.cfg.depth):
            size = size * 2 - shrink
        if size <= 0:
            raise ValueError("tile too small")
        return size

    def valid_input_size(self, at_least: int) -> int:
        """The smallest input side >= at_least that the network accepts (572 is one at paper scale)."""
        size = at_least
        while True:
            try:
                self.output_size(size)
                return size
            except ValueError:
                size += 1


def unet(name: str = "unet-paper", **overrides) -> UNet:
    cfg = CONFIGS[name]
    if overrides:
        cfg = UNetConfig(**{**cfg.__dict__, **overrides})
    return UNet(cfg)


def _register() -> None:
    from papercli.models import register_model

    for name in CONFIGS:
        register_model(name, unet, paper="unet", name=name)


_register()
