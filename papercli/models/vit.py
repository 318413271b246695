"""Vision Transformer (Dosovitskiy et al., 2020, arXiv:2010.11929), Section 3.1 and Eq. 1-4.

    z0 = [x_class; x_p^1 E; …; x_p^N E] + E_pos          (1)  patch embedding, class token, positions
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                     (2)  pre-norm multi-head self-attention
    z_l = MLP(LN(z'_l)) + z'_l                            (3)  two-layer MLP with GELU
    y = LN(z_L^0)                                         (4)  the class token's final state

The patch projection E is a convolution with kernel = stride = patch size (the same linear map on
every flattened patch). Attention goes through `F.scaled_dot_product_attention`, so GPUs run fused
flash/memory-efficient kernels. Model sizes follow Table 1 (Base, Large, Huge); Ti and S are the
smaller widths DeiT introduced for the same architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    num_classes: int = 1000
    dim: int = 768  # D, the latent size
    depth: int = 12  # L, encoder blocks
    heads: int = 12
    mlp_dim: int = 3072
    dropout: float = 0.0  # Table 3: 0.1 for ImageNet-1k training

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


# Table 1 of the paper (+ DeiT's Ti/S). "ViT-B/16" = Base with 16x16 patches.
SIZES = {
    "ti": dict(dim=192, depth=12, heads=3, mlp_dim=768),
    "s": dict(dim=384, depth=12, heads=6, mlp_dim=1536),
    "b": dict(dim=768, depth=12, heads=12, mlp_dim=3072),
    "l": dict(dim=1024, depth=24, heads=16, mlp_dim=4096),
    "h": dict(dim=1280, depth=32, heads=16, mlp_dim=5120),
    # not from the paper: a laptop-sized ViT for the mini reproduction (0.2M parameters)
    "mini": dict(dim=64, depth=6, heads=4, mlp_dim=128),
}


def config(name: str, **overrides) -> ViTConfig:
    """'vit-b/16' -> Base with 16x16 patches (also 'ViT-L/14', 'vit_s_32')."""
    from papercli.models import sized_name

    size, patch = sized_name(name, "vit", "ViT", SIZES)
    return ViTConfig(**{"patch_size": patch, **SIZES[size], **overrides})


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # softmax(q k^T / sqrt(d_h)) v per head (Appendix A, Eq. 5-7), fused where the device allows
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, cfg.mlp_dim),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.mlp_dim, cfg.dim),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # Eq. 2
        return x + self.mlp(self.norm2(x))  # Eq. 3


class VisionTransformer(nn.Module):
    prefix_tokens = 1  # the class token (DeiT adds a distillation token)

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError(
                f"image size {cfg.image_size} is not a multiple of the patch size {cfg.patch_size}"
            )
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(
            cfg.in_channels, cfg.dim, cfg.patch_size, stride=cfg.patch_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(
            torch.randn(1, cfg.grid**2 + self.prefix_tokens, cfg.dim) * 0.02
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.Sequential(*(Block(cfg) for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # as in the official implementation: a zero-initialised classification head
        nn.init.zeros_(self.head.weight)
        fan_in = self.patch_embed.in_channels * self.cfg.patch_size**2
        nn.init.trunc_normal_(self.patch_embed.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.patch_embed.bias)

    def prefix(self, batch: int) -> list[torch.Tensor]:
        """The learned tokens put before the patches: the class token."""
        return [self.cls_token.expand(batch, -1, -1)]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 1-3: the encoder's final token states (B, prefix + N, D), before the last
        LayerNorm."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D): x_p E
        x = torch.cat([*self.prefix(x.shape[0]), x], dim=1) + self.positions(x.shape[1])  # Eq. 1
        return self.blocks(self.dropout(x))

    def positions(self, n_patches: int) -> torch.Tensor:
        """E_pos for an input of `n_patches` patches: the learned table, interpolated in 2D
        when the grid differs from the trained one (DINO's local crops are smaller images)."""
        if n_patches == self.cfg.grid**2:
            return self.pos_embed
        return self._interpolated(math.isqrt(n_patches))

    def _interpolated(self, new_grid: int) -> torch.Tensor:
        pos = self.pos_embed
        prefix, grid = pos[:, : self.prefix_tokens], pos[:, self.prefix_tokens :]
        g = self.cfg.grid
        grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid**2, -1)
        return torch.cat([prefix, grid], dim=1)

    @property
    def feature_info(self) -> list[dict[str, int]]:
        return [{"channels": self.cfg.dim, "reduction": self.cfg.patch_size}]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The normalised patch tokens as one (B, D, H/p, W/p) map (a plain-ViT detection
        backbone, as in ViTDet)."""
        tokens = self.norm(self.encode(x))[:, self.prefix_tokens :]
        b, n, d = tokens.shape
        side = int(n**0.5)
        return [tokens.transpose(1, 2).reshape(b, d, side, n // side)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encode(x)[:, 0]))  # Eq. 4, then the classifier

    def resize_pos_embed(self, image_size: int) -> None:
        """Section 3.2: fine-tuning at a higher resolution keeps the patch size, so the sequence is
        longer; the learned position embeddings are interpolated in 2D to the new grid."""
        with torch.no_grad():
            table = self._interpolated(image_size // self.cfg.patch_size)
        self.pos_embed = nn.Parameter(table)
        self.cfg = replace(self.cfg, image_size=image_size)


def vit(name: str = "vit-b/16", **overrides) -> VisionTransformer:
    return VisionTransformer(config(name, **overrides))


def _register() -> None:
    from papercli.models import ModelEntry, register_model, register_pattern

    # the paper's Table 1/5 models, DeiT's small sizes, and our laptop size
    for name in ("ti/16", "s/16", "s/32", "b/16", "b/32", "l/16", "l/32", "h/14", "mini/7"):
        register_model(f"vit-{name}", vit, paper="vit", name=f"vit-{name}")
    register_pattern(
        r"vit[-_/](ti|s|b|l|h|mini)[/_](\d+)",
        lambda m: ModelEntry(m.group(0), vit, {"name": f"vit-{m.group(1)}/{m.group(2)}"}, "vit"),
    )


_register()
