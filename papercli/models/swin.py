"""Swin Transformer (Liu et al., 2021, arXiv:2103.14030), Section 3 and Fig. 3.

    patch partition + linear embedding   a convolution with kernel = stride = patch (4 in the
                                         paper), then LayerNorm: an (H/4) x (W/4) grid of C channels
    stage k                              Swin blocks in pairs, W-MSA then SW-MSA (Eq. 3):
        ẑ^l   = W-MSA(LN(z^{l-1})) + z^{l-1}          z^l   = MLP(LN(ẑ^l)) + ẑ^l
        ẑ^l+1 = SW-MSA(LN(z^l)) + z^l                 z^l+1 = MLP(LN(ẑ^l+1)) + ẑ^l+1
    patch merging (stages 2-4)           each 2x2 group of neighbours concatenated (4C), LayerNorm,
                                         a linear map to 2C: half the resolution, twice the width
    head                                 LayerNorm, global average pool, a linear classifier

W-MSA is multi-head self-attention inside non-overlapping M x M windows, with a relative position
bias (Eq. 4): Attention(Q, K, V) = SoftMax(QKᵀ/√d + B)V, B taken from a learned table
B̂ ∈ R^{(2M−1)×(2M−1)} per head, since relative offsets along each axis lie in [−M+1, M−1].
SW-MSA (Sec. 3.2, Fig. 4) displaces the windows by ⌊M/2⌋: the map is rolled cyclically by −⌊M/2⌋
on both axes (`torch.roll`), attention runs in the regular windows of the rolled map with a mask
that keeps apart tokens which only became neighbours through the wrap-around, and the result is
rolled back. `shift=False` gives Table 4's "w/o shifting" ablation (every block W-MSA), with the
same parameters. As in the official code, a stage whose grid is no larger than the window uses one
window covering it and no shift. Sizes follow Sec. 3.3 (Swin-T/S/B/L).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SwinConfig:
    image_size: int = 224
    patch_size: int = 4
    in_channels: int = 3
    num_classes: int = 1000
    dim: int = 96  # C, the width of stage 1 (doubled by every patch merging)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    heads: tuple[int, ...] = (3, 6, 12, 24)
    window: int = 7  # M
    mlp_ratio: int = 4
    shift: bool = True  # False: Table 4's ablation without shifted windows
    dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth rate of the last block (linear from 0)


# Sec. 3.3 ("Architecture Variants"); "mini" is ours, for 32 px Fashion-MNIST (recipes/swin.py)
SIZES = {
    "t": dict(dim=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24)),
    "s": dict(dim=96, depths=(2, 2, 18, 2), heads=(3, 6, 12, 24)),
    "b": dict(dim=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32)),
    "l": dict(dim=192, depths=(2, 2, 18, 2), heads=(6, 12, 24, 48)),
    "mini": dict(dim=32, depths=(4,), heads=(2,), patch_size=4, window=2),  # one stage
}


def config(name: str, **overrides) -> SwinConfig:
    """'swin-t' -> Swin-T (also 'Swin-B', 'swin_mini')."""
    size = name.lower().replace("_", "-").removeprefix("swin-")
    if size not in SIZES:
        raise ValueError(f"unknown Swin '{name}' (sizes {', '.join(SIZES)}; e.g. swin-t)")
    return SwinConfig(**{**SIZES[size], **overrides})


# ----------------------------------------------------------------------------- windows
def window_partition(x: torch.Tensor, m: int) -> torch.Tensor:
    """(B, H, W, C) -> (B · H/m · W/m, m², C): the tokens of each m x m window, row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // m, m, w // m, m, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, m * m, c)


