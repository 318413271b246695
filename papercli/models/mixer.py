"""MLP-Mixer (Tolstikhin et al., 2021, arXiv:2105.01601), Section 2 and Eq. 1.

The image is cut into S non-overlapping patches, each linearly projected to C channels (the
"per-patch fully-connected" layer: a convolution with kernel = stride = patch). Each Mixer layer
then applies two MLPs, with pre-LayerNorm and skip connections, to the S x C table X:

    U_{*,i} = X_{*,i} + W_2 σ(W_1 LayerNorm(X)_{*,i}),  i = 1…C    token mixing (across patches)
    Y_{j,*} = U_{j,*} + W_4 σ(W_3 LayerNorm(U)_{j,*}),  j = 1…S    channel mixing (per patch)  (1)

σ is GELU; the token-mixing MLP (hidden width D_S) is shared by all channels, the channel-mixing
MLP (hidden width D_C) by all patches. No attention, no position embeddings (token mixing is
sensitive to order). A final LayerNorm, global average pooling over patches and a zero-initialised
linear head classify. Sizes follow Table 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MixerConfig:
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    num_classes: int = 1000
    dim: int = 768  # C, hidden channels
    depth: int = 12  # number of Mixer layers
    token_mlp_dim: int = 384  # D_S
    channel_mlp_dim: int = 3072  # D_C
    dropout: float = 0.0

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


# Table 1 (S, B, L, H); "mini" is not from the paper: about ViT-mini/7's size (0.21M at 28 px)
SIZES = {
    "s": dict(dim=512, depth=8, token_mlp_dim=256, channel_mlp_dim=2048),
    "b": dict(dim=768, depth=12, token_mlp_dim=384, channel_mlp_dim=3072),
    "l": dict(dim=1024, depth=24, token_mlp_dim=512, channel_mlp_dim=4096),
    "h": dict(dim=1280, depth=32, token_mlp_dim=640, channel_mlp_dim=5120),
    "mini": dict(dim=64, depth=6, token_mlp_dim=32, channel_mlp_dim=256),
}


def config(name: str, **overrides) -> MixerConfig:
    """'mixer-b/16' -> Mixer-B with 16x16 patches (also 'Mixer-L/14', 'mixer_s_32')."""
    from papercli.models import sized_name

    size, patch = sized_name(name, "mixer", "Mixer", SIZES)
    return MixerConfig(**{"patch_size": patch, **SIZES[size], **overrides})


def mlp(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """W_2 σ(W_1 ·): two fully connected layers with a GELU between them."""
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
    )


class MixerBlock(nn.Module):
    def __init__(self, cfg: MixerConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.token_mlp = mlp(cfg.tokens, cfg.token_mlp_dim, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.channel_mlp = mlp(cfg.dim, cfg.channel_mlp_dim, cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, S, C)
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)  # Eq. 1, tokens
        return x + self.channel_mlp(self.norm2(x))  # Eq. 1, channels


class MlpMixer(nn.Module):
    def __init__(self, cfg: MixerConfig):
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError(
                f"image size {cfg.image_size} is not a multiple of the patch size {cfg.patch_size}"
            )
        self.cfg = cfg
        self.stem = nn.Conv2d(cfg.in_channels, cfg.dim, cfg.patch_size, stride=cfg.patch_size)
        self.blocks = nn.Sequential(*(MixerBlock(cfg) for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.weight)  # "zero-initialized" head, as in ViT (Section 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)  # (B, S, C): per-patch linear embedding
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))  # global average pooling over the patches


def mixer(name: str = "mixer-b/16", **overrides) -> MlpMixer:
    return MlpMixer(config(name, **overrides))


def _register() -> None:
    from papercli.models import ModelEntry, register_model, register_pattern

    for name in ("s/32", "s/16", "b/32", "b/16", "l/32", "l/16", "h/14", "mini/7"):
        register_model(f"mixer-{name}", mixer, paper="mlp-mixer", name=f"mixer-{name}")
    register_pattern(
        r"mixer[-_](s|b|l|h|mini)[/_](\d+)",
        lambda m: ModelEntry(
            m.group(0), mixer, {"name": f"mixer-{m.group(1)}/{m.group(2)}"}, "mlp-mixer"
        ),
    )


_register()
