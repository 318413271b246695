"""Segment Anything (Kirillov et al., 2023, arXiv:2304.02643), Section 3 and Appendix A.1: a
promptable segmenter in three parts.

    image encoder   a ViT (models/vit.py's blocks) with 14x14 windowed attention, four evenly spaced
                    global blocks and decomposed relative positions (ViTDet, MViTv2), then a neck
                    (1x1 conv to C = 256, LayerNorm, 3x3 conv, LayerNorm): a C x H/16 x W/16
                    embedding, computed once per image
    prompt encoder  points and boxes (a box = its two corners) as sparse tokens: a random-Fourier
                    positional encoding of the location (Tancik et al.) plus a learned embedding of
                    the point's type (foreground, background, top-left, bottom-right; a padding
                    "not a point" when no box is given); a mask prompt as a dense embedding (two
                    stride-2 convs, then a 1x1 conv to C), or a learned "no mask" embedding
    mask decoder    a two-way transformer (2 blocks: token self-attention, token-to-image and
                    image-to-token cross-attention, the latter two at half width) over the prompt
                    tokens plus learned output tokens — 1 IoU token and 4 mask tokens — then the
                    embedding upsampled 4x by two transposed convs, and each mask token's
                    3-layer MLP output dotted with every upsampled pixel: one mask per token. Mask
                    token 0 answers an unambiguous prompt (several prompts); tokens 1-3 give the
                    three masks of an ambiguous one (a single point), each scored by the IoU head

Sizes (the encoders of Fig. 13: ViT-B 91M, ViT-L 308M, ViT-H 636M, counted here as the release
builds them: 89,670,912 / 308,278,272 / 637,026,048; prompt encoder 6,220 and mask decoder
4,058,340 parameters in every size — the "4M" of the paper's model card). `sam-mini` is not from
the paper: the same architecture at C = 64 on 64-pixel grayscale images (patch 8: an 8x8
embedding, 4x4 windows, masks at 32x32 upsampled to the image, as the release upsamples its
256x256 masks to 1024).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from papercli.models import vit
from papercli.models.swin import window_partition, window_reverse


@dataclass(frozen=True)
class SAMConfig:
    image_size: int = 1024
    patch_size: int = 16
    in_channels: int = 3
    encoder_dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    window: int = 14  # windowed attention in all but the global blocks
    global_blocks: tuple[int, ...] = (2, 5, 8, 11)
    dim: int = 256  # C: the embedding the neck outputs and the decoder works in
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    cross_downsample: int = 2  # cross-attention runs at C / 2 (Sec. A.1: "for efficiency")
    multimask: int = (
        3  # masks for an ambiguous prompt (Sec. 3: three suffice for whole/part/subpart)
    )
    iou_hidden: int = 256
    mask_channels: int = 16  # the mask prompt's downscaling convs: 1 -> 4 -> 16 -> C

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def _globals(depth: int) -> tuple[int, ...]:
    """Four evenly spaced global-attention blocks, the last one last (ViTDet's choice)."""
    step = depth // 4
    return tuple(range(step - 1, depth, step))


SIZES = {
    "vit-b": dict(encoder_dim=768, depth=12, heads=12, mlp_dim=3072, global_blocks=_globals(12)),
    "vit-l": dict(encoder_dim=1024, depth=24, heads=16, mlp_dim=4096, global_blocks=_globals(24)),
    "vit-h": dict(encoder_dim=1280, depth=32, heads=16, mlp_dim=5120, global_blocks=_globals(32)),
    # not from the paper: a laptop size for 64-pixel grayscale scenes (see the module note)
    "mini": dict(
        image_size=64,
        patch_size=8,
        in_channels=1,
        encoder_dim=64,
        depth=4,
        heads=4,
        mlp_dim=256,
        window=4,
        global_blocks=(1, 3),
        dim=64,
        decoder_heads=4,
        decoder_mlp_dim=256,
        iou_hidden=64,
    ),
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (the neck's and the decoder's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------ image encoder
class RelPosAttention(vit.Attention):
    """ViT attention over (B, H, W, C) maps, within m x m windows (zero-padded to fit) or over the
    whole map, with MViTv2's decomposed relative positions: logits q·k/√d + q·R_h[Δy] + q·R_w[Δx]."""

    def __init__(self, dim: int, heads: int, window: int, size: int):
        super().__init__(dim, heads, 0.0)
        self.window = window  # 0 = global
        side = window or size
        head_dim = dim // heads
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * side - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * side - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, c = x.shape
        m = self.window
        if m:
            pad_h, pad_w = -h % m, -w % m
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
            x = window_partition(x, m).view(-1, m, m, c)
        out = self._attend(x)
        if m:
            out = window_reverse(out.view(-1, m * m, c), m, h + pad_h, w + pad_w)[:, :h, :w]
        return out

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        heads = self.heads
        q, k, v = self.qkv(x).view(b, h * w, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        rh = self.rel_pos_h[_offsets(h, x.device)]  # (h, h, d): R_h[y_q − y_k]
        rw = self.rel_pos_w[_offsets(w, x.device)]
        grid_q = q.reshape(b, heads, h, w, -1)
        bias = (
            torch.einsum("bnhwd,hkd->bnhwk", grid_q, rh)[..., :, None]
            + torch.einsum("bnhwd,wkd->bnhwk", grid_q, rw)[..., None, :]
        )  # (b, heads, h, w, h_k, w_k)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.reshape(b, heads, h * w, h * w).to(q.dtype)
        )
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


def _offsets(n: int, device) -> torch.Tensor:
    """(n, n) rows of the relative-position table: query index − key index + n − 1."""
    i = torch.arange(n, device=device)
    return i[:, None] - i[None, :] + n - 1


class ImageEncoder(nn.Module):
    """Sec. 3 / A.1: an MAE-style plain ViT (no class token, absolute positions per patch), windowed
    with a few global blocks, and a neck to C channels."""

    def __init__(self, cfg: SAMConfig):
        super().__init__()
        self.cfg = cfg
        block_cfg = vit.ViTConfig(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            dim=cfg.encoder_dim,
            depth=cfg.depth,
            heads=cfg.heads,
            mlp_dim=cfg.mlp_dim,
        )
        self.patch_embed = nn.Conv2d(
            cfg.in_channels, cfg.encoder_dim, cfg.patch_size, stride=cfg.patch_size
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid, cfg.grid, cfg.encoder_dim))
        self.blocks = nn.Sequential()
        for i in range(cfg.depth):
            block = vit.Block(block_cfg)  # pre-norm attention + GELU MLP, Eq. 2-3 of ViT
            window = 0 if i in cfg.global_blocks else cfg.window
            block.attn = RelPosAttention(cfg.encoder_dim, cfg.heads, window, cfg.grid)
            self.blocks.append(block)
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.encoder_dim, cfg.dim, 1, bias=False),
            LayerNorm2d(cfg.dim, eps=1e-6),
            nn.Conv2d(cfg.dim, cfg.dim, 3, padding=1, bias=False),
            LayerNorm2d(cfg.dim, eps=1e-6),
        )
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).permute(0, 2, 3, 1) + self.pos_embed  # (B, H/p, W/p, D)
        x = self.blocks(x)
        return self.neck(x.permute(0, 3, 1, 2))  # (B, C, H/p, W/p)