def window_reverse(windows: torch.Tensor, m: int, h: int, w: int) -> torch.Tensor:
    """The inverse of `window_partition`: (B · H/m · W/m, m², C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // m, w // m, m, m, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index(m: int) -> torch.Tensor:
    """(m², m²): for query i and key j of a window, the row of B̂ holding their offset,
    (Δy + m − 1) · (2m − 1) + (Δx + m − 1) with Δ = position_i − position_j (Eq. 4)."""
    ys, xs = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, m²)
    rel = coords[:, :, None] - coords[:, None, :] + (m - 1)  # (2, m², m²), each in [0, 2m − 2]
    return rel[0] * (2 * m - 1) + rel[1]


def shifted_window_mask(h: int, w: int, m: int, s: int) -> torch.Tensor:
    """(windows, m², m²) additive mask for the map rolled by −s: −inf between two tokens of a
    window that come from different sub-windows of the shifted partition (Fig. 4), i.e. that met
    only through the cyclic wrap-around; 0 elsewhere."""
    region = torch.zeros(1, h, w, 1)
    bands = (slice(0, -m), slice(-m, -s), slice(-s, None))  # rows (and columns) of each region
    for i, (ys, xs) in enumerate((ys, xs) for ys in bands for xs in bands):
        region[:, ys, xs, :] = i
    ids = window_partition(region, m).squeeze(-1)  # (windows, m²)
    apart = ids[:, :, None] != ids[:, None, :]
    return torch.zeros(apart.shape).masked_fill(apart, float("-inf"))


# ----------------------------------------------------------------------------- layers
class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with the relative position bias (Eq. 4)."""

    def __init__(self, dim: int, heads: int, window: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.window, self.dropout = heads, window, dropout
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer(
            "relative_position_index", relative_position_index(window), persistent=False
        )

    def bias(self) -> torch.Tensor:
        """B: (heads, M², M²) gathered from B̂."""
        n = self.window**2
        b = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return b.view(n, n, self.heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B · windows, M², C); mask: (windows, M², M²) or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.bias().unsqueeze(0)  # (1, heads, n, n)
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias + mask.unsqueeze(1)).repeat(bw // nw, 1, 1, 1)  # window-major batches
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for a whole sample with probability p."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class SwinBlock(nn.Module):
    """One block of Eq. 3: (S)W-MSA and an MLP, each pre-LayerNorm with a skip connection."""

    def __init__(self, cfg: SwinConfig, dim: int, heads: int, grid: int, shift: int, drop: float):
        super().__init__()
        self.grid = grid
        self.window = min(cfg.window, grid)  # a grid no larger than a window is one window
        self.shift = shift if grid > cfg.window else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, self.window, cfg.dropout)
        self.drop_path = DropPath(drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim * cfg.mlp_ratio),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(dim * cfg.mlp_ratio, dim),
            nn.Dropout(cfg.dropout),
        )
        mask = shifted_window_mask(grid, grid, self.window, self.shift) if self.shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """(S)W-MSA on a (B, H, W, C) map: shift, attend in windows, shift back."""
        h, w = x.shape[1:3]
        if self.shift:  # Sec. 3.2: cyclic shift towards the top-left
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        x = self.attn(window_partition(x, self.window), self.attn_mask)
        x = window_reverse(x, self.window, h, w)
        if self.shift:  # reverse cyclic shift
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, C)
        x = x + self.drop_path(self.attend(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Sec. 3.1: concatenate each 2x2 group of neighbouring tokens (4C), LayerNorm, Linear 4C→2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H/2, W/2, 2C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class SwinTransformer(nn.Module):
    def __init__(self, cfg: SwinConfig):
        super().__init__()
        if len(cfg.depths) != len(cfg.heads):
            raise ValueError(f"Swin needs one head count per stage: {cfg.depths} vs {cfg.heads}")
        grid = cfg.image_size // cfg.patch_size
        if cfg.image_size % cfg.patch_size or grid % 2 ** (len(cfg.depths) - 1):
            raise ValueError(
                f"image size {cfg.image_size} must be a multiple of the patch size "
                f"{cfg.patch_size} times 2^{len(cfg.depths) - 1} (one halving per patch merging)"
            )
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(cfg.in_channels, cfg.dim, cfg.patch_size, cfg.patch_size)
        self.patch_norm = nn.LayerNorm(cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        drops = torch.linspace(0, cfg.drop_path, sum(cfg.depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        dim = cfg.dim
        for k, (depth, heads) in enumerate(zip(cfg.depths, cfg.heads, strict=True)):
            if grid % min(cfg.window, grid):
                raise ValueError(
                    f"stage {k + 1}'s {grid}x{grid} grid is not a multiple of the "
                    f"window size {cfg.window}"
                )
            layers: list[nn.Module] = [PatchMerging(dim // 2)] if k else []
            shift = cfg.window // 2 if cfg.shift else 0
            for i in range(depth):  # W-MSA and SW-MSA alternate (Fig. 3b)
                drop = drops[sum(cfg.depths[:k]) + i]
                layers.append(SwinBlock(cfg, dim, heads, grid, shift if i % 2 else 0, drop))
            self.stages.append(nn.Sequential(*layers))
            grid, dim = grid // 2, dim * 2
        self.num_features = dim // 2
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, cfg.num_classes)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One (B, C_k, H/r_k, W/r_k) map per stage, r_k = patch · 2^k (the pyramid of Fig. 3)."""
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))  # (B, H/p, W/p, C)
        x = self.dropout(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x.permute(0, 3, 1, 2))
        return maps

    @property
    def feature_info(self) -> list[dict[str, int]]:
        return [
            {"channels": self.cfg.dim * 2**k, "reduction": self.cfg.patch_size * 2**k}
            for k in range(len(self.cfg.depths))
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = self.forward_features(x)[-1].permute(0, 2, 3, 1)  # (B, h, w, C)
        return self.head(self.norm(last).mean(dim=(1, 2)))  # global average pooling


def _init_weights(m: nn.Module) -> None:
    # as in the official implementation: truncated normal (std 0.02) for linear layers
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def swin(name: str = "swin-t", **overrides) -> SwinTransformer:
    return SwinTransformer(config(name, **overrides))


def _register() -> None:
    from papercli.models import register_model

    for size in SIZES:
        register_model(f"swin-{size}", swin, paper="swin", name=f"swin-{size}")


_register()
