"""How the region-based detectors learn (papercli.models.rcnn computes their outputs):

label_boxes      which ground-truth object each proposal or anchor stands for, by IoU
sample           a fixed-size mini-batch with a bounded share of positives
rpn_loss         Faster R-CNN Eq. 1: objectness log loss + λ · smooth-L1 on positive anchors
sample_rois      Fast R-CNN Sec. 2.3: 25 % foreground RoIs (IoU ≥ 0.5), the rest background
box_loss         Fast R-CNN Eq. 1: L = L_cls(p, u) + λ [u ≥ 1] L_loc(t^u, v)
mask_loss        Mask R-CNN Sec. 3: per-pixel sigmoid cross-entropy on the true class's mask
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from papercli.methods.boxes import box_iou, encode
from papercli.methods.roi import roi_align
from papercli.models.rcnn import HEAD_WEIGHTS, RPN_WEIGHTS

IGNORE = -1


def label_boxes(
    boxes: torch.Tensor,
    gt: torch.Tensor,
    positive: float,
    negative: float,
    best_is_positive: bool = False,
    negative_low: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each box: the index of its best-overlapping ground-truth box, and a label 1 (IoU ≥
    `positive`), 0 (`negative_low` ≤ IoU < `negative`) or IGNORE otherwise. `best_is_positive` also makes each
    ground-truth box's best anchor(s) positive (Faster R-CNN Sec. 3.1.2, condition (i), so every
    object has an anchor even when none reaches 0.7)."""
    labels = torch.full((len(boxes),), IGNORE, dtype=torch.long, device=boxes.device)
    if len(gt) == 0:
        labels[:] = 0
        return torch.zeros(len(boxes), dtype=torch.long, device=boxes.device), labels
    iou = box_iou(gt, boxes)  # (G, B)
    best, matched = iou.max(0)
    labels[(best < negative) & (best >= negative_low)] = 0
    labels[best >= positive] = 1
    if best_is_positive:
        top = iou.max(1, keepdim=True).values
        gt_idx, box_idx = ((iou == top) & (top > 0)).nonzero(as_tuple=True)
        labels[box_idx] = 1
        matched[box_idx] = gt_idx
    return matched, labels


