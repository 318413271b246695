"""The region-based detectors: R-CNN, Fast R-CNN, Faster R-CNN and Mask R-CNN, as modules that
compute outputs (the losses that train them live in `papercli.methods.region_training`).

    R-CNN        (Girshick et al. 2014, Sec. 2.1-2.2): each proposal is cut out of the image and
                 warped to a fixed size (`warp` pixels; 227 in the paper) and run through the
                 whole CNN on its own, then classified and its box refined.
    Fast R-CNN   (Girshick 2015, Sec. 2, Fig. 1): the CNN runs ONCE per image; each proposal is
                 projected onto the shared feature map and RoI-pooled to a fixed h x w grid, then
                 two fully connected layers feed a softmax over K + 1 classes and per-class box
                 deltas (Eq. 1 trains both).
    Faster R-CNN (Ren et al. 2015, Sec. 3.1, Fig. 3): a Region Proposal Network slides a 3x3 conv
                 over the same feature map and, at every position, scores k anchors (several
                 scales and aspect ratios) for objectness and regresses each to a box; its
                 top proposals after NMS feed the Fast R-CNN head.
    Mask R-CNN   (He et al. 2017, Sec. 3, Fig. 4): RoIAlign instead of RoIPool, and a small FCN
                 per RoI predicting one m x m mask per class, decoupled from classification.

Backbones: a VGG-style conv stack (`conv_layers`; VGG-16's 13 conv layers at paper scale, stride
16, the papers' model; a few layers at mini scale), or a ResNet with a Feature Pyramid Network
(Lin et al. 2017; Mask R-CNN's R-50-FPN / R-101-FPN) with BN frozen, as Detectron trains it.
Every head predicts for K + 1 classes (index 0 = background), as the papers' released models do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from papercli.methods.boxes import batched_nms, clip_boxes, decode, nms
from papercli.methods.roi import paste_masks, roi_align, roi_pool

# VGG-16's convolutional layers (Simonyan & Zisserman, Table 1 column D) up to conv5_3: Fast R-CNN
# replaces the last max pool by RoI pooling (Sec. 2.1), so the feature map has stride 16
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # Fast R-CNN's box-target normalisation (std 0.1, 0.2)
RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # Faster R-CNN Eq. 2: plain anchor-relative targets


@dataclass(frozen=True)
class DetectorConfig:
    kind: Literal["rcnn", "fast", "faster"] = "faster"
    num_classes: int = 20  # object classes; the heads add background
    in_channels: int = 3
    backbone: Literal["vgg", "resnet50", "resnet101"] = "vgg"
    conv_layers: tuple = VGG16  # the VGG-style stack: channels, "M" = 2x2 max pool
    fpn_channels: int = 256
    roi: Literal["pool", "align"] = "pool"  # RoIPool (Fast/Faster R-CNN) or RoIAlign (Mask R-CNN)
    pool_size: int = 7  # h = w of the pooled RoI feature (7x7 for VGG-16's fc6)
    sampling_ratio: int = 2  # RoIAlign samples per bin and axis
    hidden: int = 4096  # fc6 / fc7 width (VGG-16: 4096; FPN's 2-fc head: 1024)
    dropout: float = 0.5  # after fc6 and fc7 (VGG's, kept by Fast R-CNN); 0 for FPN heads
    warp: int = 224  # R-CNN: the side every proposal is warped to before its CNN pass
    # Faster R-CNN's RPN: anchor sides per feature level (one tuple per level) and aspect ratios
    anchor_sizes: tuple[tuple[int, ...], ...] = ((128, 256, 512),)  # --set …="32,64;128"
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_channels: int = 512  # the 3x3 "intermediate layer" (512-d for VGG-16, Sec. 3.1)
    rpn_softmax: bool = True  # 2k scores (two-class softmax, Sec. 3.1) or k logistic ones (FPN)
    # the 3x3 window's dilation: 1 = the paper's; d > 1 spreads its taps d cells apart, so a
    # small network's RPN sees as much of an object as VGG-16's (228 px) sees of a VOC object
    rpn_dilation: int = 1
    mask: bool = False  # Mask R-CNN's mask branch
    mask_convs: int = 4  # FPN mask head: four 3x3 convs, a 2x deconv, a 1x1 per class (Fig. 4)
    mask_channels: int = 256
    mask_pool: int = 14  # RoIAlign side for the mask branch; masks come out at twice that


class ConvStack(nn.Module):
    """VGG-style: 3x3 convolutions with ReLU, 2x2 max pools at "M"; one output map."""

    def __init__(self, layers: tuple, in_channels: int):
        super().__init__()
        modules: list[nn.Module] = []
        channels, self.stride = in_channels, 1
        for layer in layers:
            if layer == "M":
                modules.append(nn.MaxPool2d(2))
                self.stride *= 2
            else:
                modules += [nn.Conv2d(channels, int(layer), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(layer)
        self.body = nn.Sequential(*modules)
        self.out_channels, self.strides = channels, (self.stride,)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.body(x)]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine terms (buffers, not parameters): Detectron
    trains detection backbones this way, since a few images per GPU give useless batch stats."""

    def __init__(self, channels: int):
        super().__init__()
        for name, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0)):
            self.register_buffer(name, torch.full((channels,), value))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features))
        else:
            freeze_batchnorm(child)
    return module


