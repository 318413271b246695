"""DETR: End-to-End Object Detection with Transformers (Carion et al., 2020, arXiv:2005.12872).

Fig. 2 and Sec. 3.2: a CNN backbone turns the image into a C×H/32×W/32 map, a 1×1 convolution
projects it to d channels, and the flattened map (HW tokens) goes through a transformer encoder.
The decoder turns N learned *object queries* into N output embeddings in parallel (no causal
mask); a shared 3-layer FFN predicts each one's normalised box (cx, cy, w, h), and a linear
layer its class among C + 1 (the extra class ∅ is "no object").

Positions are never added to the input once: a fixed 2-D sine encoding of the map is added to the
queries and keys of every encoder self-attention and to the keys of every cross-attention, and
the object queries are added to the decoder's queries and keys of every layer (Sec. 3.2, App.
A.3, Fig. 10); the project's transformer blocks (`papercli.models.transformer.Block`, post-norm,
ReLU FFN, as DETR's) take them as `pos` / `memory_pos`. The decoder's output after each layer goes
through the shared final LayerNorm and the shared heads, for the auxiliary losses (Sec. 3.2).

Paper scale (Sec. 4 and Table 1): ResNet-50 (or -101) from `papercli.models.resnet`, d = 256,
6 + 6 layers, 8 heads, FFN 2048, dropout 0.1, N = 100 queries; the backbone's batch norms are
frozen (Sec. 4: "frozen batchnorm layers") and, as in the authors' code, its stem and first stage
are not trained: the trainable parameters are DETR's 41.3M (R50) and 60.2M (R101); Table 1 rounds
them to 41M and 60M.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from papercli.models.resnet import ResNet, ResNetConfig, imagenet_resnet
from papercli.models.transformer import Block, TransformerConfig, make_norm, sinusoidal_embedding


@dataclass(frozen=True)
class DETRConfig:
    backbone: str = "resnet50"  # resnet50 | resnet101 | small (basic blocks, one per stage)
    small_widths: tuple[int, ...] = (32, 64)  # backbone="small": ResNet's stem, then stride 8
    in_channels: int = 3
    num_classes: int = 91  # COCO's category ids run to 90, + 1 (authors' code: 91)
    dim: int = 256
    heads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    ff_dim: int = 2048
    dropout: float = 0.1
    queries: int = 100  # N: "significantly larger than the typical number of objects"
    frozen_bn: bool = True  # the backbone's BatchNorm statistics and affine terms stay fixed
    frozen_stages: int = 1  # stem + this many first stages are not trained
    box_prior: tuple[float, ...] = field(default=())  # (cx, cy, w, h): initial box, () = none


def sine_positions(height: int, width: int, dim: int, device=None) -> torch.Tensor:
    """(H·W, dim) DETR's 2-D sine encoding: the first dim/2 channels encode the row, the others
    the column, each coordinate normalised to (0, 2π] (the authors' `PositionEmbeddingSine`)."""
    rows = torch.arange(1, height + 1, device=device) / height * 2 * math.pi
    cols = torch.arange(1, width + 1, device=device) / width * 2 * math.pi
    y = sinusoidal_embedding(rows, dim // 2)[:, None].expand(height, width, dim // 2)
    x = sinusoidal_embedding(cols, dim // 2)[None, :].expand(height, width, dim // 2)
    return torch.cat([y, x], dim=-1).reshape(height * width, dim)


def backbone(cfg: DETRConfig) -> ResNet:
    """The CNN of Sec. 3.2 without its classifier: only `forward_features(x)[-1]` is used."""
    if cfg.backbone == "small":
        net = ResNet(
            ResNetConfig(
                block="basic",
                layers=(1,) * len(cfg.small_widths),
                widths=cfg.small_widths,
                stem="imagenet",  # 7×7/2 conv and 3×3/2 max-pool: a 4× smaller map at once
                in_channels=cfg.in_channels,
            )
        )
    elif cfg.backbone in ("resnet50", "resnet101"):
        net = imagenet_resnet(int(cfg.backbone[6:]), in_channels=cfg.in_channels)
    else:
        raise ValueError(f"unknown DETR backbone '{cfg.backbone}' (resnet50, resnet101, small)")
    net.fc = nn.Identity()
    if cfg.frozen_bn:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.requires_grad_(False)
    for part in [net.stem, *net.stages[: cfg.frozen_stages]] if cfg.frozen_stages else []:
        part.requires_grad_(False)
    return net


class MLP(nn.Module):
    """The box FFN (Sec. 3.2): 3 linear layers, ReLU between them."""

    def __init__(self, dim: int, out: int, layers: int = 3):
        super().__init__()
        sizes = [dim] * layers + [out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.relu(layer(x))
        return x


class DETR(nn.Module):
    def __init__(self, cfg: DETRConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone(cfg)
        channels = self.backbone.feature_info[-1]["channels"]
        self.input_proj = nn.Conv2d(channels, cfg.dim, 1)
        block = TransformerConfig(
            dim=cfg.dim,
            heads=cfg.heads,
            ff_dim=cfg.ff_dim,
            dropout=cfg.dropout,
            norm="post",
            activation="relu",
        )
        self.encoder = nn.ModuleList(Block(block) for _ in range(cfg.enc_layers))
        self.decoder = nn.ModuleList(Block(block, cross=True) for _ in range(cfg.dec_layers))
        self.decoder_norm = make_norm(block)
        self.query_embed = nn.Embedding(cfg.queries, cfg.dim)
        self.class_head = nn.Linear(cfg.dim, cfg.num_classes + 1)  # the last class is ∅
        self.box_head = MLP(cfg.dim, 4)
        for p in [*self.encoder.parameters(), *self.decoder.parameters()]:
            if p.dim() > 1:  # the authors' code: Xavier-uniform transformer weights
                nn.init.xavier_uniform_(p)
        if cfg.box_prior:  # every query starts from this box (sigmoid⁻¹ as the output bias)
            last = self.box_head.layers[-1]
            nn.init.zeros_(last.weight)
            with torch.no_grad():
                last.bias.copy_(torch.logit(torch.tensor(cfg.box_prior)))

    def train(self, mode: bool = True) -> DETR:
        super().train(mode)
        if self.cfg.frozen_bn:  # frozen batch norms always use their stored statistics
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'logits' (L, B, N, C + 1), 'boxes' (L, B, N, 4) normalised cx, cy, w, h in [0, 1]}
        after each of the L decoder layers; the last one is the prediction."""
        features = self.input_proj(self.backbone.forward_features(images)[-1])
        b, d, h, w = features.shape
        pos = sine_positions(h, w, d, features.device).to(features.dtype)
        memory = features.flatten(2).transpose(1, 2)  # (B, HW, d)
        for layer in self.encoder:
            memory = layer(memory, pos=pos)
        queries = self.query_embed.weight[None].expand(b, -1, -1)
        target = torch.zeros_like(queries)  # the decoder's input; the queries are positions
        outputs = []
        for layer in self.decoder:
            target = layer(target, memory=memory, pos=queries, memory_pos=pos)
            outputs.append(self.decoder_norm(target))
        hidden = torch.stack(outputs)
        return {"logits": self.class_head(hidden), "boxes": self.box_head(hidden).sigmoid()}


def detr(**overrides) -> DETR:
    return DETR(DETRConfig(**overrides))


def _register() -> None:
    from papercli.models import register_model

    register_model("detr-r50", detr, paper="detr", backbone="resnet50")
    register_model("detr-r101", detr, paper="detr", backbone="resnet101")


_register()
