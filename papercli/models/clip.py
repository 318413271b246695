"""CLIP (Radford et al., 2021, arXiv:2103.00020): an image encoder and a text encoder trained
together so that matching image-caption pairs land close in one joint embedding space.

    I_f = image_encoder(I)            a ViT (class-token state) or a ResNet with attention pooling
    T_f = text_encoder(T)             a causal transformer's state at the [EOS] token (Sec. 2.4)
    I_e = l2_normalize(I_f W_i)       linear projections to the joint space (Sec. 2.4: linear,
    T_e = l2_normalize(T_f W_t)        not the non-linear heads of SimCLR)
    logits = I_e T_e^T · exp(t)       t learned, initialised to log(1 / 0.07), exp(t) clipped at
                                       100 (Sec. 2.5)
    loss = (CE(logits, diag) + CE(logits^T, diag)) / 2      the symmetric InfoNCE of Fig. 3

Both encoders come from the families in this package: the image side is `vit-*` (models/vit.py,
its classifier replaced by the projection W_i) or a ResNet (models/resnet.py) whose global average
pool is replaced by CLIP's attention pooling (Sec. 2.4: one multi-head QKV attention layer whose
query is the mean of the final feature map; its output layer is W_i); the text side is the
decoder-only transformer of models/transformer.py (pre-norm, learned positions, final LayerNorm).

Paper sizes (Tables 19/20) and how they count against the released models (`sum(p.numel())`):
    clip-rn50      101,987,905 — the release has 102,007,137: its 3-conv stem (3→32→32→64) holds
                   19,232 more than ResNet's 7x7 stem; its anti-aliased strided blocks (an average
                   pool before the stride) have no parameters, so they do not count
    clip-vit-b/32  151,276,545 — the release has 151,277,313: it has an extra LayerNorm before the
                   transformer (+1,536) and no bias on the patch projection (−768)
    clip-vit-l/14  427,615,489 — the release has 427,616,513 (+2,048 LayerNorm, −1,024 bias)
The text encoders (63.4M / 63.7M / 123.7M with the projection) match the release exactly. Also not
reproduced: QuickGELU (x·σ(1.702x)) — the transformer family uses tanh-approximated GELU — and the
release's initialisation scheme.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CLIPConfig:
    image: str = "vit-b/32"  # the image encoder: vit-<size>/<patch>, resnet50 …, resnet<n>-cifar
    embed_dim: int = 512  # the joint space
    image_size: int = 224
    in_channels: int = 3
    vocab_size: int = 49408  # Table 18 (the paper's lower-cased BPE)
    context: int = 77  # 76 tokens + [EOS] (Sec. 2.4)
    # the text's feature is the state at the first [EOS]; pads are [EOS] too. papercli's
    # tokenizers (data/captions.py, data/image_text.py) put it at id 0 (CLIP's BPE: 49407)
    eos_id: int = 0
    text_dim: int = 512
    text_layers: int = 12
    text_heads: int = 8
    init_temperature: float = 0.07  # Sec. 2.5, after Wu et al. 2018
    max_logit_scale: float = 100.0  # Sec. 2.5: logits are never scaled by more than 100


# Table 19 (CLIP-ResNet) and Table 20 (CLIP-ViT): embedding dimension and text transformer width /
# heads (12 layers each); image encoders as the families build them.
SIZES: dict[str, CLIPConfig] = {
    "rn50": CLIPConfig(image="resnet50", embed_dim=1024),
    "vit-b/32": CLIPConfig(image="vit-b/32", embed_dim=512),
    "vit-l/14": CLIPConfig(image="vit-l/14", embed_dim=768, text_dim=768, text_heads=12),
    # not from the paper: the Fashion-MNIST mini (ViT-mini/7 images, a 2-layer word-level text
    # transformer); the recipe sets vocab_size, context and eos_id from its caption vocabulary
    "mini": CLIPConfig(
        image="vit-mini/7",
        embed_dim=64,
        image_size=28,
        in_channels=1,
        text_dim=64,
        text_layers=2,
        text_heads=4,
    ),
}


class AttentionPool(nn.Module):
    """CLIP's replacement for a ResNet's global average pool (Sec. 2.4): the mean of the final
    (B, C, H, W) map, prepended to its H·W positions, with learned position embeddings, queries
    all of them in one multi-head attention layer; the output projection maps to the joint space
    (W_i). `features` returns the attended state before that projection (I_f)."""

    def __init__(self, channels: int, grid: int, heads: int, out_dim: int):
        super().__init__()
        self.heads = heads
        self.pos = nn.Parameter(torch.randn(grid * grid + 1, channels) / channels**0.5)
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(channels, channels)
        self.v = nn.Linear(channels, channels)
        self.proj = nn.Linear(channels, out_dim)

    def features(self, fmap: torch.Tensor) -> torch.Tensor:
        x = fmap.flatten(2).transpose(1, 2)  # (B, HW, C)
        x = torch.cat([x.mean(1, keepdim=True), x], dim=1) + self.pos.to(x.dtype)
        b, _, c = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.q(x[:, :1])), split(self.k(x)), split(self.v(x))
        )
        return out.transpose(1, 2).reshape(b, c)


class ImageEncoder(nn.Module):
    """An image backbone of the families and its linear map to the joint space."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        from papercli.models import create_model

        name = cfg.image.lower()
        common = {"in_channels": cfg.in_channels, "num_classes": 1}
        if name.startswith("vit"):
            self.backbone = create_model(name, image_size=cfg.image_size, **common)
            self.backbone.head = nn.Identity()  # forward() is then LN(z_L^0), ViT's Eq. 4
            self.pool = None
            self.proj = nn.Linear(self.backbone.cfg.dim, cfg.embed_dim, bias=False)
            nn.init.normal_(self.proj.weight, std=self.backbone.cfg.dim**-0.5)
        elif "resnet" in name or "plain" in name:
            self.backbone = create_model(name, **common)
            self.backbone.fc = nn.Identity()  # the attention pool replaces pooling and classifier
            last = self.backbone.feature_info[-1]
            grid = math.ceil(cfg.image_size / last["reduction"])
            channels = last["channels"]
            self.pool = AttentionPool(channels, grid, max(1, channels // 64), cfg.embed_dim)
            self.proj = self.pool.proj
        else:
            raise ValueError(f"CLIP's image encoder must be a ViT or a ResNet, not '{cfg.image}'")

    @property
    def width(self) -> int:
        return self.proj.in_features

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """I_f: the image's representation before the projection (B, width)."""
        if self.pool is None:
            return self.backbone(images)
        return self.pool.features(self.backbone.forward_features(images)[-1])


class TextEncoder(nn.Module):
    """A decoder-only (causally masked) transformer of the family; the text's feature is the final
    LayerNorm's state at the first [EOS] token (Sec. 2.4), projected to the joint space (W_t)."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        from papercli.models.transformer import transformer

        self.eos_id = cfg.eos_id
        self.transformer = transformer(
            vocab_size=cfg.vocab_size,
            dim=cfg.text_dim,
            layers=cfg.text_layers,
            heads=cfg.text_heads,
            ff_dim=4 * cfg.text_dim,
            max_len=cfg.context,
            arch="decoder",
        )
        self.proj = nn.Linear(cfg.text_dim, cfg.embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=cfg.text_dim**-0.5)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """T_f (B, text_dim) of token rows (B, T) that each hold an [EOS]."""
        states = self.transformer.decode(tokens)
        eos = (tokens == self.eos_id).int().argmax(dim=1)  # the first [EOS] of each row
        return states[torch.arange(len(tokens), device=tokens.device), eos]


class CLIP(nn.Module):
    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = ImageEncoder(cfg)
        self.text = TextEncoder(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """I_e: unit-length image embeddings (B, embed_dim)."""
        return F.normalize(self.visual.proj(self.visual.features(images)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """T_e: unit-length text embeddings (B, embed_dim)."""
        return F.normalize(self.text.proj(self.text.features(tokens)), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(t), clipped at `max_logit_scale` (Sec. 2.5)."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Fig. 3's logits: (N images, N texts), scaled pairwise cosine similarities."""
        image, text = self.encode_image(images), self.encode_text(tokens)
        return self.scale() * image.float() @ text.float().t()


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """Fig. 3: pair i is the right answer for row i (image → texts) and column i (text → images);
    the loss is the mean of the two cross-entropies."""
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


@torch.no_grad()
def zero_shot_classifier(model: CLIP, prompts: torch.Tensor) -> torch.Tensor:
    """(classes, embed_dim) unit vectors from prompt tokens (classes, prompts, T): each class's
    prompt embeddings averaged and re-normalised — Sec. 3.1.4's ensembling (one prompt: no-op)."""
    c, p, t = prompts.shape
    emb = model.encode_text(prompts.reshape(c * p, t)).float().reshape(c, p, -1)
    return F.normalize(emb.mean(dim=1), dim=-1)


def zero_shot_predict(image_emb: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """The class whose text embedding is most similar to each image (Sec. 3.1.2)."""
    return (image_emb.float() @ classifier.t()).argmax(dim=-1)


def config(name: str, **overrides) -> CLIPConfig:
    key = name.lower().removeprefix("clip-")
    if key not in SIZES:
        raise ValueError(f"unknown CLIP '{name}' (sizes: {', '.join(SIZES)})")
    return replace(SIZES[key], **overrides)


def clip(name: str = "clip-vit-b/32", **overrides) -> CLIP:
    return CLIP(config(name, **overrides))


def _register() -> None:
    from papercli.models import register_model

    for size in SIZES:
        register_model(f"clip-{size}", clip, paper="clip", name=f"clip-{size}")


_register()