class ResNetFPN(nn.Module):
    """A ResNet's C2…C5 with a Feature Pyramid Network (Lin et al. 2017, Sec. 3): 1x1 lateral
    convs, top-down 2x upsampling and addition, a 3x3 conv on each merged map, and P6 by
    subsampling P5 (for the RPN's largest anchors). Outputs P2…P6 at strides 4…64."""

    def __init__(self, depth: int, in_channels: int, channels: int):
        super().__init__()
        from papercli.models.resnet import imagenet_resnet

        resnet = freeze_batchnorm(imagenet_resnet(depth, in_channels=in_channels))
        self.stem, self.stages = resnet.stem, resnet.stages  # the classifier's fc is dropped
        widths = [f["channels"] for f in resnet.feature_info]
        self.lateral = nn.ModuleList(nn.Conv2d(w, channels, 1) for w in widths)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in widths)
        self.out_channels, self.strides = channels, (4, 8, 16, 32, 64)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, maps = self.stem(x), []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        top = self.lateral[-1](maps[-1])
        merged = [top]
        for lateral, c in zip(self.lateral[-2::-1], maps[-2::-1], strict=True):
            top = lateral(c) + F.interpolate(top, size=c.shape[-2:], mode="nearest")
            merged.insert(0, top)
        out = [conv(m) for conv, m in zip(self.output, merged, strict=True)]
        return [*out, F.max_pool2d(out[-1], 1, stride=2)]


def anchor_grid(
    height: int, width: int, stride: int, sizes: tuple, ratios: tuple, device=None
) -> torch.Tensor:
    """(H·W·k, 4) anchors centred on each feature cell's centre in the image, k = sizes x ratios
    (Faster R-CNN Sec. 3.1.1: 3 scales x 3 aspect ratios, k = 9), ordered (y, x, anchor) like
    the RPN's outputs. An anchor of side s and ratio r = h / w has area s²."""
    shapes = torch.tensor(
        [[s / math.sqrt(r), s * math.sqrt(r)] for s in sizes for r in ratios], device=device
    )  # (k, 2) as (w, h)
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)
    half = shapes[None] / 2
    return torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4)


