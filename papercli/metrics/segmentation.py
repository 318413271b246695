"""Segmentation metrics on boolean masks and instance label images (numpy, scipy).

foreground_iou   pixel IoU of the foreground class
object_f1        instance F1: a predicted connected component matches a cell at IoU > 0.5
rand_error       the ISBI 2012 challenge's adapted Rand error (U-Net paper, Table 1)
"""

from __future__ import annotations

import numpy as np


def foreground_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def object_f1(pred: np.ndarray, instances: np.ndarray, iou: float = 0.5) -> float:
    """Instance-level F1: a predicted connected component matches a true cell at IoU > 0.5.
    Merged touching cells count as misses, so this rewards the border-weighted loss."""
    from scipy import ndimage

    comps, n_pred = ndimage.label(pred)
    n_true = len(np.unique(instances[instances > 0]))
    if n_pred == 0 or n_true == 0:
        return 0.0
    both = (comps > 0) & (instances > 0)
    # overlap of every (component, cell) pair that touches, counted in one pass
    pairs, overlap = np.unique(np.stack([comps[both], instances[both]]), axis=1, return_counts=True)
    size_c = np.bincount(comps.ravel())
    size_t = np.bincount(instances.ravel())
    c, t = pairs
    matched = int((overlap / (size_c[c] + size_t[t] - overlap) > iou).sum())
    precision, recall = matched / n_pred, matched / n_true
    return 2 * precision * recall / (precision + recall) if matched else 0.0


def rand_error(pred: np.ndarray, instances: np.ndarray) -> float:
    """Adapted Rand error of the ISBI 2012 challenge (1 − Rand F-score over foreground pixels of the
    truth), computed on connected components of the predicted cell interiors."""
    from scipy import ndimage

    seg = ndimage.label(pred)[0].ravel()
    gt = instances.ravel()
    keep = gt > 0
    seg, gt = seg[keep].astype(np.int64), gt[keep].astype(np.int64)
    if gt.size == 0:
        return 0.0
    joint = np.unique(seg * (gt.max() + 1) + gt, return_counts=True)[1].astype(np.float64)
    a = np.unique(seg, return_counts=True)[1].astype(np.float64)
    b = np.unique(gt, return_counts=True)[1].astype(np.float64)
    sum_p2, sum_a2, sum_b2 = (joint**2).sum(), (a**2).sum(), (b**2).sum()
    return float(1.0 - 2.0 * sum_p2 / (sum_a2 + sum_b2))
