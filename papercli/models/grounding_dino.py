"""Grounding DINO (Liu et al., 2023, arXiv:2303.05499): open-set detection by grounding phrases.

Fig. 3, read top to bottom:
    text backbone     a BERT encoder over the prompt's phrases. Sub-sentence level text features
                      (Sec. 3.4, Fig. 4c): each phrase attends only to its own words and its
                      positions restart, so here every phrase is encoded as its own sequence (the
                      same thing as the paper's block-diagonal mask) and the tokens are then laid
                      end to end; a linear map takes them to the detector's width d
    image backbone    Swin-T/B (`papercli.models.swin`), its last three stages plus one stride-2
                      conv: 4 feature levels, each a 1x1 (3x3/2) conv + GroupNorm to d channels, with
                      the 2-D sine positions of DETR plus a learned level embedding
    feature enhancer  (Sec. 3.1, Fig. 3 block 1) per layer: bi-directional image<->text cross-
                      attention (GLIP's fusion: one attention matrix, softmax over the text for the
                      image and over the image for the text), then image self-attention and text
                      self-attention, each with its FFN
    query selection   (Sec. 3.2, Eq. 1-2) the N_q image tokens whose best similarity to any text
                      token is highest; their positions give the queries' initial anchor boxes
                      (a box head on the selected token plus its cell), the content queries are
                      learned ("mixed query selection", from DINO)
    decoder           (Sec. 3.3) per layer: query self-attention, text cross-attention, image
                      cross-attention, FFN; each layer refines the boxes (sigmoid(Δ + logit(ref)))
    classification    (Sec. 3.4) contrastive: the logit of a query for a text token is the dot
                      product of their features (no class head); a phrase's logit is the mean over
                      its tokens (the "positive map" of the release)

What differs from the release, on purpose: attention is dense (the release's multi-scale
deformable attention needs a custom kernel), so the deformable layers' sampling-offset and
weight projections are plain q/k/v/out projections here; there is no contrastive denoising
(DINO's CDN queries) and the decoder updates its boxes "look forward once". "No object" is a
constant logit 0 next to the phrases' logits, so DETR's softmax set loss (Eq. 2 of DETR) applies
as it is: a query detects phrase c when its logit for c beats 0 — the softmax counterpart of the
paper's sigmoid focal loss over tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from papercli.models import transformer
from papercli.models.detr import MLP, DETRConfig, sine_positions
from papercli.models.detr import backbone as detr_backbone
from papercli.models.transformer import (
    Attention,
    Block,
    FeedForward,
    Transformer,
    TransformerConfig,
)


@dataclass(frozen=True)
class GroundingDINOConfig:
    backbone: str = "swin-t"  # swin-t | swin-b | small (DETR's small ResNet)
    small_widths: tuple[int, ...] = (32, 64)
    in_channels: int = 3
    levels: int = 4  # feature levels: the backbone's last min(3, levels) stages + stride-2 convs
    dim: int = 256
    heads: int = 8
    enc_layers: int = 6  # feature-enhancer layers
    dec_layers: int = 6
    ff_dim: int = 2048  # image and decoder FFN
    text_ff_dim: int = 1024  # the enhancer's text FFN
    fusion_dim: int = 1024  # width of the bi-directional cross-attention
    dropout: float = 0.0
    queries: int = 900
    anchor_side: float = 0.05  # proposal anchors' side at the finest level, share of the image
    text: str = "bert-base"  # the text backbone: "bert-base" or "small" (the fields below)
    vocab_size: int = 30522
    text_dim: int = 64
    text_layers: int = 1
    text_heads: int = 4
    text_max_len: int = 16


def text_backbone(cfg: GroundingDINOConfig) -> Transformer:
    """BERT-base (as the release: no masked-LM head; its output layer is tied to the word
    embeddings, so it adds no parameters), or a small encoder of the same family."""
    if cfg.text == "bert-base":
        text = replace(
            transformer.SIZES["bert-base"], mlm_head=False, tie_embeddings=True, dropout=0.0
        )
    elif cfg.text == "small":
        text = TransformerConfig(
            vocab_size=cfg.vocab_size,
            dim=cfg.text_dim,
            layers=cfg.text_layers,
            heads=cfg.text_heads,
            ff_dim=4 * cfg.text_dim,
            max_len=cfg.text_max_len,
            arch="encoder",
            norm="post",
            dropout=0.0,
            embed_norm=True,
        )
    else:
        raise ValueError(f"unknown text backbone '{cfg.text}' (bert-base, small)")
    return Transformer(text)


def image_backbone(cfg: GroundingDINOConfig) -> nn.Module:
    if cfg.backbone == "small":
        return detr_backbone(
            DETRConfig(
                backbone="small",
                small_widths=cfg.small_widths,
                in_channels=cfg.in_channels,
                frozen_bn=False,
                frozen_stages=0,
            )
        )
    from papercli.models.swin import swin

    if cfg.backbone not in ("swin-t", "swin-b"):
        raise ValueError(f"unknown backbone '{cfg.backbone}' (swin-t, swin-b, small)")
    # the release's Swin-B is the 384-px one, window 12
    extra = dict(image_size=384, window=12) if cfg.backbone == "swin-b" else {}
    net = swin(cfg.backbone, in_channels=cfg.in_channels, **extra)
    net.norm, net.head = nn.Identity(), nn.Identity()  # features only
    return net


class BiAttention(nn.Module):
    """GLIP's bi-directional cross-attention (the enhancer's image-to-text and text-to-image
    attention): one similarity matrix A = q_I k_T^T per head; the image reads the text values
    through softmax over the text (rows of A), the text reads the image values through softmax
    over the image (columns of A). Both results are added back through layer-scale gammas."""

    def __init__(self, dim: int, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_image, self.norm_text = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k = nn.Linear(dim, width), nn.Linear(dim, width)
        self.v_image, self.v_text = nn.Linear(dim, width), nn.Linear(dim, width)
        self.out_image, self.out_text = nn.Linear(width, dim), nn.Linear(width, dim)
        self.gamma_image = nn.Parameter(torch.full((dim,), 1e-4))
        self.gamma_text = nn.Parameter(torch.full((dim,), 1e-4))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        return x.view(b, t, self.heads, w // self.heads).transpose(1, 2)

    def forward(self, image: torch.Tensor, text: torch.Tensor):
        i, t = self.norm_image(image), self.norm_text(text)
        q, k = self._split(self.q(i)), self._split(self.k(t))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, h, N_I, N_T)
        to_image = scores.softmax(-1) @ self._split(self.v_text(t))
        to_text = scores.transpose(-1, -2).softmax(-1) @ self._split(self.v_image(i))

        def merge(y: torch.Tensor) -> torch.Tensor:
            return y.transpose(1, 2).flatten(2)

        image = image + self.gamma_image * self.out_image(merge(to_image))
        text = text + self.gamma_text * self.out_text(merge(to_text))
        return image, text


class EnhancerLayer(nn.Module):
    """One feature-enhancer layer (Fig. 3, block 1)."""

    def __init__(self, cfg: GroundingDINOConfig):
        super().__init__()
        block = _block(cfg)
        self.fusion = BiAttention(cfg.dim, cfg.fusion_dim, cfg.heads)
        self.image = Block(block)
        self.text = Block(replace(block, ff_dim=cfg.text_ff_dim))

    def forward(self, image, image_pos, text, text_mask):
        image, text = self.fusion(image, text)
        return self.image(image, pos=image_pos), self.text(text, mask=text_mask)


class DecoderLayer(nn.Module):
    """Cross-modality decoder layer (Fig. 3, block 3): self-attention, text cross-attention,
    image cross-attention, FFN; post-norm, the query positions on queries and keys (DETR)."""

    def __init__(self, cfg: GroundingDINOConfig):
        super().__init__()
        block = _block(cfg)
        self.self_attn, self.text_attn, self.image_attn = (Attention(block) for _ in range(3))
        self.ff = FeedForward(block)
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.dim) for _ in range(4))

    def forward(self, x, pos, text, image, image_pos):
        x = self.norms[0](x + self.self_attn(x, embed=pos))
        x = self.norms[1](x + self.text_attn(x, memory=text, embed=pos))
        x = self.norms[2](x + self.image_attn(x, memory=image, embed=pos, memory_embed=image_pos))
        return self.norms[3](x + self.ff(x))


def box_positions(boxes: torch.Tensor, dim: int) -> torch.Tensor:
    """(…, 4) boxes -> (…, 2·dim): a dim/2-channel sine embedding of each of cx, cy, w, h
    (DINO's anchor-box queries), scaled to 2π as DETR's positions."""
    parts = [
        transformer.sinusoidal_embedding(boxes[..., k].flatten() * 2 * math.pi, dim // 2)
        for k in range(4)
    ]
    return torch.cat(parts, dim=-1).view(*boxes.shape[:-1], 2 * dim)


class GroundingDINO(nn.Module):
    def __init__(self, cfg: GroundingDINOConfig):
        super().__init__()
        self.cfg = cfg
        self.text_encoder = text_backbone(cfg)
        self.text_proj = nn.Linear(self.text_encoder.cfg.dim, cfg.dim)  # the release's feat_map
        self.backbone = image_backbone(cfg)
        info = self.backbone.feature_info
        used = info[-min(cfg.levels, len(info), 3) :]
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(f["channels"], cfg.dim, 1), _group_norm(cfg.dim)) for f in used
        )
        channels = used[-1]["channels"]
        for _ in range(cfg.levels - len(used)):  # extra levels: 3x3 stride-2 convs
            self.input_proj.append(
                nn.Sequential(nn.Conv2d(channels, cfg.dim, 3, 2, 1), _group_norm(cfg.dim))
            )
            channels = cfg.dim
        self.level_embed = nn.Parameter(torch.zeros(cfg.levels, cfg.dim))
        self.enhancer = nn.ModuleList(EnhancerLayer(cfg) for _ in range(cfg.enc_layers))
        # query selection (two-stage): a projection of the encoder output and its box head
        self.enc_output = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.LayerNorm(cfg.dim))
        self.enc_box = MLP(cfg.dim, 4)
        self.content = nn.Embedding(cfg.queries, cfg.dim)  # learned content queries
        self.query_pos = MLP(2 * cfg.dim, cfg.dim, layers=2)
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        self.decoder_norm = nn.LayerNorm(cfg.dim)
        self.box_head = MLP(cfg.dim, 4)  # shared by every decoder layer
        nn.init.zeros_(self.box_head.layers[-1].weight)  # start at the selected anchors
        nn.init.zeros_(self.box_head.layers[-1].bias)

    # --- the two backbones ------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """Phrases (P, L) word ids with pad_mask (P, L) True on real words -> (T, d) features of
        the T real words, phrase after phrase (sub-sentence features: no attention across
        phrases)."""
        states = self.text_encoder.encode(tokens, pad_mask)
        return self.text_proj(states[pad_mask])

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
        """(B, HW summed over levels, d) tokens, their positions, and each level's (h, w)."""
        maps = self.backbone.forward_features(images)
        used = maps[-min(self.cfg.levels, len(maps), 3) :]
        feats, pos, shapes = [], [], []
        x = used[-1]
        for k, proj in enumerate(self.input_proj):
            # extra levels: the first from the backbone's last map, the next from the previous
            x = proj(used[k] if k < len(used) else used[-1] if k == len(used) else x)
            d, h, w = x.shape[1:]
            shapes.append((h, w))
            feats.append(x.flatten(2).transpose(1, 2))
            p = sine_positions(h, w, d, x.device).to(x.dtype) + self.level_embed[k]
            pos.append(p)
        return torch.cat(feats, 1), torch.cat(pos), shapes

    # --- language-guided query selection (Sec. 3.2) ------------------------------------------
    def select_queries(self, image: torch.Tensor, text: torch.Tensor, shapes: list):
        """Eq. 1-2: the indices (B, N_q) of the image tokens with the largest max-over-text
        similarity, their projected features and their proposal boxes (normalised cx, cy, w, h:
        a box head on the token plus its anchor cell)."""
        memory = self.enc_output(image)
        similarity = memory @ text.transpose(-1, -2)  # (B, N_I, N_T)
        k = min(self.cfg.queries, memory.shape[1])
        index = similarity.max(-1).values.topk(k, dim=1).indices  # (B, N_q)
        anchors = _anchors(shapes, self.cfg.anchor_side, image.device).to(image.dtype)
        chosen = memory.gather(1, index[..., None].expand(-1, -1, memory.shape[-1]))
        boxes = (self.enc_box(chosen) + anchors[index]).sigmoid()
        return index, chosen, boxes

    def classify(self, h: torch.Tensor, text: torch.Tensor, members: torch.Tensor):
        """Sec. 3.4: query · token / √d for every text token, averaged over each phrase's tokens
        (`members`, the normalised positive map), then the constant "no object" logit 0."""
        phrase_logits = h @ text.transpose(-1, -2) / math.sqrt(self.cfg.dim) @ members
        return torch.cat([phrase_logits, torch.zeros_like(phrase_logits[..., :1])], -1)

    def forward(
        self,
        images: torch.Tensor,
        tokens: torch.Tensor,
        pad_mask: torch.Tensor,
        phrase: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """images (B, C, H, W); the prompt's phrases as (P, L) word ids + pad mask, `phrase`
        (T,) the phrase of each real word. {'logits' (1 + L, B, N_q, P + 1) — the last is "no
        object", 'boxes' (1 + L, B, N_q, 4) cx, cy, w, h in [0, 1]}: first the selected encoder
        proposals (DINO's two-stage outputs, trained by the same set loss, which is what teaches
        the query selection), then each of the L decoder layers; the last is the prediction."""
        b = images.shape[0]
        text = self.encode_text(tokens, pad_mask)[None].expand(b, -1, -1)
        same_phrase = phrase[:, None] == phrase[None, :]  # sub-sentence attention
        image, image_pos, shapes = self.encode_image(images)
        for layer in self.enhancer:
            image, text = layer(image, image_pos, text, same_phrase)
        members = nn.functional.one_hot(phrase, int(phrase.max()) + 1).to(text.dtype)
        members = members / members.sum(0, keepdim=True)
        _, chosen, boxes = self.select_queries(image, text, shapes)
        logits, outputs = [self.classify(chosen, text, members)], [boxes]
        boxes = boxes.detach()  # the decoder starts from the proposals (DINO: no gradient back)
        x = self.content.weight[None, : boxes.shape[1]].expand(b, -1, -1)
        for layer in self.decoder:
            pos = self.query_pos(box_positions(boxes, self.cfg.dim))
            x = layer(x, pos, text, image, image_pos)
            h = self.decoder_norm(x)
            boxes = (self.box_head(h) + torch.logit(boxes, eps=1e-5)).sigmoid()
            logits.append(self.classify(h, text, members))
            outputs.append(boxes)
            boxes = boxes.detach()  # each layer refines the last one's boxes
        return {"logits": torch.stack(logits), "boxes": torch.stack(outputs)}


def _block(cfg: GroundingDINOConfig) -> TransformerConfig:
    """The attention/FFN sizes of the enhancer's and decoder's layers (post-norm, ReLU: DINO)."""
    return TransformerConfig(
        dim=cfg.dim, heads=cfg.heads, ff_dim=cfg.ff_dim, dropout=cfg.dropout, norm="post",
        activation="relu",
    )  # fmt: skip


def _group_norm(dim: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, dim // 4), dim)


def _anchors(shapes: list, side: float, device) -> torch.Tensor:
    """Every token's anchor box in logit space: its cell centre, side `side` · 2^level (DINO:
    0.05 of the image at the finest level)."""
    out = []
    for level, (h, w) in enumerate(shapes):
        ys, xs = torch.meshgrid(
            (torch.arange(h, device=device) + 0.5) / h,
            (torch.arange(w, device=device) + 0.5) / w,
            indexing="ij",
        )
        sides = torch.full_like(xs, side * 2**level)
        out.append(torch.stack([xs, ys, sides, sides], -1).view(-1, 4))
    return torch.logit(torch.cat(out), eps=1e-5)


def grounding_dino(**overrides) -> GroundingDINO:
    return GroundingDINO(GroundingDINOConfig(**overrides))


def _register() -> None:
    from papercli.models import register_model

    register_model("grounding-dino-t", grounding_dino, paper="grounding-dino", backbone="swin-t")
    register_model("grounding-dino-b", grounding_dino, paper="grounding-dino", backbone="swin-b")


_register()