class RPN(nn.Module):
    """Faster R-CNN Sec. 3.1, Fig. 3: a 3x3 conv ("the n x n sliding window") and ReLU, then
    sibling 1x1 convs: objectness (2k or k scores) and 4k box deltas. Shared by all FPN levels."""

    def __init__(self, in_channels: int, mid: int, anchors: int, softmax: bool, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, mid, 3, padding=dilation, dilation=dilation)
        self.scores_per_anchor = 2 if softmax else 1
        self.cls = nn.Conv2d(mid, anchors * self.scores_per_anchor, 1)
        self.reg = nn.Conv2d(mid, anchors * 4, 1)
        for conv in (self.conv, self.cls, self.reg):  # N(0, 0.01²), Sec. 3.1.3
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, H·W·k) objectness logits and (N, H·W·k, 4) deltas, in anchor_grid's order. With
        two softmax scores per anchor, the logit is their difference: softmax over (bg, fg) is
        the logistic function of it, so both forms train the same way."""
        h = F.relu(self.conv(x))
        n, _, height, width = h.shape
        scores = self.cls(h).permute(0, 2, 3, 1).reshape(n, height * width, -1)
        if self.scores_per_anchor == 2:
            scores = scores.view(n, height * width, -1, 2)
            scores = scores[..., 1] - scores[..., 0]
        deltas = self.reg(h).permute(0, 2, 3, 1).reshape(n, -1, 4)
        return scores.reshape(n, -1), deltas


class BoxHead(nn.Module):
    """Fast R-CNN Fig. 1: the pooled RoI feature through fc6 and fc7 (VGG-16's, 4096-d, with
    dropout; FPN's 2-fc head: 1024-d), then sibling outputs: K + 1 class scores and K + 1 boxes."""

    def __init__(self, channels: int, pool: int, hidden: int, num_classes: int, dropout: float):
        super().__init__()
        self.fc6 = nn.Linear(channels * pool * pool, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.cls_score = nn.Linear(hidden, num_classes + 1)
        self.bbox_pred = nn.Linear(hidden, 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)  # Sec. 2.2: N(0, 0.01²) and N(0, 0.001²)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.dropout(F.relu(self.fc6(pooled.flatten(1))))
        h = self.dropout(F.relu(self.fc7(h)))
        return self.cls_score(h), self.bbox_pred(h).view(len(h), -1, 4)


class MaskHead(nn.Module):
    """Mask R-CNN Fig. 4 (right, FPN): 3x3 convs on the RoIAligned feature, a 2x2 stride-2
    deconvolution, and a 1x1 conv giving one m x m mask logit map per class."""

    def __init__(self, in_channels: int, convs: int, channels: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1)]
            layers += [nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(channels if convs else in_channels, channels, 2, 2)
        self.predictor = nn.Conv2d(channels, num_classes + 1, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.predictor(F.relu(self.deconv(self.convs(pooled))))


def _backbone(cfg: DetectorConfig) -> nn.Module:
    if cfg.backbone == "vgg":
        return ConvStack(cfg.conv_layers, cfg.in_channels)
    return ResNetFPN(int(cfg.backbone.removeprefix("resnet")), cfg.in_channels, cfg.fpn_channels)


class RegionCNN(nn.Module):
    """R-CNN: every region warped to `warp` x `warp` pixels (anisotropically, Sec. 2.1) and run
    through its own CNN pass; the last map is max-pooled to the head's grid (VGG-16's pool5:
    14x14 → 7x7 at 224 px) and classified by the same fc head as Fast R-CNN's."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = _backbone(cfg)
        self.head = BoxHead(
            self.backbone.out_channels, cfg.pool_size, cfg.hidden, cfg.num_classes, cfg.dropout
        )

    def shared(self, images: torch.Tensor) -> torch.Tensor:
        return images  # nothing is shared between regions: each gets the whole network

    def box_forward(self, images: torch.Tensor, rois: torch.Tensor):
        crops = roi_align(images, rois, self.cfg.warp, sampling_ratio=2)  # bilinear warp
        maps = self.backbone(crops)[0]
        return self.head(F.adaptive_max_pool2d(maps, self.cfg.pool_size))


class TwoStageDetector(nn.Module):
    """Fast R-CNN (proposals given from outside), Faster R-CNN (`rpn`), Mask R-CNN (`mask`)."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = _backbone(cfg)
        channels = self.backbone.out_channels
        self.head = BoxHead(channels, cfg.pool_size, cfg.hidden, cfg.num_classes, cfg.dropout)
        self.rpn = None
        if cfg.kind == "faster":
            k = len(cfg.anchor_sizes[0]) * len(cfg.anchor_ratios)
            self.rpn = RPN(channels, cfg.rpn_channels, k, cfg.rpn_softmax, cfg.rpn_dilation)
        self.mask_head = (
            MaskHead(channels, cfg.mask_convs, cfg.mask_channels, cfg.num_classes)
            if cfg.mask
            else None
        )

    def shared(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The feature map(s) every RoI of the image reads: computed once (Fast R-CNN Sec. 2)."""
        return self.backbone(images)

    # --- RoI features -----------------------------------------------------------------------
    def _levels(self, rois: torch.Tensor) -> torch.Tensor:
        """Which pyramid level each RoI reads (FPN Eq. 1: k = ⌊4 + log2(√(wh) / 224)⌋ in 2…5)."""
        if len(self.backbone.strides) == 1:
            return torch.zeros(len(rois), dtype=torch.long, device=rois.device)
        side = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).clamp(min=1e-6).sqrt()
        return (torch.floor(4 + torch.log2(side / 224)).clamp(2, 5) - 2).long()

    def roi_features(self, maps: list[torch.Tensor], rois: torch.Tensor, size: int):
        """(K, C, size, size): RoIPool or RoIAlign of each RoI on its level's map."""
        levels = self._levels(rois)
        out = maps[0].new_zeros(len(rois), maps[0].shape[1], size, size)
        for level in levels.unique().tolist():
            pick = (levels == level).nonzero().flatten()
            scale = 1.0 / self.backbone.strides[level]
            if self.cfg.roi == "align":
                out[pick] = roi_align(maps[level], rois[pick], size, scale, self.cfg.sampling_ratio)
            else:
                out[pick] = roi_pool(maps[level], rois[pick], size, scale)
        return out

    def box_forward(self, maps: list[torch.Tensor], rois: torch.Tensor):
        """(K, K+1) class logits and (K, K+1, 4) box deltas of each RoI."""
        return self.head(self.roi_features(maps, rois, self.cfg.pool_size))

    def mask_forward(self, maps: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """(K, K+1, m, m) mask logits of each RoI (m = 2 x mask_pool)."""
        return self.mask_head(self.roi_features(maps, rois, self.cfg.mask_pool))

    # --- the RPN ----------------------------------------------------------------------------
    def rpn_forward(self, maps: list[torch.Tensor]):
        """Objectness logits (N, A), deltas (N, A, 4) and the anchors (A, 4) over every level
        that has anchor sizes (FPN: P2…P6, one size each; the RoI heads read only P2…P5)."""
        rpn_maps = maps if len(maps) == len(self.cfg.anchor_sizes) else maps[:1]
        scores, deltas, anchors = [], [], []
        for level, fmap in enumerate(rpn_maps):
            s, d = self.rpn(fmap)
            scores.append(s)
            deltas.append(d)
            anchors.append(
                anchor_grid(
                    *fmap.shape[-2:],
                    self.backbone.strides[level],
                    self.cfg.anchor_sizes[level],
                    self.cfg.anchor_ratios,
                    fmap.device,
                )
            )
        return torch.cat(scores, 1), torch.cat(deltas, 1), torch.cat(anchors)

    @torch.no_grad()
    def propose(
        self,
        scores: torch.Tensor,
        deltas: torch.Tensor,
        anchors: torch.Tensor,
        image_size: tuple[int, int],
        pre_nms: int,
        post_nms: int,
        nms_iou: float = 0.7,
        min_size: float = 1.0,
    ) -> list[torch.Tensor]:
        """Each image's proposals (Sec. 3.3): anchors moved by their deltas, clipped to the image,
        tiny boxes dropped, the `pre_nms` most object-like kept, NMS at IoU 0.7, then the top
        `post_nms` (2000 when training, 300 at test time in the paper). No gradient flows
        back through the boxes ("approximate joint training", Sec. 3.2)."""
        height, width = image_size
        out = []
        for s, d in zip(scores.float(), deltas.float(), strict=True):
            top = s.topk(min(pre_nms, len(s))).indices
            boxes = clip_boxes(decode(anchors[top], d[top], RPN_WEIGHTS), height, width)
            keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & (
                (boxes[:, 3] - boxes[:, 1]) >= min_size
            )
            boxes, s_top = boxes[keep], s[top][keep]
            out.append(boxes[nms(boxes, s_top, nms_iou)[:post_nms]])
        return out


def detections(
    rois: torch.Tensor,
    logits: torch.Tensor,
    deltas: torch.Tensor,
    num_images: int,
    image_size: tuple[int, int],
    score_threshold: float = 0.05,
    nms_iou: float = 0.3,
    max_detections: int = 100,
    candidates: int = 1000,
) -> list[dict[str, torch.Tensor]]:
    """Per image {'boxes', 'scores', 'labels' (0-based object class), 'rois' (the RoI each
    detection came from)}: every RoI gives one scored box per object class (its softmax score and
    its class's refined box); the `candidates` best above `score_threshold` go through per-class
    NMS (Fast R-CNN Sec. 4, threshold 0.3 as in R-CNN), which keeps the best `max_detections`."""
    height, width = image_size
    probs = logits.float().softmax(-1)[:, 1:]  # drop background
    classes = probs.shape[1]
    boxes = decode(
        rois[:, None, 1:].expand(-1, classes, -1).reshape(-1, 4),
        deltas[:, 1:].float().reshape(-1, 4),
        HEAD_WEIGHTS,
    )
    boxes = clip_boxes(boxes, height, width).view(-1, classes, 4)
    out = []
    image = rois[:, 0].long()
    for i in range(num_images):
        pick = (image == i).nonzero().flatten()
        p, b = probs[pick], boxes[pick]
        roi_idx, label = (p > score_threshold).nonzero(as_tuple=True)
        kb, ks = b[roi_idx, label], p[roi_idx, label]
        keep = ((kb[:, 2] - kb[:, 0]) > 0.5) & ((kb[:, 3] - kb[:, 1]) > 0.5)
        top = ks[keep].topk(min(candidates, int(keep.sum()))).indices
        kb, ks, label, roi_idx = (v[keep][top] for v in (kb, ks, label, roi_idx))
        kept = batched_nms(kb, ks, label, nms_iou)[:max_detections]
        out.append(
            {
                "boxes": kb[kept],
                "scores": ks[kept],
                "labels": label[kept],
                "rois": pick[roi_idx[kept]],
            }
        )
    return out


def masks_for(
    model: TwoStageDetector, maps: list[torch.Tensor], found: list[dict], image_size
) -> None:
    """Mask R-CNN inference (Sec. 3, "Inference"): the mask branch runs on the final detected
    boxes (not the proposals), the mask of the predicted class is taken and pasted into the box:
    adds 'masks' (k, H, W) probabilities to each image's detections."""
    boxes = [f["boxes"] for f in found]
    index = torch.cat(
        [torch.full((len(b),), i, device=maps[0].device) for i, b in enumerate(boxes)]
    )
    rois = torch.cat([index[:, None].float(), torch.cat(boxes)], 1)
    logits = model.mask_forward(maps, rois) if len(rois) else maps[0].new_zeros(0, 1, 1, 1)
    start = 0
    for f in found:
        k = len(f["boxes"])
        chosen = logits[start : start + k][torch.arange(k), f["labels"] + 1].float().sigmoid()
        f["masks"] = paste_masks(chosen, f["boxes"], *image_size)
        start += k


def build(cfg: DetectorConfig) -> nn.Module:
    return RegionCNN(cfg) if cfg.kind == "rcnn" else TwoStageDetector(cfg)


# ----------------------------------------------------------------------------- named models
# The papers' own detectors (VOC's 20 classes for the VGG-16 ones, COCO's 80 for Mask R-CNN's;
# `create_model(name, num_classes=…)` for other label sets) and a small one for CPUs.
FPN_HEAD = dict(
    hidden=1024,
    dropout=0.0,
    anchor_sizes=((32,), (64,), (128,), (256,), (512,)),
    rpn_channels=256,
    rpn_softmax=False,
    roi="align",
)
MINI_LAYERS = (16, "M", 32, "M", 32, 32)  # stride 4: a 64 px image gives a 16x16 map
MINI = dict(
    conv_layers=MINI_LAYERS,
    in_channels=1,
    hidden=256,
    dropout=0.0,
    warp=28,  # 28 px at stride 4: the same 7x7 grid as RoI pooling
    anchor_sizes=((12, 20, 32),),
    rpn_channels=32,
)
NAMED = {
    "rcnn-vgg16": dict(kind="rcnn"),
    "fast-rcnn-vgg16": dict(kind="fast"),
    "faster-rcnn-vgg16": dict(kind="faster"),
    "faster-rcnn-r50-fpn": dict(kind="faster", backbone="resnet50", num_classes=80, **FPN_HEAD),
    "mask-rcnn-r50-fpn": dict(
        kind="faster", backbone="resnet50", num_classes=80, mask=True, **FPN_HEAD
    ),
    "mask-rcnn-r101-fpn": dict(
        kind="faster", backbone="resnet101", num_classes=80, mask=True, **FPN_HEAD
    ),
    "faster-rcnn-mini": dict(kind="faster", num_classes=10, **MINI),
}


def create(name: str, **overrides) -> nn.Module:
    return build(DetectorConfig(**{**NAMED[name], **overrides}))


def _register() -> None:
    from papercli.models import register_model

    papers = {"rcnn": "rcnn", "fast": "fast-rcnn", "faster": "faster-rcnn", "mask": "mask-rcnn"}
    for name in NAMED:
        register_model(name, create, paper=papers[name.split("-")[0]], name=name)


_register()