def sample(
    labels: torch.Tensor, size: int, positive_fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of up to `size · positive_fraction` random positives, and random negatives to
    fill the batch (Faster R-CNN Sec. 3.1.3: 256 anchors, up to 1:1; Fast R-CNN: 25 % fg)."""

    def pick(index: torch.Tensor, count: int) -> torch.Tensor:
        order = torch.randperm(len(index), generator=generator)[:count]
        return index[order.to(index.device)]

    positives = pick((labels == 1).nonzero().flatten(), int(size * positive_fraction))
    negatives = pick((labels == 0).nonzero().flatten(), size - len(positives))
    return positives, negatives


def smooth_l1(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Fast R-CNN Eq. 3: 0.5 x² if |x| < 1, else |x| − 0.5 (less sensitive to outliers than L2);
    `beta` moves the switch point (0.5 x² / β below β, |x| − β / 2 above)."""
    return F.smooth_l1_loss(x, torch.zeros_like(x), reduction="none", beta=beta)


@dataclass(frozen=True)
class RPNTraining:
    """Faster R-CNN Sec. 3.1.2-3.1.3's settings."""

    positive_iou: float = 0.7
    negative_iou: float = 0.3
    batch: int = 256  # anchors sampled per image (N_cls)
    positive_fraction: float = 0.5
    weight: float = 10.0  # λ of Eq. 1
    # smooth-L1's switch point for the anchor deltas: 1 as Fast R-CNN's Eq. 3; the released
    # py-faster-rcnn and Detectron train the RPN with σ = 3, i.e. β = 1/σ² = 1/9, so the small
    # deltas of anchors already at IoU >= 0.7 still get an L1-sized gradient
    beta: float = 1.0


def rpn_loss(
    scores: torch.Tensor,
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    gt_boxes: list[torch.Tensor],
    locations: int,
    settings: RPNTraining,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Faster R-CNN Eq. 1, summed over the images of the batch and averaged per image:
    L = (1/N_cls) Σ_i L_cls(p_i, p_i*) + λ (1/N_reg) Σ_i p_i* L_reg(t_i, t_i*),
    with N_cls the sampled anchors of an image and N_reg its number of anchor locations
    (`locations`, ~2400 in the paper, where λ = 10 weights both terms about equally)."""
    cls_terms, reg_terms = [], []
    for s, d, gt in zip(scores, deltas, gt_boxes, strict=True):
        matched, labels = label_boxes(
            anchors, gt, settings.positive_iou, settings.negative_iou, best_is_positive=True
        )
        pos, neg = sample(labels, settings.batch, settings.positive_fraction, generator)
        chosen = torch.cat([pos, neg])
        target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(s)
        cls_terms.append(
            F.binary_cross_entropy_with_logits(s[chosen].float(), target.float(), reduction="sum")
            / max(len(chosen), 1)
        )
        if len(pos):
            t = encode(anchors[pos], gt[matched[pos]], RPN_WEIGHTS)
            reg = smooth_l1(d[pos].float() - t, settings.beta).sum()
        else:
            reg = d.sum() * 0.0
        reg_terms.append(settings.weight * reg / locations)
    n = len(cls_terms)
    return {"rpn_cls": sum(cls_terms) / n, "rpn_reg": sum(reg_terms) / n}


@dataclass(frozen=True)
class RoITraining:
    """Fast R-CNN Sec. 2.3's mini-batch: R RoIs per image, 25 % of them foreground."""

    per_image: int = 64  # R / N = 128 / 2
    foreground_fraction: float = 0.25
    foreground_iou: float = 0.5
    background_iou: float = 0.5  # background: IoU below this (and above background_low)
    background_low: float = 0.0  # Fast R-CNN uses 0.1 as a hard-example heuristic; Detectron 0
    weight: float = 1.0  # λ of Eq. 1


@dataclass
class RoIBatch:
    rois: torch.Tensor  # (R, 5): image index, x0, y0, x1, y1
    classes: torch.Tensor  # (R,) u: 0 = background, 1 + object class
    box_targets: torch.Tensor  # (R, 4) v, normalised by HEAD_WEIGHTS (meaningful where u ≥ 1)
    matched: list[torch.Tensor]  # per image: the ground-truth index of each of its RoIs


def sample_rois(
    proposals: list[torch.Tensor],
    targets: list[dict],
    settings: RoITraining,
    generator: torch.Generator,
    add_ground_truth: bool = True,
) -> RoIBatch:
    """Each image's RoIs for the head: its proposals (plus its ground-truth boxes, as the
    released Fast/Faster R-CNN code adds them), labelled by IoU and sampled 1:3."""
    rois, classes, box_targets, matched_all = [], [], [], []
    for i, (props, t) in enumerate(zip(proposals, targets, strict=True)):
        gt = t["boxes"].to(props)
        boxes = torch.cat([props, gt]) if add_ground_truth else props
        matched, labels = label_boxes(
            boxes,
            gt,
            settings.foreground_iou,
            settings.background_iou,
            negative_low=settings.background_low,
        )
        pos, neg = sample(labels, settings.per_image, settings.foreground_fraction, generator)
        chosen = torch.cat([pos, neg])
        cls = torch.zeros(len(chosen), dtype=torch.long, device=boxes.device)
        if len(gt):
            cls[: len(pos)] = t["labels"].to(boxes.device)[matched[pos]] + 1
            box_targets.append(encode(boxes[chosen], gt[matched[chosen]], HEAD_WEIGHTS))
        else:
            box_targets.append(boxes.new_zeros(len(chosen), 4))
        rois.append(torch.cat([torch.full((len(chosen), 1), float(i)).to(boxes), boxes[chosen]], 1))
        classes.append(cls)
        matched_all.append(matched[chosen])
    return RoIBatch(torch.cat(rois), torch.cat(classes), torch.cat(box_targets), matched_all)


def box_loss(
    logits: torch.Tensor, deltas: torch.Tensor, batch: RoIBatch, weight: float = 1.0
) -> dict[str, torch.Tensor]:
    """Fast R-CNN Eq. 1: log loss of the true class u, plus smooth-L1 between the true class's
    predicted deltas t^u and the targets v on foreground RoIs (u ≥ 1), both averaged over RoIs."""
    u = batch.classes
    fg = (u > 0).nonzero().flatten()
    loc = smooth_l1(deltas[fg, u[fg]].float() - batch.box_targets[fg]).sum() / max(len(u), 1)
    return {"cls": F.cross_entropy(logits.float(), u), "loc": weight * loc}


def mask_loss(mask_logits: torch.Tensor, batch: RoIBatch, targets: list[dict]) -> torch.Tensor:
    """Mask R-CNN Sec. 3: on foreground RoIs only, the average binary cross-entropy between the
    m x m mask of the true class k (the other classes' masks get no loss) and the ground-truth
    mask cropped by the RoI (RoIAligned from the full-image mask, binarised at 0.5)."""
    fg = (batch.classes > 0).nonzero().flatten()
    if len(fg) == 0:
        return mask_logits.sum() * 0.0
    size = mask_logits.shape[-1]
    # the mask to crop for each foreground RoI: the matched object's, in a stack of all masks
    offsets, start = [], 0
    for t in targets:
        offsets.append(start)
        start += len(t["masks"])
    all_masks = torch.cat([t["masks"] for t in targets]).float()[:, None]
    image = batch.rois[fg, 0].long()
    matched = torch.cat(batch.matched)[fg]
    index = matched + torch.tensor(offsets, device=image.device)[image]
    crop_rois = torch.cat([index[:, None].to(batch.rois), batch.rois[fg, 1:]], 1)
    truth = (roi_align(all_masks, crop_rois, size, sampling_ratio=2)[:, 0] >= 0.5).float()
    chosen = mask_logits[fg, batch.classes[fg]].float()
    return F.binary_cross_entropy_with_logits(chosen, truth)
