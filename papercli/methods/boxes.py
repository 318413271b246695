"""Box arithmetic every detector shares, on (N, 4) tensors of (x0, y0, x1, y1) pixel edges.

box_iou / generalized_box_iou   pairwise overlap (GIoU: Rezatofighi et al. 2019, DETR's box loss)
encode / decode                 the R-CNN box regression targets (R-CNN App. C, Faster R-CNN Eq. 2)
nms / batched_nms               greedy non-maximum suppression, per class with `batched_nms`
"""

from __future__ import annotations

import math

import torch

# Faster R-CNN clamps predicted log-scales so exp() cannot overflow (log(1000 / 16), as Detectron)
MAX_LOG_SCALE = math.log(1000.0 / 16)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _intersection_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    return inter, box_area(a)[:, None] + box_area(b)[None, :] - inter


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) intersection over union; 0 where both boxes are empty."""
    inter, union = _intersection_union(a, b)
    return inter / union.clamp(min=1e-9)


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) GIoU = IoU − (hull − union) / hull, in [−1, 1]; differentiable everywhere."""
    inter, union = _intersection_union(a, b)
    iou = inter / union.clamp(min=1e-9)
    hull = (
        (
            torch.maximum(a[:, None, 2:], b[None, :, 2:])
            - torch.minimum(a[:, None, :2], b[None, :, :2])
        )
        .clamp(min=0)
        .prod(dim=2)
    )
    return iou - (hull - union) / hull.clamp(min=1e-9)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def encode(
    reference: torch.Tensor, target: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0)
) -> torch.Tensor:
    """Regression targets of `target` boxes relative to `reference` boxes (proposals or anchors):
    t_x = (x − x_a) / w_a, t_y = (y − y_a) / h_a, t_w = log(w / w_a), t_h = log(h / h_a),
    each multiplied by its weight (Fast R-CNN's (10, 10, 5, 5) normalisation)."""
    ref, tgt = xyxy_to_cxcywh(reference), xyxy_to_cxcywh(target)
    wx, wy, ww, wh = weights
    return torch.stack(
        [
            wx * (tgt[:, 0] - ref[:, 0]) / ref[:, 2],
            wy * (tgt[:, 1] - ref[:, 1]) / ref[:, 3],
            ww * torch.log(tgt[:, 2] / ref[:, 2]),
            wh * torch.log(tgt[:, 3] / ref[:, 3]),
        ],
        dim=1,
    )


def decode(
    reference: torch.Tensor, deltas: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0)
) -> torch.Tensor:
    """The inverse of `encode`: boxes from `reference` boxes and predicted deltas."""
    ref = xyxy_to_cxcywh(reference)
    wx, wy, ww, wh = weights
    cx = deltas[:, 0] / wx * ref[:, 2] + ref[:, 0]
    cy = deltas[:, 1] / wy * ref[:, 3] + ref[:, 1]
    w = torch.exp((deltas[:, 2] / ww).clamp(max=MAX_LOG_SCALE)) * ref[:, 2]
    h = torch.exp((deltas[:, 3] / wh).clamp(max=MAX_LOG_SCALE)) * ref[:, 3]
    return cxcywh_to_xyxy(torch.stack([cx, cy, w, h], dim=1))


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return torch.stack(
        [
            boxes[:, 0].clamp(0, width),
            boxes[:, 1].clamp(0, height),
            boxes[:, 2].clamp(0, width),
            boxes[:, 3].clamp(0, height),
        ],
        dim=1,
    )


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy NMS, highest score first: a box is dropped when it
    overlaps an already kept box by more than `iou_threshold`."""
    order = scores.argsort(descending=True)
    overlaps = box_iou(boxes[order], boxes[order]) > iou_threshold
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):  # kept boxes are few; one row of the IoU matrix each
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlaps[i].cpu()
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS within each class: boxes of different classes never suppress each other (each class
    is shifted to its own region of the plane, larger than any box)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offsets = labels.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)
