"""What the semantic/universal segmentation recipes (SegFormer, OneFormer) add to the detection
base: per-pixel semantic targets (0 background, 1 + class on each object: `InstanceSet.semantic`),
mIoU over the test images, and the warm-up + polynomial learning-rate decay both papers train with.

Paper-scale data (ADE20K, Cityscapes, COCO panoptic) is not loaded yet: `--scale paper` stops in
`setup_data` with a one-line error naming the layout it will read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from papercli.errors import PapercliError
from papercli.recipes._detection import DetectionConfig, DetectionRecipe

PAPER_LAYOUTS = {
    "ade20k": "ADEChallengeData2016/{images,annotations}/{training,validation}",
    "coco-panoptic": "annotations/panoptic_{train,val}2017.json + panoptic_{train,val}2017/ + "
    "{train,val}2017/",
}


def load_paper_data(name: str, data_path: Path | None = None):
    """The paper-scale segmentation data sets are not read yet: a one-line error that says so."""
    raise PapercliError(
        f"{name} is not supported yet (it would read {PAPER_LAYOUTS[name]} from --data); "
        "run the mini scale"
    )


@dataclass
class SegmentationConfig(DetectionConfig):
    dataset: Literal["scenes", "nuclei", "ade20k", "coco-panoptic"] = "scenes"
    warmup_steps: int = 0  # linear warm-up, then poly decay (1 − t/T)^power
    power: float = 1.0


class SegmentationRecipe(DetectionRecipe):
    cfg: SegmentationConfig
    with_masks = True  # batches carry instance masks, from which the semantic maps are drawn

    def data_source(self) -> str:
        if self.cfg.dataset in PAPER_LAYOUTS:
            return f"{self.cfg.dataset}: --data PATH with {PAPER_LAYOUTS[self.cfg.dataset]}"
        return super().data_source()

    def setup_data(self) -> None:
        if self.cfg.dataset in PAPER_LAYOUTS:
            load_paper_data(self.cfg.dataset)
        super().setup_data()
        self.test_truths = [self.test_set.semantic(i) for i in range(len(self.test_set))]

    @property
    def num_semantic(self) -> int:
        """Semantic classes: background + the item classes (11 for Fashion-MNIST scenes)."""
        return self.num_classes + 1

    def semantic_targets(self, targets: list[dict], images: torch.Tensor) -> torch.Tensor:
        """(B, H, W) int64 semantic maps of a batch's (possibly flipped) instance targets."""
        maps = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.long)
        maps = maps.to(images.device)
        for m, t in zip(maps, targets, strict=True):
            for mask, label in zip(t["masks"], t["labels"], strict=True):
                m[mask] = label + 1
        return maps

    def mean_iou(self, segment: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """mIoU over the test images of `segment(images) -> (B, H, W)` semantic maps."""
        from papercli.metrics.panoptic import mean_iou

        preds = []
        with torch.no_grad():
            for start in range(0, len(self.test_set), 100):
                index = range(start, min(start + 100, len(self.test_set)))
                preds.extend(segment(self.images(self.test_set, index)).cpu().numpy())
        return mean_iou(preds, self.test_truths, self.num_semantic)[0]

    def warmup_poly(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """Linear warm-up, then lr · (1 − t/T)^power (SegFormer Sec. 4.1, Mask2Former/OneFormer's
        "poly" schedule)."""
        warmup, total, power = self.cfg.warmup_steps, self.cfg.steps, self.cfg.power

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return float(np.clip(1 - step / total, 0.0, 1.0)) ** power

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def save_maps(rows: dict[str, Sequence], path: Path) -> None:
    """A grid of label maps (one row per title, one column per image; the row 'image' in gray)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(next(iter(rows.values())))
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(2 * columns, 2.1 * len(rows)), squeeze=False
    )
    for r, (title, maps) in enumerate(rows.items()):
        for c in range(columns):
            cmap = "gray" if title == "image" else "tab20"
            axes[r][c].imshow(np.asarray(maps[c]), cmap=cmap, interpolation="nearest")
            axes[r][c].set_axis_off()
        axes[r][0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
