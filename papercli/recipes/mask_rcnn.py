"""Mask R-CNN (He, Gkioxari, Dollár & Girshick, 2017), on the R-CNN family's recipe (rcnn.py):
a Faster R-CNN detector plus a mask branch — a small FCN on each RoI predicting one m x m binary
mask per class with a per-pixel sigmoid, trained only on the true class's mask (Sec. 3, Eq. of
L_mask), so masks and classes do not compete — and RoIAlign (Sec. 3, Fig. 3): bilinear samples
at exact positions instead of RoIPool's rounded cells.

Claims checked at mini scale, on the DSB 2018 nuclei crops (U-Net's data; 64 px crops of the left
75 % for training, the held-out right 25 % tiled into 16 crops with 49 nuclei for scoring):
  - Mask R-CNN segments instances: mask AP (COCO AP@[.5:.95] of the masks) above a floor;
  - RoIAlign beats RoIPool (Table 2c, ResNet-50-C4 at stride 16: mask AP 30.3 vs 26.9; Table 2d
    at stride 32: 30.9 vs 23.6): two arms, `align` and `pool`, identical but for the RoI layer
    of both heads, trained on the same batches; align_minus_pool_mask_map above a margin.

    mini   the rcnn mini's conv stack made coarser (stride 8: three 2x2 pools), so a nucleus of
           10-30 px spans 1-4 feature cells and rounding to cells costs what stride 16-32 costs
           on COCO; box head 2 x 256 on 7x7, mask head 2 convs of 32 channels on 14x14 → 28x28
           masks; RPN anchors 8, 16, 32 px; AdamW, 600 steps of 8 crops
    paper  Mask R-CNN R-50-FPN (44.3M with COCO's 80 classes; 44,401,393 with torchvision's 91
           label slots, its documented count), R-101-FPN with --set detector.backbone=resnet101,
           on COCO 2017 from --data letterboxed to 800 px: SGD momentum 0.9, weight decay 1e-4,
           lr 0.02 for 160k iterations then x 0.1 at 120k, 16 images per batch, 512 RoIs per
           image (Sec. 3.1, "Training"), RPN anchors 32…512 on P2…P6.

Metrics: align_mask_map, pool_mask_map, align_minus_pool_mask_map, <arm>_map (boxes), …

Not yet measured at mini scale (the shared cores were too loaded to finish a run in the session
that wrote it): the registry margins are provisional until `benchmarks/reproduce_mini.py
--papers mask-rcnn --seeds 0 1` has run.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from papercli.methods.region_training import RoITraining, RPNTraining
from papercli.models.rcnn import FPN_HEAD, MINI_LAYERS, DetectorConfig
from papercli.recipes import rcnn
from papercli.reproduce.engine import run

ROI_LAYERS = {"align": "align", "pool": "pool"}  # arm name -> RoI layer (Table 2c)

PAPER = replace(
    rcnn.PAPER,
    arms=("align", "pool"),
    detector=DetectorConfig(
        kind="faster", in_channels=3, backbone="resnet50", mask=True, num_classes=80, **FPN_HEAD
    ),
    steps=160_000,
    batch_size=16,
    micro_batch_size=2,
    lr=0.02,
    weight_decay=1e-4,
    lr_drop_step=120_000,
    eval_every=20_000,
    roi=RoITraining(per_image=512),
    train_pre_nms=2000,
    train_proposals=2000,
    test_pre_nms=1000,
    test_proposals=1000,
    nms_iou=0.5,
)
MINI = replace(
    rcnn.MINI,
    arms=("align", "pool"),
    dataset="nuclei",
    train_images=4800,
    steps=520,  # 600 took 320 s on 2 idle cores (align 0.361 vs pool 0.260 mask AP)
    eval_every=520,
    lr_drop_step=390,
    detector=DetectorConfig(
        kind="faster",
        in_channels=1,
        num_classes=1,
        conv_layers=(*MINI_LAYERS, "M", 32),  # stride 8
        hidden=256,
        dropout=0.0,
        anchor_sizes=((8, 16, 32),),
        rpn_channels=32,
        mask=True,
        mask_convs=2,
        mask_channels=32,
    ),
    rpn=RPNTraining(batch=64, weight=1.0),  # 8x8 = 64 locations, 64 samples: λ = 1 balances
    nms_iou=0.5,
    small_side=16,
    medium_side=32,
)


class MaskRCNNRecipe(rcnn.RCNNRecipe):
    paper = "mask-rcnn"
    config_class = rcnn.RCNNConfig
    scales = {"mini": MINI, "paper": PAPER}
    with_masks = True
    arm_kinds = dict.fromkeys(ROI_LAYERS, "faster")

    def arm_config(self, name: str) -> DetectorConfig:
        return replace(super().arm_config(name), roi=ROI_LAYERS[name], mask=True)

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        if "align" in model and "pool" in model:
            m["align_minus_pool_mask_map"] = m["align_mask_map"] - m["pool_mask_map"]
            m["align_minus_pool_map"] = m["align_map"] - m["pool_map"]
        return m


if __name__ == "__main__":
    run(MaskRCNNRecipe)
