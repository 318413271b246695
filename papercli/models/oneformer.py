"""OneFormer (Jain et al., 2022, arXiv:2211.06220), Sec. 3 and Fig. 2: one universal segmentation
model whose queries are conditioned on a task token, "the task is {semantic|instance|panoptic}".

    backbone             any features-API model of papercli.models (Swin-L at paper scale, the
                         MiT encoder of SegFormer at mini scale): maps at 1/4 … 1/32
    pixel decoder        Mask2Former's multi-scale deformable-attention encoder (Deformable DETR's
                         MSDeformAttn, Zhu et al. 2021, Eq. 2) over the 1/8 … 1/32 maps, and an
                         FPN step that adds the 1/4 map: the per-pixel mask features   -> PixelDecoder
    task token           the task sentence tokenised (T words, padded, each word one-hot over
                         the sentence vocabulary) and mapped by a 2-layer MLP to Q_task ∈ R^{1×D}
                         (Sec. 3.2)
    queries              N − 1 copies of Q_task attend to the flattened 1/4 features through a
                         2-layer transformer, Q_task is appended: N task-conditioned queries
    transformer decoder  Mask2Former's: L layers of masked cross-attention (each query sees only
                         its previous mask's foreground), self-attention and FFN, cycling over the
                         1/32, 1/16, 1/8 maps; after the input and every layer, a class (K + 1,
                         the last is "no object") and a mask (query · mask features) per query

Sizes follow the official configs: hidden D = 256, 8 heads, FFN 2048, 10 decoder "layers" (the
first is the prediction on the task-conditioned queries, then 9 transformer layers), 2 query
layers, pixel decoder of 6 layers (D 256, FFN 1024, 4 sampling points), task sequence 77,
250 queries on ADE20K. The query-text contrastive loss's text mapper only exists in training and
is not in the paper's parameter counts; it is not implemented here (see recipes/oneformer.py).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("semantic", "instance", "panoptic")
VOCABULARY = ("<pad>", "the", "task", "is", *TASKS)  # every word a task sentence uses


@dataclass(frozen=True)
class OneFormerConfig:
    backbone: str = "swin-l"
    backbone_args: tuple[tuple[str, object], ...] = (("window", 12), ("image_size", 384))
    backbone_norms: bool = True  # a LayerNorm on each output map (the detection Swin's)
    in_channels: int = 3
    num_classes: int = 150  # K; the class head has K + 1 outputs
    queries: int = 250  # N
    dim: int = 256  # D: pixel decoder, mask features and transformer decoder
    heads: int = 8
    ffn: int = 2048
    decoder_layers: int = 9  # masked-attention layers (the configs' DEC_LAYERS − 1)
    query_layers: int = 2  # the transformer that turns Q_task into queries
    pixel_layers: int = 6
    pixel_ffn: int = 1024
    points: int = 4  # sampling points per head and level (MSDeformAttn)
    task_length: int = 77  # tokens of the task sentence


# ----------------------------------------------------------------------------- common parts
def sine_positions(x: torch.Tensor) -> torch.Tensor:
    """DETR's 2D sine positional encoding of a (B, C, H, W) map: (B, C, H, W), half the
    channels for y, half for x, normalised coordinates × 2π."""
    b, c, h, w = x.shape
    half = c // 2
    ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 1) / h * 2 * math.pi
    xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 1) / w * 2 * math.pi
    freq = 10000 ** (2 * (torch.arange(half, device=x.device) // 2) / half)
    py, px = ys[:, None] / freq, xs[:, None] / freq  # (H, half), (W, half)
    py = torch.stack([py[:, 0::2].sin(), py[:, 1::2].cos()], 2).flatten(1)
    px = torch.stack([px[:, 0::2].sin(), px[:, 1::2].cos()], 2).flatten(1)
    pos = torch.cat([py[:, None].expand(h, w, half), px[None].expand(h, w, half)], 2)
    return pos.permute(2, 0, 1)[None].expand(b, -1, -1, -1).to(x.dtype)


class MLP(nn.Module):
    def __init__(self, dims: list[int]):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class AttentionLayer(nn.Module):
    """Post-norm attention sublayer: x + Attn(x + pos_q, mem + pos_k, mem), LayerNorm."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, memory, pos_q=None, pos_k=None, mask=None) -> torch.Tensor:
        q = x if pos_q is None else x + pos_q
        k = memory if pos_k is None else memory + pos_k
        return self.norm(x + self.attn(q, k, memory, attn_mask=mask, need_weights=False)[0])


