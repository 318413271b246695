"""DeiT's distilled Vision Transformer (Touvron et al., 2020, arXiv:2012.12877), Section 4.

The architecture is ViT's (`models/vit.py`; DeiT-Ti/S/B are ViT with widths 192/384/768, Table 1)
plus a *distillation token*: a second learned token next to the class token, with its own position
embedding, that goes through every layer and ends in its own linear head. The class head learns the
true label and the distillation head the teacher's (Eq. 2), so the two tokens interact only through
attention. At test time the two heads' softmax outputs are added (Section 4, "Classification with
our approach: joint classifiers"). So `forward` returns both heads' logits in training mode (as
timm's DeiT does, so DDP sees one forward) and in eval mode the log of their mean softmax, a valid
set of logits for cross-entropy and argmax.
"""

from __future__ import annotations

import torch
from torch import nn

from papercli.models.vit import VisionTransformer, ViTConfig, config


class DistilledVisionTransformer(VisionTransformer):
    prefix_tokens = 2  # [class, distillation]

    def __init__(self, cfg: ViTConfig):
        super().__init__(cfg)
        self.dist_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        nn.init.trunc_normal_(self.dist_token, std=0.02)
        self.head_dist = nn.Linear(cfg.dim, cfg.num_classes)
        nn.init.zeros_(self.head_dist.weight)
        nn.init.zeros_(self.head_dist.bias)

    def prefix(self, batch: int) -> list[torch.Tensor]:
        return [*super().prefix(batch), self.dist_token.expand(batch, -1, -1)]

    @torch.no_grad()
    def copy_from(self, vit: VisionTransformer) -> None:
        """Start from a plain ViT's weights: every shared tensor is copied, the class token's and
        the patches' position embeddings included, so the two models differ only in what the
        distillation adds (its token, that token's position embedding and its head)."""
        own = self.state_dict()
        for name, value in vit.state_dict().items():
            if name == "pos_embed":  # [class, patches] -> [class, (distillation), patches]
                own[name][:, :1] = value[:, :1]
                own[name][:, self.prefix_tokens :] = value[:, 1:]
            else:
                own[name].copy_(value)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both heads' logits whatever the mode (Table 5 also reports each head alone)."""
        z = self.norm(self.encode(x))
        return self.head(z[:, 0]), self.head_dist(z[:, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Training: (class-head logits, distillation-head logits), the two terms of Eq. 2.
        Evaluation: the joint classifier, the mean of both heads' softmax as a log-probability."""
        cls, dist = self.heads(x)
        if self.training:
            return cls, dist
        return torch.log((cls.float().softmax(-1) + dist.float().softmax(-1)) / 2)


def deit(name: str = "vit-b/16", *, distilled: bool = True, **overrides) -> VisionTransformer:
    """DeiT-Ti/S/B are ViT sizes ('vit-ti/16'); `distilled` adds the distillation token (⚗)."""
    cls = DistilledVisionTransformer if distilled else VisionTransformer
    return cls(config(name, **overrides))


def _register() -> None:
    from papercli.models import ModelEntry, register_model, register_pattern

    # Table 1: DeiT-Ti, DeiT-S, DeiT-B at 16x16 patches, without and with the distillation token
    for size in ("ti", "s", "b"):
        register_model(
            f"deit-{size}/16", deit, paper="deit", name=f"vit-{size}/16", distilled=False
        )
        register_model(f"deit-{size}-distilled/16", deit, paper="deit", name=f"vit-{size}/16")
    register_pattern(  # any ViT size and patch, e.g. the mini recipe's deit-mini-distilled/7
        r"deit[-_](ti|s|b|l|h|mini)(-distilled)?[/_](\d+)",
        lambda m: ModelEntry(
            m.group(0),
            deit,
            {"name": f"vit-{m.group(1)}/{m.group(3)}", "distilled": bool(m.group(2))},
            "deit",
        ),
    )


_register()
