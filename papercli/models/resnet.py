"""Residual networks (He, Zhang, Ren & Sun, 2015, arXiv:1512.03385) and their *plain* twins.

ImageNet family (Table 1): a 7x7/2 stem and 3x3/2 max-pool, four stages (64, 128, 256, 512 base
widths), basic blocks (two 3x3 convs; ResNet-18/34) or bottleneck blocks (1x1, 3x3, 1x1 with 4x
expansion; ResNet-50/101/152), global average pooling and a fully connected layer. Shortcuts are
identities, with a 1x1 projection where the shape changes (option B, Section 3.3). As in the paper,
a downsampling bottleneck puts its stride in the first 1x1 convolution.

CIFAR family (Section 4.2): a 3x3 stem with 16 filters, three stages of n basic blocks on 32/16/8
pixel maps with 16/32/64 filters, 6n+2 layers in all (ResNet-20/32/44/56/110), identity shortcuts
with zero-padding for the extra channels (option A, parameter-free).

A *plain* network is the same stack with every shortcut removed; it is what Fig. 4 and Fig. 6
compare against to show the degradation problem. BN follows every convolution (Section 3.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class ShortcutA(nn.Module):
    """Option A: identity, subsampled by the stride, with zero channels appended (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


def shortcut_b(cin: int, cout: int, stride: int) -> nn.Module:
    """Option B: identity where shapes match, otherwise a 1x1 projection (conv + BN)."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


def make_shortcut(
    cin: int, cout: int, stride: int, residual: bool, option: str
) -> nn.Module | None:
    """None for a plain block; option A or B otherwise."""
    if not residual:
        return None
    return ShortcutA(cin, cout, stride) if option == "A" else shortcut_b(cin, cout, stride)


class BasicBlock(nn.Module):
    """Fig. 2: y = F(x, {W_i}) + x with F = conv3x3-BN-ReLU-conv3x3-BN; ReLU after the addition (Eq. 1)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, residual: bool, option: str):
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = conv3x3(cin, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, cout), nn.BatchNorm2d(cout)
        self.shortcut = make_shortcut(cin, cout, stride, residual, option)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out, inplace=True)


class Bottleneck(nn.Module):
    """Fig. 5 (right): 1x1 reduce, 3x3, 1x1 restore (4x), plus the shortcut."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, residual: bool, option: str):
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = (
            nn.Conv2d(cin, width, 1, stride=stride, bias=False),
            nn.BatchNorm2d(width),
        )
        self.conv2, self.bn2 = conv3x3(width, width), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = make_shortcut(cin, cout, stride, residual, option)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out, inplace=True)


@dataclass(frozen=True)
class ResNetConfig:
    block: str  # "basic" | "bottleneck"
    layers: tuple[int, ...]  # blocks per stage
    widths: tuple[int, ...]  # base width per stage
    stem: str  # "imagenet" (7x7/2 + max-pool) | "cifar" (3x3, 16 filters)
    shortcut: str = "B"  # "A" (zero-padding identity) | "B" (projection when shapes change)
    residual: bool = True  # False: the plain twin
    num_classes: int = 1000
    in_channels: int = 3


class ResNet(nn.Module):
    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        self.cfg = cfg
        block = BasicBlock if cfg.block == "basic" else Bottleneck
        stem_width = cfg.widths[0]
        if cfg.stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(cfg.in_channels, stem_width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(
                conv3x3(cfg.in_channels, stem_width),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
            )
        stages, cin = [], stem_width
        for i, (n, width) in enumerate(zip(cfg.layers, cfg.widths, strict=True)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, width, stride, cfg.residual, cfg.shortcut))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, cfg.num_classes)
        for m in self.modules():  # He et al. 2015 ("Delving deep") initialisation, Section 3.4
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def feature_info(self) -> list[dict[str, int]]:
        """Channels and total stride of each stage's output (the maps `forward_features` returns)."""
        expansion = 4 if self.cfg.block == "bottleneck" else 1
        first = 4 if self.cfg.stem == "imagenet" else 1
        return [
            {"channels": w * expansion, "reduction": first * 2**i}
            for i, w in enumerate(self.cfg.widths)
        ]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output map (C2…C5 for the ImageNet family): what detection heads use."""
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


IMAGENET_LAYERS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)


def imagenet_resnet(depth: int, *, residual: bool = True, **overrides) -> ResNet:
    block, layers = IMAGENET_LAYERS[depth]
    cfg = ResNetConfig(
        block=block,
        layers=layers,
        widths=(64, 128, 256, 512),
        stem="imagenet",
        residual=residual,
        **overrides,
    )
    return ResNet(cfg)


def cifar_resnet(depth: int, *, residual: bool = True, width: int = 16, **overrides) -> ResNet:
    """6n+2 layers; `width` scales the 16/32/64 filters (the mini recipe uses 8 to fit a CPU)."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNets have 6n+2 layers; {depth} is not of that form")
    n = (depth - 2) // 6
    cfg = ResNetConfig(
        block="basic",
        layers=(n, n, n),
        widths=(width, 2 * width, 4 * width),
        stem="cifar",
        shortcut="A",
        residual=residual,
        **{"num_classes": 10, **overrides},
    )
    return ResNet(cfg)


def _register() -> None:
    from papercli.models import ModelEntry, register_model, register_pattern

    for depth in IMAGENET_LAYERS:
        register_model(f"resnet{depth}", imagenet_resnet, paper="resnet", depth=depth)
        register_model(
            f"plain{depth}", imagenet_resnet, paper="resnet", depth=depth, residual=False
        )
    for depth in CIFAR_DEPTHS:
        register_model(f"resnet{depth}-cifar", cifar_resnet, paper="resnet", depth=depth)
        register_model(
            f"plain{depth}-cifar", cifar_resnet, paper="resnet", depth=depth, residual=False
        )
    # any 6n+2 depth of the CIFAR family (Section 4.2), e.g. the tests' resnet8-cifar
    register_pattern(
        r"(resnet|plain)(\d+)-cifar",
        lambda m: ModelEntry(
            m.group(0),
            cifar_resnet,
            {"depth": int(m.group(2)), "residual": m.group(1) == "resnet"},
            "resnet",
        ),
    )


_register()
