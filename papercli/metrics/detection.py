"""COCO-style detection and instance-segmentation AP, computed by pycocotools (the COCO team's
own evaluation code) rather than a hand-written AP: the numbers mean what the papers' tables mean.

Inputs are torchvision-style dicts per image: ground truth {'boxes', 'labels'[, 'masks']},
detections {'boxes', 'scores', 'labels'[, 'masks']}, boxes as (x0, y0, x1, y1) pixel edges.
`area_ranges` sets the small/medium/large split: COCO's are 32² and 96² pixels, which at a
64-pixel canvas would call every object small, so the recipes pass ranges scaled to their images.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

COCO_AREAS = (32**2, 96**2)
METRIC_NAMES = (  # the order of COCOeval.stats
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


def _array(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _xywh(box: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def coco_ap(
    detections: list[dict],
    targets: list[dict],
    num_classes: int,
    iou_type: str = "bbox",
    area_ranges: tuple[float, float] = COCO_AREAS,
    max_detections: int = 100,
    image_size: tuple[int, int] = (0, 0),
) -> dict[str, float]:
    """AP@[.5:.95], AP50, AP75, AP by size and AR of `detections` against `targets` (one dict
    each per image). With iou_type 'segm' both must carry 'masks'. An image with no
    detections simply scores nothing; no detections at all gives 0.0 everywhere."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', not {iou_type!r}")
    images, annotations, results = [], [], []
    for image_id, (target, found) in enumerate(zip(targets, detections, strict=True), start=1):
        boxes, labels = _array(target["boxes"]), _array(target["labels"])
        masks = _array(target["masks"]) if iou_type == "segm" else None
        height, width = masks.shape[1:] if masks is not None and masks.ndim == 3 else image_size
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        for k, (box, label) in enumerate(zip(boxes, labels, strict=True)):
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(label) + 1,
                "bbox": _xywh(box),
                "iscrowd": 0,
            }
            if masks is not None:
                ann["segmentation"] = _rle(masks[k])
                ann["area"] = float(masks[k].sum())
            else:
                ann["area"] = float((box[2] - box[0]) * (box[3] - box[1]))
            annotations.append(ann)
        scores = _array(found["scores"])
        for k, (box, label, score) in enumerate(
            zip(_array(found["boxes"]), _array(found["labels"]), scores, strict=True)
        ):
            res = {
                "image_id": image_id,
                "category_id": int(label) + 1,
                "bbox": _xywh(box),
                "score": float(score),
            }
            if iou_type == "segm":
                res["segmentation"] = _rle(_array(found["masks"][k]) > 0.5)
            results.append(res)
    if not results or not annotations:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and tables
        truth = COCO()
        truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)],
        }
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), iou_type)
        small, medium = area_ranges
        evaluation.params.areaRng = [[0, 1e10], [0, small], [small, medium], [medium, 1e10]]
        evaluation.params.maxDets = [1, 10, max_detections]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # COCOeval reports −1 where a size range has no objects: we report 0.0 only for real zeros,
    # so a missing range is left out rather than counted as a failure
    return {
        name: float(value)
        for name, value in zip(METRIC_NAMES, evaluation.stats, strict=True)
        if value >= 0
    }
