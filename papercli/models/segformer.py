"""SegFormer (Xie et al., 2021, arXiv:2105.15203): the Mix Transformer encoder (MiT, Sec. 3.1)
and the all-MLP decoder (Sec. 3.2), plus the plain-ViT segmenter SegFormer compares against
(SETR's "naive" head on a single-scale ViT, Table 5).

    overlapped patch merging   a convolution with K = 7, S = 4, P = 3 (stage 1) or K = 3, S = 2,
                               P = 1 (stages 2-4), then LayerNorm: maps at 1/4, 1/8, 1/16, 1/32
                               that, unlike ViT's patches, overlap so local continuity survives
    efficient self-attention   K = Reshape(N/R, C·R)(K), K = Linear(C·R, C)(K)   (Eq. 2): keys
                               and values come from a map shrunk R times, cost O(N²/R). As in the
                               official code, the reshape + linear is one convolution with
                               kernel = stride = sr (R = sr²) followed by LayerNorm
    Mix-FFN                    x_out = MLP(GELU(Conv3×3(MLP(x_in)))) + x_in        (Eq. 3): the
                               3×3 depth-wise convolution leaks enough position information that
                               MiT has no positional encoding at all
    all-MLP decoder            F̂_i = Linear(C_i, C)(F_i); F̂_i = Upsample(H/4 × W/4)(F̂_i);
                               F = Linear(4C, C)(Concat(F̂_i)); M = Linear(C, N_cls)(F)  (Eq. 4)

Sizes follow Appendix/Table 6 and the official code: MiT-B0 … B5 (the code's MLP ratio is 4 in
every stage; it is what gives Table 2's parameter counts), decoder width C = 256 for B0/B1 and
768 for B2-B5. The fuse layer is, as in the official code, a 1×1 convolution + BatchNorm + ReLU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MiTConfig:
    in_channels: int = 3
    dims: tuple[int, ...] = (32, 64, 160, 256)  # C_i of stages 1-4
    depths: tuple[int, ...] = (2, 2, 2, 2)  # L_i
    heads: tuple[int, ...] = (1, 2, 5, 8)  # N_i
    sr: tuple[int, ...] = (8, 4, 2, 1)  # sequence reduction: R_i = sr_i²
    mlp_ratio: int = 4  # E_i
    patch: tuple[int, ...] = (7, 3, 3, 3)  # overlapped patch merging kernels
    stride: tuple[int, ...] = (4, 2, 2, 2)
    drop_path: float = 0.0


# Table 6 / the official mix_transformer.py; "mini" is ours, for 64 px scenes (recipes/segformer.py)
_B1 = dict(dims=(64, 128, 320, 512), heads=(1, 2, 5, 8))
MIT_SIZES = {
    "b0": dict(dims=(32, 64, 160, 256), heads=(1, 2, 5, 8), depths=(2, 2, 2, 2)),
    "b1": dict(_B1, depths=(2, 2, 2, 2)),
    "b2": dict(_B1, depths=(3, 4, 6, 3)),
    "b3": dict(_B1, depths=(3, 4, 18, 3)),
    "b4": dict(_B1, depths=(3, 8, 27, 3)),
    "b5": dict(_B1, depths=(3, 6, 40, 3)),
    "mini": dict(dims=(32, 64, 96, 128), heads=(1, 2, 3, 4), depths=(1, 1, 1, 1), sr=(4, 2, 1, 1)),
}
DECODER_DIMS = {"b0": 256, "b1": 256, "mini": 64}  # 768 for B2-B5


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys and values come from the map shrunk by sr × sr (Eq. 2)."""

    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, sr, stride=sr) if sr > 1 else None
        self.norm = nn.LayerNorm(dim) if sr > 1 else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
        if self.sr is not None:  # the Reshape(N/R, C·R) + Linear(C·R, C) of Eq. 2
            grid = x.transpose(1, 2).reshape(b, c, h, w)
            x = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        k, v = self.kv(x).view(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MixFFN(nn.Module):
    """x_out = MLP(GELU(Conv3×3(MLP(x_in)))) (+ x_in outside), Eq. 3."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(x)
        b, _, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(x))


class MiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int, drop_path: float):
        super().__init__()
        from papercli.models.swin import DropPath

        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.ffn(self.norm2(x), h, w))


class MixTransformer(nn.Module):
    """MiT: four stages of overlapped patch merging + MiT blocks + LayerNorm; the features API
    (`feature_info`, `forward_features`) of papercli.models, so it can serve other heads."""

    def __init__(self, cfg: MiTConfig):
        super().__init__()
        self.cfg = cfg
        drops = torch.linspace(0, cfg.drop_path, sum(cfg.depths), device="cpu").tolist()
        self.embeds, self.stages, self.norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        channels, done = cfg.in_channels, 0
        for k, dim in enumerate(cfg.dims):
            self.embeds.append(
                nn.ModuleDict(
                    {
                        "proj": nn.Conv2d(
                            channels, dim, cfg.patch[k], cfg.stride[k], cfg.patch[k] // 2
                        ),
                        "norm": nn.LayerNorm(dim),
                    }
                )
            )
            self.stages.append(
                nn.ModuleList(
                    MiTBlock(dim, cfg.heads[k], cfg.sr[k], cfg.mlp_ratio, drops[done + i])
                    for i in range(cfg.depths[k])
                )
            )
            self.norms.append(nn.LayerNorm(dim))
            channels, done = dim, done + cfg.depths[k]
        self.apply(_init_weights)

    @property
    def feature_info(self) -> list[dict[str, int]]:
        reduction, info = 1, []
        for dim, stride in zip(self.cfg.dims, self.cfg.stride, strict=True):
            reduction *= stride
            info.append({"channels": dim, "reduction": reduction})
        return info

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One (B, C_i, H/r_i, W/r_i) map per stage, r_i = 4, 8, 16, 32."""
        maps = []
        for embed, blocks, norm in zip(self.embeds, self.stages, self.norms, strict=True):
            x = embed["proj"](x)
            b, c, h, w = x.shape
            t = embed["norm"](x.flatten(2).transpose(1, 2))
            for block in blocks:
                t = block(t, h, w)
            x = norm(t).transpose(1, 2).reshape(b, c, h, w)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)


