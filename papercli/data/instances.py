"""Images with labelled object instances: the one data type every detection and segmentation
recipe reads (boxes for R-CNN/YOLO/SSD/DETR, instance masks for Mask R-CNN/SAM, semantic and
panoptic maps for SegFormer/OneFormer).

An instance map holds, per pixel, 0 for background or k for the k-th object (1-based) of that
image; objects never share a pixel (occluded parts belong to the object in front). Everything
else — tight boxes, binary masks, the semantic map — is derived from it, so the annotations of
one image can never disagree with each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def boxes_of(instance_map: np.ndarray, count: int) -> np.ndarray:
    """Tight (x0, y0, x1, y1) boxes of objects 1..count, in pixel edges: a one-pixel object at
    column 3 spans x 3.0–4.0 (COCO's convention). An object with no pixels gets a zero box."""
    from scipy import ndimage

    boxes = np.zeros((count, 4), np.float32)
    for k, sl in enumerate(ndimage.find_objects(instance_map, max_label=count)):
        if sl is not None:
            boxes[k] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    return boxes


@dataclass
class InstanceSet:
    """N grayscale images with their instance maps and each object's class.

    images     (N, H, W) float32 in [0, 1]
    instances  (N, H, W) int16: 0 background, k = the image's k-th object
    classes    one int64 array per image: the class of object k at index k − 1
    class_names the names of the classes, index = class id
    """

    images: np.ndarray
    instances: np.ndarray
    classes: list[np.ndarray]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        self.boxes = [
            boxes_of(inst, len(cls)) for inst, cls in zip(self.instances, self.classes, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_objects(self) -> int:
        return sum(len(c) for c in self.classes)

    def masks(self, i: int) -> np.ndarray:
        """(k, H, W) bool: one binary mask per object of image i."""
        k = len(self.classes[i])
        return self.instances[i][None] == np.arange(1, k + 1, dtype=np.int16)[:, None, None]

    def semantic(self, i: int) -> np.ndarray:
        """(H, W) int64: 0 background, 1 + class id on each object's pixels."""
        lookup = np.concatenate([[0], self.classes[i] + 1])
        return lookup[self.instances[i]]

    def subset(self, index: np.ndarray | list[int]) -> InstanceSet:
        index = list(index)
        return InstanceSet(
            self.images[index],
            self.instances[index],
            [self.classes[i] for i in index],
            self.class_names,
        )

    def targets(self, index, device=None, with_masks: bool = False) -> list[dict]:
        """torch targets in torchvision's detection format: {'boxes' (k, 4) xyxy float,
        'labels' (k,) int64[, 'masks' (k, H, W) bool]} per image."""
        import torch

        out = []
        for i in index:
            i = int(i)
            t = {
                "boxes": torch.from_numpy(self.boxes[i]).to(device),
                "labels": torch.from_numpy(self.classes[i]).to(device),
            }
            if with_masks:
                t["masks"] = torch.from_numpy(self.masks(i)).to(device)
            out.append(t)
        return out