# ------------------------------------------------------------------------------ prompt encoder
POINT_TYPES = {"background": 0, "foreground": 1, "box_top_left": 2, "box_bottom_right": 3}
PAD = -1  # "not a point": pads the sparse prompt when no box is given, or a round without a click


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of a location in [0, 1]²: [sin 2πGp, cos 2πGp], G ~ N(0, 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("gaussian", torch.randn(2, dim // 2))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        projected = 2 * math.pi * (2 * coords - 1) @ self.gaussian.to(coords.dtype)
        return torch.cat([projected.sin(), projected.cos()], dim=-1)


class PromptEncoder(nn.Module):
    def __init__(self, cfg: SAMConfig):
        super().__init__()
        self.cfg = cfg
        c, m = cfg.dim, cfg.mask_channels
        self.pe = PositionEmbeddingRandom(c)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, c) for _ in POINT_TYPES)
        self.not_a_point_embed = nn.Embedding(1, c)
        # a mask prompt at 4x the embedding's resolution, brought down to it (Sec. A.1)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, m // 4, 2, stride=2),
            LayerNorm2d(m // 4, eps=1e-6),
            nn.GELU(),
            nn.Conv2d(m // 4, m, 2, stride=2),
            LayerNorm2d(m, eps=1e-6),
            nn.GELU(),
            nn.Conv2d(m, c, 1),
        )
        self.no_mask_embed = nn.Embedding(1, c)

    def dense_pe(self) -> torch.Tensor:
        """(1, C, g, g): the positional encoding of every embedding cell's centre."""
        g = self.cfg.grid
        centres = (torch.arange(g, device=self.pe.gaussian.device) + 0.5) / g
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        return self.pe(torch.stack([xs, ys], dim=-1)).permute(2, 0, 1)[None]

    def sparse(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(P, n, 2) xy in pixels (pixel-edge units: the centre of pixel (r, c) is (c + ½, r + ½))
        and (P, n) types from POINT_TYPES or PAD -> (P, n, C) tokens."""
        emb = self.pe(points / self.cfg.image_size)
        pad = (labels == PAD)[..., None]
        emb = torch.where(pad, self.not_a_point_embed.weight, emb)
        for kind, table in enumerate(self.point_embeddings):
            emb = emb + (labels == kind)[..., None] * table.weight
        return emb

    def dense(self, masks: torch.Tensor | None, count: int) -> torch.Tensor:
        """(P, 1, 4g, 4g) mask logits of an earlier round -> (P, C, g, g); none -> "no mask"."""
        if masks is not None:
            return self.mask_downscaling(masks)
        g = self.cfg.grid
        return self.no_mask_embed.weight.view(1, -1, 1, 1).expand(count, -1, g, g)


# ------------------------------------------------------------------------------ mask decoder
class Attention(nn.Module):
    """Multi-head attention with separate q, k, v projections to `dim / downsample` channels."""

    def __init__(self, dim: int, heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, inner) for _ in range(3))
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

        q, k, v = split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return self.out_proj(out.flatten(2))


class TwoWayBlock(nn.Module):
    """Fig. 14: (1) self-attention of the tokens, (2) tokens attend to the image, (3) an MLP on
    each token, (4) the image attends to the tokens. The positional encodings are added to queries
    and keys every time they attend (the first block's self-attention takes raw tokens)."""

    def __init__(self, cfg: SAMConfig, first: bool):
        super().__init__()
        c, heads = cfg.dim, cfg.decoder_heads
        self.first = first
        self.self_attn = Attention(c, heads)
        self.cross_attn_token_to_image = Attention(c, heads, cfg.cross_downsample)
        self.mlp = nn.Sequential(
            nn.Linear(c, cfg.decoder_mlp_dim), nn.ReLU(), nn.Linear(cfg.decoder_mlp_dim, c)
        )
        self.cross_attn_image_to_token = Attention(c, heads, cfg.cross_downsample)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(c) for _ in range(4))

    def forward(self, tokens, image, token_pe, image_pe):
        if self.first:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)
        q, k = tokens + token_pe, image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(q, k, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        q, k = tokens + token_pe, image + image_pe
        image = self.norm4(image + self.cross_attn_image_to_token(k, q, tokens))
        return tokens, image


class MaskDecoder(nn.Module):
    def __init__(self, cfg: SAMConfig):
        super().__init__()
        c = cfg.dim
        self.cfg = cfg
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(cfg.multimask + 1, c)
        self.layers = nn.ModuleList(TwoWayBlock(cfg, i == 0) for i in range(cfg.decoder_depth))
        self.final_attn_token_to_image = Attention(c, cfg.decoder_heads, cfg.cross_downsample)
        self.norm_final_attn = nn.LayerNorm(c)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, 2, stride=2),
            LayerNorm2d(c // 4, eps=1e-6),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, 2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            _mlp(c, c, c // 8) for _ in range(cfg.multimask + 1)
        )
        self.iou_prediction_head = _mlp(c, cfg.iou_hidden, cfg.multimask + 1)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image (P, C, g, g) — each prompt's image embedding — plus its dense prompt; sparse
        (P, n, C) -> all mask logits (P, 1 + multimask, 4g, 4g) and predicted IoUs (P, 1 +
        multimask)."""
        p, c, g, _ = image.shape
        output = torch.cat([self.iou_token.weight, self.mask_tokens.weight])
        token_pe = torch.cat([output.expand(p, -1, -1), sparse], dim=1)
        tokens = token_pe
        src = (image + dense).flatten(2).transpose(1, 2)  # (P, g², C)
        pos = image_pe.flatten(2).transpose(1, 2).expand(p, -1, -1)
        for layer in self.layers:
            tokens, src = layer(tokens, src, token_pe, pos)
        q, k = tokens + token_pe, src + pos
        tokens = self.norm_final_attn(tokens + self.final_attn_token_to_image(q, k, src))
        iou_out, mask_out = tokens[:, 0], tokens[:, 1 : 2 + self.cfg.multimask]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(p, c, g, g))
        hyper = torch.stack(
            [mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (P, 1 + multimask, C/8)
        masks = (hyper @ upscaled.flatten(2)).view(p, -1, *upscaled.shape[-2:])
        return masks, self.iou_prediction_head(iou_out)


def _mlp(dim: int, hidden: int, out: int, layers: int = 3) -> nn.Sequential:
    """A ReLU MLP of `layers` linear layers (the hypernetworks and the IoU head)."""
    sizes = [dim] + [hidden] * (layers - 1) + [out]
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        mods += [nn.Linear(a, b)] + ([nn.ReLU()] if i < layers - 1 else [])
    return nn.Sequential(*mods)


# ------------------------------------------------------------------------------ the whole model
class SAM(nn.Module):
    def __init__(self, cfg: SAMConfig):
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg)
        self.prompt_encoder = PromptEncoder(cfg)
        self.mask_decoder = MaskDecoder(cfg)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The image embedding (B, C, g, g): the expensive part, run once per image."""
        return self.image_encoder(images)

    def decode(
        self,
        embeddings: torch.Tensor,
        image_index: torch.Tensor,
        points: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer P prompts on already embedded images: points (P, n, 2) and labels (P, n) (a box
        is its two corners, types 2 and 3), optional mask logits (P, 1, 4g, 4g) of an earlier
        round -> every output token's mask logits (P, 4, 4g, 4g) and predicted IoU (P, 4)."""
        pe = self.prompt_encoder
        sparse = pe.sparse(points, labels)
        dense = pe.dense(mask_input, len(points))
        return self.mask_decoder(embeddings[image_index], pe.dense_pe(), sparse, dense)

    def upsample(self, masks: torch.Tensor) -> torch.Tensor:
        """Mask logits at the decoder's 4g resolution -> the input image's resolution."""
        size = self.cfg.image_size
        if masks.shape[-1] == size:
            return masks
        return F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)


def box_prompt(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, 4) xyxy boxes -> (P, 2, 2) corner points with their types (top-left, bottom-right)."""
    labels = torch.tensor(
        [POINT_TYPES["box_top_left"], POINT_TYPES["box_bottom_right"]], device=boxes.device
    )
    return boxes.view(-1, 2, 2), labels.expand(len(boxes), 2)


def point_prompt(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, 2) foreground clicks -> (P, 2, 2) points: the click and the padding "not a point" that
    stands in for the absent box (as the release pads a box-less prompt)."""
    padded = torch.stack([points, torch.zeros_like(points)], dim=1)
    labels = torch.tensor([POINT_TYPES["foreground"], PAD], device=points.device)
    return padded, labels.expand(len(points), 2)


def config(name: str, **overrides) -> SAMConfig:
    """'sam-vit-b' / 'sam-vit-l' / 'sam-vit-h' (the paper's three) or 'sam-mini'."""
    size = name.lower().removeprefix("sam-")
    if size not in SIZES:
        raise ValueError(f"unknown SAM size '{name}' (choose from sam-{', sam-'.join(SIZES)})")
    return replace(SAMConfig(), **{**SIZES[size], **overrides})


def sam(name: str = "sam-vit-b", **overrides) -> SAM:
    return SAM(config(name, **overrides))


def _register() -> None:
    from papercli.models import register_model

    for size in SIZES:
        register_model(f"sam-{size}", sam, paper="sam", name=f"sam-{size}")


_register()