def _init_weights(m: nn.Module) -> None:
    # as the official code: truncated normal (std 0.02) for linear layers, fan-out normal for convs
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, std=(2.0 / fan_out) ** 0.5)
        nn.init.zeros_(m.bias)


class AllMLPDecoder(nn.Module):
    """Sec. 3.2, Eq. 4: unify each scale's channels with a linear layer, upsample to the finest
    map, concatenate, fuse with one more linear layer, classify every pixel. Works on any
    pyramid of (B, C_i, H_i, W_i) maps (`in_channels` = the C_i)."""

    def __init__(self, in_channels: list[int], dim: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.linear = nn.ModuleList(nn.Linear(c, dim) for c in in_channels)
        self.fuse = nn.Sequential(  # Linear(4C, C) as a 1×1 conv, with BN + ReLU (official code)
            nn.Conv2d(len(in_channels) * dim, dim, 1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classify = nn.Conv2d(dim, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        size = maps[0].shape[-2:]
        unified = []
        for linear, m in zip(self.linear, maps, strict=True):
            b, _, h, w = m.shape
            m = linear(m.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)
            unified.append(F.interpolate(m, size=size, mode="bilinear", align_corners=False))
        return self.classify(self.dropout(self.fuse(torch.cat(unified[::-1], dim=1))))


class Segmenter(nn.Module):
    """A backbone's feature pyramid → a head's per-pixel logits at 1/r → bilinear upsampling to
    the input size (SegFormer predicts at H/4 × W/4 and upsamples, Sec. 3.2)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone.forward_features(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class NaiveHead(nn.Module):
    """SETR-Naive (Zheng et al., 2021, Sec. 3.3): the last single-scale map through a 2-layer
    1×1 conv network (conv + BN + ReLU, conv) to per-pixel class logits."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        return self.net(maps[-1])


def mit(name: str = "mit-b0", **overrides) -> MixTransformer:
    size = name.lower().removeprefix("mit-")
    if size not in MIT_SIZES:
        raise ValueError(f"unknown MiT '{name}' (sizes {', '.join(MIT_SIZES)}; e.g. mit-b0)")
    return MixTransformer(MiTConfig(**{**MIT_SIZES[size], **overrides}))


def segformer(
    name: str = "segformer-b0", num_classes: int = 150, decoder_dim: int = 0, **overrides
) -> Segmenter:
    """SegFormer-B0 … B5 (Table 2 counts them with ADE20K's 150 classes) or our mini size."""
    size = name.lower().removeprefix("segformer-")
    encoder = mit(f"mit-{size}", **overrides)
    dim = decoder_dim or DECODER_DIMS.get(size, 768)
    return Segmenter(encoder, AllMLPDecoder(list(encoder.cfg.dims), dim, num_classes))


def setr_naive(
    name: str = "vit-mini/8", num_classes: int = 150, image_size: int = 64, **overrides
) -> Segmenter:
    """A ViT (learned positional encoding, one 1/p-scale map) with SETR's naive head."""
    from papercli.models.vit import vit

    encoder = vit(name, image_size=image_size, **overrides)
    return Segmenter(encoder, NaiveHead(encoder.cfg.dim, num_classes))


def _register() -> None:
    from papercli.models import register_model

    for size in MIT_SIZES:
        register_model(f"mit-{size}", mit, paper="segformer", name=f"mit-{size}")
        register_model(f"segformer-{size}", segformer, paper="segformer", name=f"segformer-{size}")
    # our mini baseline: a ViT of about segformer-mini's size (0.68M vs 0.64M with 11 classes)
    register_model(
        "setr-naive-mini", setr_naive, paper="segformer", name="vit-mini/8", dim=96, mlp_dim=288
    )


_register()
