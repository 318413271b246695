"""YOLO v1 (Redmon, Divvala, Girshick & Farhadi, 2015, arXiv:1506.02640): detection as one
regression from image pixels to boxes and class probabilities, in one network evaluation.

Section 2 (Unified Detection): the image is cut into an S x S grid; the cell a box's centre falls
in is responsible for it. Each cell predicts B boxes — (x, y) the centre relative to the cell's
bounds, (w, h) relative to the whole image, and a confidence Pr(Object) * IOU(pred, truth) — and
one set of C conditional class probabilities Pr(Class_i | Object): an S x S x (B * 5 + C) tensor.

Section 2.1 (Network Design, Fig. 3): 24 conv layers (alternating 1x1 reductions and 3x3 convs,
leaky ReLU 0.1) then 2 fully connected layers; the last is linear and its output is the tensor.
Dropout 0.5 after the first fully connected layer (Section 2.2). No batch norm (YOLOv2 added it;
`batch_norm=True` is the mini's option to train from scratch in minutes instead of ImageNet
pre-training), and `hidden=0` the mini's 1x1 conv per cell in place of the two fully connected
layers (recipes/yolo.py says why).

Section 2.2 (Training): the sum-squared error of Eq. 3, with λ_coord = 5 and λ_noobj = 0.5;
square roots of w and h ("small deviations in large boxes matter less than in small boxes"), so
the network predicts √w and √h directly (as darknet's `sqrt` option does); the predictor
"responsible" for an object is the one of its cell whose current prediction has the highest IOU
with the truth; its confidence target is that IOU.

Section 2.3 (Inference): class-specific confidence = Pr(Class_i | Object) * Pr(Object) * IOU,
then non-maximal suppression.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from papercli.methods import boxes as B
from papercli.models.convnet import Layer, conv_stack, output_side

# Fig. 3: the 24 conv layers at 448 x 448 -> a 7 x 7 x 1024 map
PAPER_CONVS: tuple[Layer, ...] = (
    (7, 64, 2), "M",
    (3, 192), "M",
    (1, 128), (3, 256), (1, 256), (3, 512), "M",
    *((1, 256), (3, 512)) * 4, (1, 512), (3, 1024), "M",
    *((1, 512), (3, 1024)) * 2, (3, 1024), (3, 1024, 2),
    (3, 1024), (3, 1024),
)  # fmt: skip

# the mini: 64 x 64 -> an 8 x 8 map, the same pattern of 3x3 convs and 1x1 reductions
MINI_CONVS: tuple[Layer, ...] = (
    (3, 16), "M",
    (3, 32), "M",
    (1, 32), (3, 64), (3, 128), "M",
    (1, 64), (3, 128), (1, 64), (3, 128),
)  # fmt: skip


@dataclass(frozen=True)
class YOLOConfig:
    in_channels: int = 3
    image_size: int = 448
    grid: int = 7  # S
    boxes: int = 2  # B
    num_classes: int = 20  # C (PASCAL VOC)
    convs: tuple[Layer, ...] = PAPER_CONVS
    hidden: int = 4096  # the first fully connected layer; 0 = a 1x1 conv per cell instead
    dropout: float = 0.5
    batch_norm: bool = False
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5

    @property
    def outputs(self) -> int:
        return self.boxes * 5 + self.num_classes


CONFIGS = {
    "yolo": YOLOConfig(),
    "yolo-mini": YOLOConfig(
        in_channels=1,
        image_size=64,
        grid=8,
        num_classes=10,
        convs=MINI_CONVS,
        hidden=0,  # a 1x1 conv per cell (module note)
        dropout=0.0,
        batch_norm=True,
    ),
}


class YOLO(nn.Module):
    """images (N, C_in, H, W) -> predictions (N, S, S, B * 5 + C): per cell B boxes as
    (x, y, √w, √h, confidence), then the C class probabilities."""

    def __init__(self, cfg: YOLOConfig = YOLOConfig()):
        super().__init__()
        self.cfg = cfg

        def leaky() -> nn.Module:
            return nn.LeakyReLU(0.1, inplace=True)

        self.features, self.channels = conv_stack(cfg.convs, cfg.in_channels, leaky, cfg.batch_norm)
        self.map_size = output_side(cfg.convs, cfg.image_size)  # what the first FC layer sees
        if cfg.hidden:
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(self.channels * self.map_size**2, cfg.hidden),
                leaky(),
                nn.Dropout(cfg.dropout),
                nn.Linear(cfg.hidden, cfg.grid**2 * cfg.outputs),  # linear: the last layer
            )
        elif self.map_size == cfg.grid:  # each cell predicted from its own features
            self.head = nn.Sequential(nn.Conv2d(self.channels, cfg.outputs, 1), Permute(0, 2, 3, 1))
        else:
            raise ValueError(
                f"a YOLO without fully connected layers needs a {cfg.grid}x{cfg.grid} feature "
                f"map; its conv layers make {self.map_size}x{self.map_size}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.cfg.grid
        return self.head(self.features(x)).view(len(x), s, s, self.cfg.outputs)


class Permute(nn.Module):
    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


def yolo(name: str = "yolo", **overrides) -> YOLO:
    return YOLO(replace(CONFIGS[name], **overrides))


# --- Eq. 3 ------------------------------------------------------------------------------------
def _cell_targets(
    targets: list[dict], cfg: YOLOConfig, size: float, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image and cell: whether an object's centre is in it, that object's box (x, y relative
    to the cell, √w, √h relative to the image), its box in image units (for the IOU) and its
    one-hot class. A cell holds one object (one set of class probabilities): of objects whose
    centres share a cell, the one listed last keeps it (the front-most in a scene)."""
    s, n = cfg.grid, len(targets)
    has = torch.zeros(n, s, s, dtype=torch.bool, device=device)
    box = torch.zeros(n, s, s, 4, device=device)
    xyxy = torch.zeros(n, s, s, 4, device=device)
    onehot = torch.zeros(n, s, s, cfg.num_classes, device=device)
    for i, t in enumerate(targets):
        unit = t["boxes"].float() / size
        cx, cy, w, h = B.xyxy_to_cxcywh(unit).unbind(-1)
        col = (cx * s).long().clamp(0, s - 1)
        row = (cy * s).long().clamp(0, s - 1)
        for k in range(len(unit)):  # a handful of objects: the order is the rule, so a loop
            r, c = row[k], col[k]
            has[i, r, c] = True
            box[i, r, c] = torch.stack([cx[k] * s - c, cy[k] * s - r, w[k].sqrt(), h[k].sqrt()])
            xyxy[i, r, c] = unit[k]
            onehot[i, r, c] = 0
            onehot[i, r, c, t["labels"][k]] = 1
    return has, box, xyxy, onehot