class FFNLayer(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.net(x))


# ----------------------------------------------------------------------------- pixel decoder
class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR Eq. 3): each query samples `points`
    locations per head and level around its reference point, at learned offsets, and averages
    the sampled values with learned (soft-maxed) weights. Pure torch: bilinear `grid_sample`."""

    def __init__(self, dim: int, heads: int, levels: int, points: int):
        super().__init__()
        self.heads, self.levels, self.points = heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.sampling_offsets.weight)
        # as Deformable DETR: offsets start on a ring of directions, k steps out for point k
        angles = torch.arange(heads, dtype=torch.float32) * (2 * math.pi / heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid[:, None, None].repeat(1, levels, points, 1)
        grid = grid * torch.arange(1, points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)

    def forward(self, query, reference, value, shapes: list[tuple[int, int]]) -> torch.Tensor:
        """query (B, Nq, D), reference (B, Nq, 2) in [0, 1] as (x, y), value (B, ΣHW, D)."""
        b, nq, d = query.shape
        h, lv, p = self.heads, self.levels, self.points
        value = self.value_proj(value).view(b, -1, h, d // h)
        offsets = self.sampling_offsets(query).view(b, nq, h, lv, p, 2)
        weights = self.attention_weights(query).view(b, nq, h, lv * p).softmax(-1)
        normaliser = torch.tensor([[w, hh] for hh, w in shapes], device=query.device)
        locations = (
            reference[:, :, None, None, None] + offsets / normaliser[None, None, None, :, None]
        )
        sampled, start = [], 0
        for level, (hh, ww) in enumerate(shapes):
            v = value[:, start : start + hh * ww].permute(0, 2, 3, 1).reshape(b * h, d // h, hh, ww)
            start += hh * ww
            grid = 2 * locations[:, :, :, level].transpose(1, 2).reshape(b * h, nq, p, 2) - 1
            sampled.append(
                F.grid_sample(v, grid.to(v.dtype), align_corners=False)
            )  # (B·h, d/h, Nq, P)
        sampled = torch.stack(sampled, -2).flatten(-2)  # (B·h, d/h, Nq, L·P)
        weights = weights.transpose(1, 2).reshape(b * h, 1, nq, lv * p)
        out = (sampled * weights.to(sampled.dtype)).sum(-1).view(b, d, nq).transpose(1, 2)
        return self.output_proj(out)


class DeformableLayer(nn.Module):
    def __init__(self, cfg: OneFormerConfig, levels: int):
        super().__init__()
        self.attn = MSDeformAttn(cfg.dim, cfg.heads, levels, cfg.points)
        self.norm = nn.LayerNorm(cfg.dim)
        self.ffn = FFNLayer(cfg.dim, cfg.pixel_ffn)

    def forward(self, x, pos, reference, shapes) -> torch.Tensor:
        return self.ffn(self.norm(x + self.attn(x + pos, reference, x, shapes)))


def _conv_gn(cin: int, cout: int, kernel: int, bias: bool = True) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)
    return nn.Sequential(conv, nn.GroupNorm(min(32, cout), cout))


class PixelDecoder(nn.Module):
    """Mask2Former's MSDeformAttn pixel decoder: the three coarsest maps projected to D, refined
    jointly by deformable attention across scales, then the finest (1/4) map joined FPN-style;
    returns the 1/4 mask features and the refined maps, coarsest first."""

    def __init__(self, cfg: OneFormerConfig, channels: list[int]):
        super().__init__()
        coarse = channels[1:][::-1]  # 1/32, 1/16, 1/8
        self.input_proj = nn.ModuleList(_conv_gn(c, cfg.dim, 1) for c in coarse)
        self.level_embed = nn.Parameter(torch.zeros(len(coarse), cfg.dim))
        nn.init.normal_(self.level_embed)
        self.layers = nn.ModuleList(
            DeformableLayer(cfg, len(coarse)) for _ in range(cfg.pixel_layers)
        )
        self.lateral = _conv_gn(channels[0], cfg.dim, 1, bias=False)
        self.output = nn.Sequential(
            _conv_gn(cfg.dim, cfg.dim, 3, bias=False), nn.ReLU(inplace=True)
        )
        self.mask_features = nn.Conv2d(cfg.dim, cfg.dim, 1)

    def forward(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        srcs = [proj(m) for proj, m in zip(self.input_proj, maps[1:][::-1], strict=True)]
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        tokens = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat(
            [
                (sine_positions(s) + self.level_embed[i][None, :, None, None])
                .flatten(2)
                .transpose(1, 2)
                for i, s in enumerate(srcs)
            ],
            1,
        )
        reference = torch.cat(
            [
                torch.stack(
                    torch.meshgrid(
                        (torch.arange(w, device=s.device) + 0.5) / w,
                        (torch.arange(h, device=s.device) + 0.5) / h,
                        indexing="xy",
                    ),
                    -1,
                ).reshape(-1, 2)
                for s, (h, w) in zip(srcs, shapes, strict=True)
            ]
        )[None].expand(tokens.shape[0], -1, -1)
        for layer in self.layers:
            tokens = layer(tokens, pos, reference.to(tokens.dtype), shapes)
        outs, start = [], 0
        for h, w in shapes:
            outs.append(
                tokens[:, start : start + h * w].transpose(1, 2).reshape(-1, tokens.shape[-1], h, w)
            )
            start += h * w
        fine = self.lateral(maps[0])
        fine = fine + F.interpolate(
            outs[-1], size=fine.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.mask_features(self.output(fine)), outs


# ----------------------------------------------------------------------------- OneFormer
class QueryLayer(nn.Module):
    """DETR decoder layer (post-norm): self-attention, cross-attention to memory, FFN."""

    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = AttentionLayer(dim, heads)
        self.cross_attn = AttentionLayer(dim, heads)
        self.ffn = FFNLayer(dim, ffn)

    def forward(self, x, pos_q, memory, pos_k) -> torch.Tensor:
        x = self.self_attn(x, x, pos_q, pos_q)
        return self.ffn(self.cross_attn(x, memory, pos_q, pos_k))


class OneFormer(nn.Module):
    def __init__(self, cfg: OneFormerConfig):
        super().__init__()
        from papercli.models import create_model

        self.cfg = cfg
        backbone = create_model(
            cfg.backbone, in_channels=cfg.in_channels, **dict(cfg.backbone_args)
        )
        for unused in ("head", "norm"):  # the classifier of a classification backbone
            if isinstance(getattr(backbone, unused, None), nn.Module):
                setattr(backbone, unused, nn.Identity())
        self.backbone = backbone
        channels = [f["channels"] for f in backbone.feature_info]
        norms = nn.ModuleList(nn.LayerNorm(c) for c in channels)
        self.backbone_norms = norms if cfg.backbone_norms else None
        self.pixel_decoder = PixelDecoder(cfg, channels)
        d = cfg.dim
        # Sec. 3.2: the task token Q_task, from the one-hot words of the task sentence
        self.task_mlp = MLP([cfg.task_length * (len(VOCABULARY) - 1), d, d])
        # the query transformer (the code's class_transformer): N − 1 copies of Q_task → queries
        self.query_layers = nn.ModuleList(
            QueryLayer(d, cfg.heads, cfg.ffn) for _ in range(cfg.query_layers)
        )
        self.query_norm = nn.LayerNorm(d)
        self.query_input = nn.Conv2d(d, d, 1)
        self.query_embed = nn.Embedding(cfg.queries, d)  # learned query positions
        self.level_embed = nn.Embedding(3, d)
        self.cross = nn.ModuleList(AttentionLayer(d, cfg.heads) for _ in range(cfg.decoder_layers))
        self.self_attn = nn.ModuleList(
            AttentionLayer(d, cfg.heads) for _ in range(cfg.decoder_layers)
        )
        self.ffn = nn.ModuleList(FFNLayer(d, cfg.ffn) for _ in range(cfg.decoder_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.class_embed = nn.Linear(d, cfg.num_classes + 1)
        self.mask_embed = MLP([d, d, d, d])

    def task_tokens(self, tasks: list[str]) -> torch.Tensor:
        """'the task is {task}' padded to `task_length` words, each one-hot over the words of
        VOCABULARY (padding all zeros, as the official code pads with id 0): (B, T · (V − 1)).
        The official code feeds CLIP's BPE ids as floats, where the task words' ids lie
        thousands apart; ids 4/5/6 of our 7-word vocabulary left the three tasks' Q_task at
        cosine 0.99 and a trained mini that ignored its task token. One-hot sentences differ in
        one word of four."""
        ids = torch.zeros(len(tasks), self.cfg.task_length, dtype=torch.long)
        for i, task in enumerate(tasks):
            words = f"the task is {task}".split()
            ids[i, : len(words)] = torch.tensor([VOCABULARY.index(w) for w in words])
        one_hot = F.one_hot(ids, len(VOCABULARY))[..., 1:].flatten(1).float()
        return one_hot.to(self.query_embed.weight.device)

    def predict(self, queries: torch.Tensor, mask_features: torch.Tensor, size):
        """Class logits (B, N, K + 1), mask logits (B, N, H/4, W/4) and the attention mask for
        the next layer: True where a query's mask at `size` is background (Sec. 3.2 of
        Mask2Former; a query with an empty mask may attend everywhere)."""
        x = self.decoder_norm(queries)
        classes = self.class_embed(x)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(x), mask_features)
        small = F.interpolate(masks.float(), size=size, mode="bilinear", align_corners=False)
        blocked = small.sigmoid().flatten(2) < 0.5
        blocked[blocked.all(-1)] = False
        return classes, masks, blocked.repeat_interleave(self.cfg.heads, 0)

    def forward(
        self, images: torch.Tensor, tasks: list[str]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(class logits, mask logits at 1/4) after the task-conditioned queries and after each
        decoder layer: the last is the prediction, the others are deeply supervised."""
        maps = self.backbone.forward_features(images)
        if self.backbone_norms is not None:
            maps = [
                norm(m.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                for norm, m in zip(self.backbone_norms, maps, strict=True)
            ]
        mask_features, levels = self.pixel_decoder(maps)
        b = images.shape[0]
        task = self.decoder_norm(self.task_mlp(self.task_tokens(tasks)))[:, None]  # (B, 1, D)
        memory = self.query_input(mask_features).flatten(2).transpose(1, 2)
        memory_pos = sine_positions(mask_features).flatten(2).transpose(1, 2)
        pos = self.query_embed.weight[None].expand(b, -1, -1)
        queries = task.expand(-1, self.cfg.queries - 1, -1)
        for layer in self.query_layers:
            queries = layer(queries, pos[:, :-1], memory, memory_pos)
        queries = torch.cat([self.query_norm(queries), task], 1)  # N queries, Q_task last
        srcs = [
            lv.flatten(2).transpose(1, 2) + self.level_embed.weight[i]
            for i, lv in enumerate(levels)
        ]
        src_pos = [sine_positions(lv).flatten(2).transpose(1, 2) for lv in levels]
        classes, masks, blocked = self.predict(queries, mask_features, levels[0].shape[-2:])
        outputs = [(classes, masks)]
        for i in range(self.cfg.decoder_layers):
            k = i % len(levels)
            queries = self.cross[i](queries, srcs[k], pos, src_pos[k], mask=blocked)
            queries = self.ffn[i](self.self_attn[i](queries, queries, pos, pos))
            classes, masks, blocked = self.predict(
                queries, mask_features, levels[(i + 1) % len(levels)].shape[-2:]
            )
            outputs.append((classes, masks))
        return outputs


# paper sizes (official configs); the mini is ours, for 64 px scenes (recipes/oneformer.py)
SIZES = {
    "swin-l": dict(backbone="swin-l"),
    "mini": dict(
        backbone="mit-mini",
        backbone_args=(),
        backbone_norms=False,
        queries=16,
        dim=64,
        heads=4,
        ffn=256,
        decoder_layers=3,
        query_layers=1,
        pixel_layers=2,
        pixel_ffn=128,
        task_length=8,
    ),
}


def oneformer(name: str = "oneformer-swin-l", **overrides) -> OneFormer:
    size = name.lower().removeprefix("oneformer-")
    if size not in SIZES:
        sizes = ", ".join(SIZES)
        raise ValueError(f"unknown OneFormer '{name}' (sizes {sizes}; e.g. oneformer-swin-l)")
    return OneFormer(OneFormerConfig(**{**SIZES[size], **overrides}))


def _register() -> None:
    from papercli.models import register_model

    for size in SIZES:
        register_model(f"oneformer-{size}", oneformer, paper="oneformer", name=f"oneformer-{size}")


_register()
