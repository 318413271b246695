"""SSD: Single Shot MultiBox Detector (Liu et al., 2015).

Claim checked at mini scale: predicting from several feature maps of decreasing resolution, each
with default boxes of its own scale (Eq. 4), detects small objects better than YOLO's one coarse
grid (Section 4 / Table 7 and the paper's discussion of YOLO; Fig. 6 shows SSD's own weakness
on small objects, which the finer maps address). Both train side by side on the same batches for
the same steps, with the same optimiser and schedule; SSD's box AP on small objects (the base's
size split: side under `small_side` px) must beat YOLO's by a stated margin, and SSD must reach
an absolute mAP floor an untrained network misses.

The parts of the paper (model, default boxes, matching, loss and decoding in models/ssd.py;
YOLO's network and Eq. 3 loss are the yolo recipe's, papercli/models/yolo.py):
  Section 2.1   base network + extra layers, 3x3 conv predictors per map    -> SSD
  Section 2.2   default boxes: scales s_k (Eq. 4), aspect ratios             -> default_boxes
                matching: best IoU, then IoU > 0.5                           -> match
                L = (L_conf + α L_loc) / N, smooth L1 + softmax (Eq. 1-3)    -> ssd_loss
                hard negative mining, negatives : positives <= 3 : 1         -> ssd_loss
  Section 3     SGD momentum 0.9, decay 5e-4, batch 32, lr 1e-3 with drops   -> configure_optimizers
  Section 3     NMS at 0.45 per class, top 200 per image                     -> ssd_detect

    mini   SSD-mini (VGG-style 3x3 convs with batch norm; sources 16², 8², 4², 2² with 4 default
           boxes per location, s_min 0.2, s_max 0.9: 1,360 boxes; 0.24M parameters) and the yolo
           recipe's YOLO-mini (S = 8, 0.27M parameters, similar compute) on 64 px Fashion-MNIST
           scenes of 1-4 items of 12-32 px, 1200 steps of 32, AdamW with warm-up and step drops
           for both (from scratch in minutes; the paper fine-tunes an ImageNet VGG-16 with SGD),
           flips.
    paper  SSD300 on VGG-16 (34.3M parameters with COCO's 80 classes + background; 26.3M for
           VOC's 20; torchvision's COCO model with 91 labels has 35,641,826, which the same
           builder reproduces), 300 px, batch 32, 240k steps: lr 1e-3 for 160k, 1e-4 and 1e-5
           for 40k each (Section 3.4, COCO). Data: not loaded yet — `--scale paper` stops with a
           one-line error; it would read COCO `annotations/instances_{train,val}2017.json` with
           the image folders from --data. Not implemented: the scale 0.1 of conv4_3's default
           boxes on VOC, the patch-sampling, expansion and photometric augmentation (Section
           2.2, Table 2), and ImageNet pre-training of the base network.

Metrics: ssd_map, ssd_map_50, ssd_map_small, … and the same for yolo (COCO AP, pycocotools),
ssd_minus_yolo_map_small, <arm>_ms_per_image.

Measured at mini scale (seed 0, one thread, on 2 cores shared with ~12 other jobs): after 600 /
1200 steps SSD small-object AP 0.408 / 0.456 against YOLO's 0.147 / 0.234 (margin 0.22 at the
end), SSD mAP@0.5 0.625 / 0.680, YOLO 0.463 / 0.539 (mAP 0.436 vs 0.267). CPU time 329 s user +
5 s system for both arms (wall 1,903 s under that load). Seed 1 not run (time).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from papercli.models.ssd import SSD, ssd_detect, ssd_loss
from papercli.models.yolo import yolo_detect
from papercli.recipes import yolo
from papercli.reproduce.arms import Arms
from papercli.reproduce.config import fraction
from papercli.reproduce.engine import run


@dataclass
class SSDTrainConfig(yolo.YOLOTrainConfig):
    model: str = "ssd-mini"
    yolo: str = "yolo-mini"  # the YOLO arm trained alongside on the same batches ("" = none)
    nms_iou: float = fraction(0.45)
    speed_images: int = 0  # the R-CNN timing is the yolo recipe's claim


PAPER = SSDTrainConfig(
    **{
        **vars(yolo.PAPER),
        "dataset": "coco",
        "model": "ssd300",
        "yolo": "",
        "num_classes": 80,
        "canvas": 300,
        "batch_size": 32,
        "lr": 1e-3,
        "steps": 240_000,
        "warmup_steps": 0,
        "drops": (160 / 240, 200 / 240),
        "eval_every": 10_000,
        "nms_iou": 0.45,
        "speed_images": 0,
    }
)
MINI = replace(
    SSDTrainConfig(**{**vars(yolo.MINI), "model": "ssd-mini", "yolo": "yolo-mini"}),
    steps=1200,
    eval_every=600,
    nms_iou=0.45,
    speed_images=0,
)


class SSDRecipe(yolo.YOLORecipe):
    paper = "ssd"
    config_class = SSDTrainConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: SSDTrainConfig

    def build_model(self) -> nn.Module:
        arms = {"ssd": self.detector(self.cfg.model)}
        if self.cfg.yolo:
            arms["yolo"] = self.detector(self.cfg.yolo)
        return Arms(arms)

    def arm_loss(self, name: str, arm: nn.Module, images, targets) -> torch.Tensor:
        if isinstance(arm, SSD):
            return ssd_loss(*arm(images), targets, arm.cfg, arm.defaults)
        return super().arm_loss(name, arm, images, targets)

    def detect(self, name: str, model: nn.Module, images: torch.Tensor) -> list[dict]:
        if isinstance(model, SSD):
            return ssd_detect(
                *model(images), model.cfg, model.defaults, self.cfg.nms_iou, self.cfg.top_k
            )
        return yolo_detect(model(images), model.cfg, top_k=self.cfg.top_k)  # its own NMS (0.5)

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = super().final_metrics(model, last_eval)
        if "yolo" in model:
            m["ssd_minus_yolo_map_small"] = m["ssd_map_small"] - m["yolo_map_small"]
        return m


if __name__ == "__main__":
    run(SSDRecipe)