def _to_image_boxes(pred: torch.Tensor, grid: int) -> torch.Tensor:
    """(…, S, S, B, ≥4) predictions (x, y, √w, √h) -> xyxy boxes in units of the image."""
    s = grid
    rows = torch.arange(s, device=pred.device, dtype=pred.dtype).view(s, 1, 1)
    cols = torch.arange(s, device=pred.device, dtype=pred.dtype).view(1, s, 1)
    cx, cy = (pred[..., 0] + cols) / s, (pred[..., 1] + rows) / s
    return B.cxcywh_to_xyxy(torch.stack([cx, cy, pred[..., 2] ** 2, pred[..., 3] ** 2], -1))


def yolo_loss(out: torch.Tensor, targets: list[dict], cfg: YOLOConfig) -> torch.Tensor:
    """Eq. 3, summed over cells and predictors, averaged over the images of the batch."""
    n, s, nb = len(out), cfg.grid, cfg.boxes
    out = out.float()
    pred = out[..., : nb * 5].reshape(n, s, s, nb, 5)
    classes = out[..., nb * 5 :]
    has, box, xyxy, onehot = _cell_targets(targets, cfg, cfg.image_size, out.device)

    # the responsible predictor: highest IOU with the truth among the cell's B predictions
    obj_pred = pred[has]  # (K, B, 5)
    with torch.no_grad():
        found = _to_image_boxes(pred.detach(), s)[has]  # (K, B, 4)
        truth = xyxy[has]
        k = len(truth)
        iou = B.box_iou(found.reshape(-1, 4), truth).view(k, nb, k)
        iou = iou[torch.arange(k), :, torch.arange(k)]  # (K, B): each with its own truth
        best = iou.argmax(dim=1)
    resp = torch.zeros(n, s, s, nb, dtype=torch.bool, device=out.device)
    resp[has] = nn.functional.one_hot(best, nb).bool()
    chosen = obj_pred[torch.arange(k), best]  # (K, 5)

    coord = ((chosen[:, :4] - box[has]) ** 2).sum()
    obj = ((chosen[:, 4] - iou[torch.arange(k), best]) ** 2).sum()
    noobj = (pred[..., 4][~resp] ** 2).sum()
    cls = ((classes[has] - onehot[has]) ** 2).sum()
    return (cfg.lambda_coord * coord + obj + cfg.lambda_noobj * noobj + cls) / n


# --- Section 2.3 ------------------------------------------------------------------------------
@torch.no_grad()
def yolo_detect(
    out: torch.Tensor, cfg: YOLOConfig, nms_iou: float = 0.5, top_k: int = 200
) -> list[dict]:
    """Boxes (pixels, clipped to the image) scored by class-specific confidence, after per-class
    NMS; only the `top_k` best (box, class) pairs of an image enter NMS."""
    n, s, nb = len(out), cfg.grid, cfg.boxes
    out = out.float()
    pred = out[..., : nb * 5].reshape(n, s, s, nb, 5)
    boxes = _to_image_boxes(pred, s).reshape(n, -1, 4) * cfg.image_size
    boxes = B.clip_boxes(boxes.reshape(-1, 4), cfg.image_size, cfg.image_size).view(n, -1, 4)
    # Pr(Class_i | Object) * Pr(Object) * IOU for each of the S·S·B boxes and C classes
    scores = (pred[..., 4:5] * out[..., None, nb * 5 :]).reshape(n, -1, cfg.num_classes)
    return [select(b, sc, nms_iou, top_k) for b, sc in zip(boxes, scores, strict=True)]


def select(boxes: torch.Tensor, scores: torch.Tensor, nms_iou: float, top_k: int) -> dict:
    """The `top_k` best (box, class) pairs of one image's (D, 4) boxes and (D, C) class scores,
    after NMS within each class: {'boxes', 'scores', 'labels'}."""
    flat = scores.flatten()
    best = flat.topk(min(top_k, len(flat))).indices
    index, labels = best // scores.shape[1], best % scores.shape[1]
    keep = B.batched_nms(boxes[index], flat[best], labels, nms_iou)
    return {"boxes": boxes[index][keep], "scores": flat[best][keep], "labels": labels[keep]}


def _register() -> None:
    from papercli.models import register_model

    for name in CONFIGS:
        register_model(name, yolo, paper="yolo", name=name)


_register()
