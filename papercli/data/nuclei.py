"""Real fluorescence nuclei with instance masks, offline: a 512x512 image from the 2018 Data
Science Bowl (BBBC038, CC0) with its 125 labelled nuclei, as prepared by stardist (BSD-3) and
shipped inside papercli as `files/nuclei2d.npz` (licence and provenance: `files/NOTICE.md`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from papercli.data import sources
from papercli.errors import PapercliError


def load(data_path=None) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 in [0, 1] after 1–99.8 percentile normalisation, instance labels int32)."""
    status = sources.nuclei()
    if not status.present:
        raise PapercliError(f"U-Net mini data {status.detail}")
    with np.load(Path(status.detail), allow_pickle=False) as arrays:
        image = arrays["image"].astype(np.float32)
        labels = arrays["labels"].astype(np.int32)
    lo, hi = np.percentile(image, (1.0, 99.8))
    image = np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    return image, labels


INSTANCE_CLASSES = ("nucleus",)  # the one object class of `instance_crops`


def _relabelled(labels: np.ndarray) -> np.ndarray:
    """Instance ids renumbered 1..k in order of first appearance (a crop cuts some nuclei away)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:  # no background pixel in this crop: ids start at 1
        inverse = inverse + 1
    return inverse.reshape(labels.shape).astype(np.int16)


def instance_crops(split: str, size: int, count: int = 0, holdout: float = 0.25, seed: int = 0):
    """Nuclei as an `InstanceSet` of `size`x`size` crops (one class, 'nucleus'), split as U-Net's
    mini splits them: the right `holdout` of the image is 'test', the rest 'train'. Train crops
    are `count` random windows; test crops tile the held-out part once, so it is scored whole."""
    from papercli.data.instances import InstanceSet

    image, labels = load()
    cut = round(image.shape[1] * (1 - holdout))
    part = slice(0, cut) if split == "train" else slice(cut, None)
    image, labels = image[:, part], labels[:, part]
    if size > min(image.shape):
        raise PapercliError(f"nuclei crops of {size} px do not fit the {split} part {image.shape}")
    if split == "train":
        rng = np.random.default_rng(seed)
        ys = rng.integers(0, image.shape[0] - size + 1, count)
        xs = rng.integers(0, image.shape[1] - size + 1, count)
    else:
        grid = np.mgrid[0 : image.shape[0] - size + 1 : size, 0 : image.shape[1] - size + 1 : size]
        ys, xs = grid[0].ravel(), grid[1].ravel()
    crops = [
        (image[y : y + size, x : x + size], labels[y : y + size, x : x + size])
        for y, x in zip(ys, xs, strict=True)
    ]
    instances = np.stack([_relabelled(lab) for _, lab in crops])
    return InstanceSet(
        images=np.stack([img for img, _ in crops]),
        instances=instances,
        classes=[np.zeros(int(inst.max()), np.int64) for inst in instances],
        class_names=INSTANCE_CLASSES,
    )
