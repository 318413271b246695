"""SSD: Single Shot MultiBox Detector (Liu et al., 2015, arXiv:1512.02325).

Section 2.1 (Model, Fig. 2): a truncated base network (VGG-16 through conv5_3, fc6/fc7 turned
into convolutions — fc6 a 3x3 conv dilated by 6 — and pool5 a 3x3 stride-1 pool), then extra
conv layers that shrink the map step by step. Several of these maps ("sources": conv4_3, fc7,
conv8_2 … conv11_2) each get small 3x3 conv predictors: per location and default box, c class
scores (background included) and 4 offsets. conv4_3's features are L2-normalised and rescaled
by a learned per-channel scale (initially 20, ParseNet), as its norm differs from the others'.

Section 2.2 (Training):
- default boxes (Eq. 4): the k-th of m maps has scale s_k = s_min + (s_max − s_min)(k − 1)/(m − 1)
  (s_min 0.2, s_max 0.9), aspect ratios a_r ∈ {1, 2, 3, 1/2, 1/3} with w = s_k √a_r,
  h = s_k / √a_r, and one more box of scale s'_k = √(s_k s_{k+1}) for a_r = 1; centres at
  ((i + 0.5)/|f_k|, (j + 0.5)/|f_k|);
- matching: each ground truth to the default box of best IoU, then every default box to any
  ground truth with IoU > 0.5;
- loss (Eq. 1-3): L = (L_conf + α L_loc) / N over the N matched boxes, L_loc the smooth L1 of
  the offsets (centre relative to the default box's size, log of the size ratio; scaled by the
  reference code's "variances" 0.1 / 0.2), L_conf the softmax cross-entropy;
- hard negative mining: of the unmatched boxes, only the highest-loss ones, at most 3 for every
  positive, enter L_conf.
Inference (Section 3): per class, scores above 0.01, NMS at IoU 0.45, the best 200 per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from papercli.methods import boxes as B
from papercli.models.convnet import Layer, conv_stack, output_side
from papercli.models.yolo import select

VARIANCES = (10.0, 10.0, 5.0, 5.0)  # 1 / (0.1, 0.1, 0.2, 0.2): the reference code's scaling

# SSD300 (Fig. 2): VGG-16 to conv4_3 (38 x 38), to fc7 (19 x 19), then conv8_2 … conv11_2
SSD300_STAGES: tuple[tuple[Layer, ...], ...] = (
    ((3, 64), (3, 64), "M", (3, 128), (3, 128), "M",
     (3, 256), (3, 256), (3, 256), "MC", (3, 512), (3, 512), (3, 512)),
    ("M", (3, 512), (3, 512), (3, 512), "M3", (3, 1024, 1, 6), (1, 1024)),
    ((1, 256), (3, 512, 2)),
    ((1, 128), (3, 256, 2)),
    ((1, 128), (3, 256, 1, 1, 0)),
    ((1, 128), (3, 256, 1, 1, 0)),
)  # fmt: skip

# the mini: 64 px -> maps of 16, 8, 4 and 2
MINI_STAGES: tuple[tuple[Layer, ...], ...] = (
    ((3, 16), "M", (3, 32), "M", (3, 64)),
    ("M", (3, 64), (1, 64)),
    ((1, 32), (3, 64, 2)),
    ((1, 32), (3, 64, 2)),
)  # fmt: skip


@dataclass(frozen=True)
class SSDConfig:
    in_channels: int = 3
    image_size: int = 300
    num_classes: int = 80  # object classes; the predictors add one for background
    stages: tuple[tuple[Layer, ...], ...] = SSD300_STAGES
    ratios: tuple[tuple[float, ...], ...] = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    s_min: float = 0.2
    s_max: float = 0.9
    l2norm: bool = True  # rescale the first source (conv4_3)
    batch_norm: bool = False
    neg_pos_ratio: float = 3.0
    alpha: float = 1.0

    def boxes_per_location(self, k: int) -> int:
        return 2 + 2 * len(self.ratios[k])  # a_r = 1, the extra s'_k, then a_r and 1 / a_r


CONFIGS = {
    "ssd300": SSDConfig(),
    "ssd-mini": SSDConfig(
        in_channels=1,
        image_size=64,
        num_classes=10,
        stages=MINI_STAGES,
        ratios=((2,),) * 4,
        l2norm=False,
        batch_norm=True,
    ),
}


def default_boxes(cfg: SSDConfig) -> torch.Tensor:
    """(D, 4) default boxes, xyxy in pixels, in the order of the predictors' outputs: source by
    source, row by row, column by column, then the box shapes of a location (Eq. 4)."""
    m, side, found = len(cfg.stages), cfg.image_size, []
    scales = [cfg.s_min + (cfg.s_max - cfg.s_min) * k / max(1, m - 1) for k in range(m + 1)]
    spec: tuple[Layer, ...] = ()
    for k, stage in enumerate(cfg.stages):
        spec += stage
        f = output_side(spec, side)
        s = scales[k]
        shapes = [(s, s), (math.sqrt(s * scales[k + 1]),) * 2]
        for r in cfg.ratios[k]:
            shapes += [(s * math.sqrt(r), s / math.sqrt(r)), (s / math.sqrt(r), s * math.sqrt(r))]
        wh = torch.tensor(shapes)  # (A, 2)
        centres = (torch.arange(f, dtype=torch.float32) + 0.5) / f
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        c = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, len(shapes), 2)
        cxcywh = torch.cat([c, wh.expand(f * f, -1, -1)], -1).reshape(-1, 4)
        found.append(B.cxcywh_to_xyxy(cxcywh).clamp(0, 1))
    return torch.cat(found) * side


class SSD(nn.Module):
    """images (N, C_in, H, W) -> (class logits (N, D, C + 1), offsets (N, D, 4)) for the D
    default boxes of `default_boxes(cfg)`."""

    def __init__(self, cfg: SSDConfig = SSDConfig()):
        super().__init__()
        self.cfg = cfg
        self.stages = nn.ModuleList()
        self.cls_heads, self.box_heads = nn.ModuleList(), nn.ModuleList()
        channels = cfg.in_channels
        for k, stage in enumerate(cfg.stages):
            layers, channels = conv_stack(
                stage, channels, lambda: nn.ReLU(inplace=True), cfg.batch_norm
            )
            self.stages.append(layers)
            a = cfg.boxes_per_location(k)
            self.cls_heads.append(nn.Conv2d(channels, a * (cfg.num_classes + 1), 3, padding=1))
            self.box_heads.append(nn.Conv2d(channels, a * 4, 3, padding=1))
        first = cfg.stages[0][-1]
        self.scale = nn.Parameter(torch.full((first[1],), 20.0)) if cfg.l2norm else None
        self.register_buffer("defaults", default_boxes(cfg), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, offsets = [], []
        for k, (stage, cls, box) in enumerate(
            zip(self.stages, self.cls_heads, self.box_heads, strict=True)
        ):
            x = stage(x)
            source = x
            if k == 0 and self.scale is not None:
                source = F.normalize(x, dim=1) * self.scale.view(1, -1, 1, 1)
            logits.append(_flat(cls(source), self.cfg.num_classes + 1))
            offsets.append(_flat(box(source), 4))
        return torch.cat(logits, 1), torch.cat(offsets, 1)


def _flat(out: torch.Tensor, width: int) -> torch.Tensor:
    """(N, A * width, H, W) -> (N, H * W * A, width): row, column, then box shape."""
    n = len(out)
    return out.permute(0, 2, 3, 1).reshape(n, -1, width)


def ssd(name: str = "ssd300", **overrides) -> SSD:
    return SSD(replace(CONFIGS[name], **overrides))


# --- Section 2.2: matching and the loss --------------------------------------------------------
def match(defaults: torch.Tensor, target: dict, threshold: float = 0.5):
    """Labels (D,) — 0 background, 1 + class for a matched default box — and the matched ground
    truth box (D, 4) of every default box."""
    gt = target["boxes"].float()
    labels = torch.zeros(len(defaults), dtype=torch.long, device=defaults.device)
    if len(gt) == 0:
        return labels, torch.zeros_like(defaults)
    iou = B.box_iou(gt, defaults)  # (G, D)
    best_iou, best_gt = iou.max(dim=0)
    forced = iou.argmax(dim=1)  # each ground truth keeps its best default box
    best_gt[forced] = torch.arange(len(gt), device=gt.device)
    best_iou[forced] = 1.0
    positive = best_iou > threshold
    labels[positive] = target["labels"][best_gt[positive]] + 1
    return labels, gt[best_gt]


def ssd_loss(
    logits: torch.Tensor, offsets: torch.Tensor, targets: list[dict], cfg: SSDConfig, defaults
) -> torch.Tensor:
    """Eq. 1: (L_conf + α L_loc) / N with hard negative mining (at most 3 negatives per positive,
    the highest-loss ones, per image)."""
    logits, offsets = logits.float(), offsets.float()
    matched = [match(defaults, t) for t in targets]
    labels = torch.stack([m[0] for m in matched])  # (N, D)
    gt = torch.stack([m[1] for m in matched])  # (N, D, 4)
    positive = labels > 0
    n_pos = positive.sum()
    conf = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")  # (N, D)
    with torch.no_grad():
        ranked = conf.masked_fill(positive, -1.0).argsort(dim=1, descending=True)
        rank = ranked.argsort(dim=1)  # each box's place in its image's list of negatives
        negative = rank < (cfg.neg_pos_ratio * positive.sum(dim=1, keepdim=True))
        negative &= ~positive
    reference = defaults.expand_as(gt)[positive]
    loc = F.smooth_l1_loss(
        offsets[positive], B.encode(reference, gt[positive], VARIANCES), reduction="sum"
    )
    return (conf[positive | negative].sum() + cfg.alpha * loc) / n_pos.clamp(min=1)


@torch.no_grad()
def ssd_detect(
    logits: torch.Tensor,
    offsets: torch.Tensor,
    cfg: SSDConfig,
    defaults: torch.Tensor,
    nms_iou: float = 0.45,
    top_k: int = 200,
) -> list[dict]:
    """Per image: the default boxes moved by their offsets, scored by the softmax of each object
    class, the best `top_k` (box, class) pairs after per-class NMS."""
    scores = logits.float().softmax(-1)[..., 1:]
    found = []
    for s, d in zip(scores, offsets.float(), strict=True):
        boxes = B.clip_boxes(B.decode(defaults, d, VARIANCES), cfg.image_size, cfg.image_size)
        found.append(select(boxes, s, nms_iou, top_k))
    return found


def _register() -> None:
    from papercli.models import register_model

    for name in CONFIGS:
        register_model(name, ssd, paper="ssd", name=name)


_register()
