"""Semantic and panoptic segmentation metrics (numpy), checked in tests against worked examples.

mean_iou            per-class IoU from one confusion matrix over all images, averaged over the
                    classes that occur (SegFormer's mIoU)
panoptic_quality    PQ = SQ × RQ of Kirillov et al. 2019 (Eq. 1): segments of the same class
                    match when IoU > 0.5 (then the match is unique), PQ_c = Σ IoU(TP) /
                    (|TP| + ½|FP| + ½|FN|), averaged over classes (OneFormer's PQ)

A panoptic map is a pair (segment ids (H, W) int, the class of each segment id): every pixel
belongs to one segment — background included, as a 'stuff' segment of its own class.
"""

from __future__ import annotations

import numpy as np


def confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) pixel counts: rows truth, columns prediction."""
    index = truth.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def mean_iou(preds, truths, num_classes: int) -> tuple[float, np.ndarray]:
    """(mIoU, per-class IoU with NaN for classes absent from both prediction and truth)."""
    matrix = sum(confusion(p, t, num_classes) for p, t in zip(preds, truths, strict=True))
    hits = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(union > 0, hits / union, np.nan)
    return float(np.nanmean(per_class)), per_class


def panoptic_quality(preds, truths, num_classes: int) -> dict[str, float]:
    """PQ, SQ, RQ (averaged over classes that occur) of panoptic maps, see the module note."""
    iou_sum = np.zeros(num_classes)
    tp, fp, fn = (np.zeros(num_classes, np.int64) for _ in range(3))
    for (pred_ids, pred_cls), (true_ids, true_cls) in zip(preds, truths, strict=True):
        pred_cls, true_cls = np.asarray(pred_cls), np.asarray(true_cls)
        p, t = pred_ids.astype(np.int64).ravel(), true_ids.astype(np.int64).ravel()
        area_p = np.bincount(p, minlength=len(pred_cls))
        area_t = np.bincount(t, minlength=len(true_cls))
        pairs, inter = np.unique(p * len(true_cls) + t, return_counts=True)
        pi, ti = np.divmod(pairs, len(true_cls))
        iou = inter / (area_p[pi] + area_t[ti] - inter)
        match = (iou > 0.5) & (pred_cls[pi] == true_cls[ti])
        np.add.at(iou_sum, true_cls[ti[match]], iou[match])
        np.add.at(tp, true_cls[ti[match]], 1)
        present_p = np.flatnonzero(area_p)
        present_t = np.flatnonzero(area_t)
        np.add.at(fp, pred_cls[np.setdiff1d(present_p, pi[match])], 1)
        np.add.at(fn, true_cls[np.setdiff1d(present_t, ti[match])], 1)
    occurs = (tp + fp + fn) > 0
    if not occurs.any():
        return {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    with np.errstate(invalid="ignore", divide="ignore"):
        sq = np.where(tp > 0, iou_sum / np.maximum(tp, 1), 0.0)
        rq = tp / (tp + 0.5 * fp + 0.5 * fn)
    return {
        "pq": float((sq * rq)[occurs].mean()),
        "sq": float(sq[occurs].mean()),
        "rq": float(rq[occurs].mean()),
    }
