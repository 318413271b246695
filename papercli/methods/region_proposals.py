"""Fixed, class-agnostic region proposals computed from the image alone — the stand-in for
selective search (Uijlings et al. 2013), which R-CNN and Fast R-CNN take as given (R-CNN Sec. 2.1:
"~2000 region proposals"; Fast R-CNN Sec. 1).

Selective search groups an over-segmentation bottom-up at several scales and colour spaces and
proposes each group's box. On these grey images on a dark background the analogous segments are
the connected components of the image thresholded at several levels, before and after blurring
at several scales (blurring merges nearby parts, like selective search's hierarchical grouping),
plus the pairwise unions of nearby components (grouping one level up). Sliding windows of
several sizes and shapes fill in what segmentation misses, e.g. touching objects that form one
component. Nothing here is learned; the set is the same for every detector that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class ProposalSpec:
    thresholds: tuple[float, ...] = (0.05, 0.2, 0.4, 0.6)
    blurs: tuple[float, ...] = (0.0, 1.0, 2.0)  # Gaussian sigmas, in pixels
    window_sides: tuple[int, ...] = (12, 18, 26, 36)
    window_ratios: tuple[float, ...] = (0.67, 1.0, 1.5)  # height / width
    window_step: float = 0.5  # windows overlap by half their side
    min_side: int = 4


def _components(image: np.ndarray, spec: ProposalSpec) -> np.ndarray:
    from scipy import ndimage

    boxes = []
    for sigma in spec.blurs:
        smooth = ndimage.gaussian_filter(image, sigma) if sigma else image
        for t in spec.thresholds:
            labels, count = ndimage.label(smooth > t)
            for sl in ndimage.find_objects(labels, max_label=count):
                if sl is not None:
                    boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
    return np.unique(np.asarray(boxes, np.float32).reshape(-1, 4), axis=0)


def _unions(boxes: np.ndarray, max_gap: float) -> np.ndarray:
    """Boxes around pairs of components at most `max_gap` pixels apart."""
    if len(boxes) < 2:
        return np.zeros((0, 4), np.float32)
    a, b = np.triu_indices(len(boxes), 1)
    gap_x = np.maximum(boxes[a, 0], boxes[b, 0]) - np.minimum(boxes[a, 2], boxes[b, 2])
    gap_y = np.maximum(boxes[a, 1], boxes[b, 1]) - np.minimum(boxes[a, 3], boxes[b, 3])
    near = np.maximum(gap_x, gap_y) <= max_gap
    a, b = a[near], b[near]
    return np.concatenate(
        [np.minimum(boxes[a, :2], boxes[b, :2]), np.maximum(boxes[a, 2:], boxes[b, 2:])], axis=1
    )


@lru_cache(maxsize=8)
def _windows(height: int, width: int, spec: ProposalSpec) -> np.ndarray:
    """The same windows for every image of a size (computed once)."""
    out = []
    for side in spec.window_sides:
        for ratio in spec.window_ratios:
            w, h = side / np.sqrt(ratio), side * np.sqrt(ratio)
            if w > width or h > height:
                continue
            step = max(1.0, side * spec.window_step)
            for y in np.arange(0, height - h + 1e-6, step):
                for x in np.arange(0, width - w + 1e-6, step):
                    out.append((x, y, x + w, y + h))
    return np.asarray(out, np.float32).reshape(-1, 4)


def fixed_proposals(image: np.ndarray, spec: ProposalSpec = ProposalSpec()) -> np.ndarray:
    """(R, 4) float32 boxes (x0, y0, x1, y1 pixel edges) for one (H, W) image in [0, 1]:
    segments first, then windows; duplicates and boxes thinner than `min_side` removed."""
    height, width = image.shape
    segments = _components(image, spec)
    boxes = np.concatenate(
        [segments, _unions(segments, max_gap=2.0), _windows(height, width, spec)]
    )
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    boxes = boxes[sides >= spec.min_side]
    _, first = np.unique(np.round(boxes, 1), axis=0, return_index=True)
    return boxes[np.sort(first)]
