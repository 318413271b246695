"""Mask R-CNN: the R-50/R-101-FPN parameter counts against torchvision's documented ones, the mask
loss on the true class's mask cropped by RoIAlign, a few real training steps of the RoIAlign and
RoIPool arms on the nuclei crops through the CLI, and a 2-step control that must not reproduce."""

from __future__ import annotations

import pytest
import torch
from conftest import two_step_control
from test_rcnn import three_steps

from papercli.methods.region_training import RoIBatch, mask_loss
from papercli.models import create_model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_fpn_models_count_torchvisions_documented_parameters():
    """torchvision's maskrcnn_resnet50_fpn (44,401,393) and fasterrcnn_resnet50_fpn (41,755,286)
    implement the paper's R-50-FPN with BN frozen into buffers, over 91 label slots (90 + bg)."""
    with torch.device("meta"):
        mask = create_model("mask-rcnn-r50-fpn", num_classes=90)
        box = create_model("faster-rcnn-r50-fpn", num_classes=90)
        r101 = create_model("mask-rcnn-r101-fpn", num_classes=90)
        coco = create_model("mask-rcnn-r50-fpn")  # the paper's 80 classes
    assert n_params(mask) == 44_401_393
    assert n_params(box) == 41_755_286
    # ResNet-101 has 17 more bottlenecks in stage 4: 1x1 1024→256, 3x3 256→256, 1x1 256→1024
    assert n_params(r101) - n_params(mask) == 17 * (1024 * 256 + 256 * 256 * 9 + 256 * 1024)
    # 10 fewer label slots: cls (1024 + 1), boxes 4 x (1024 + 1), masks (256 + 1) each
    assert n_params(mask) - n_params(coco) == 10 * (1025 + 4 * 1025 + 257)
    assert len(list(mask.backbone.buffers())) > 0  # frozen BN: statistics and affine as buffers


def test_mask_loss_scores_the_true_class_on_the_cropped_ground_truth():
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 4:12, 4:8] = True  # the object fills the left half of its box
    targets = [
        {"boxes": torch.tensor([[4.0, 4, 12, 12]]), "labels": torch.tensor([1]), "masks": masks}
    ]
    batch = RoIBatch(
        rois=torch.tensor([[0.0, 4, 4, 12, 12], [0.0, 0, 0, 16, 16]]),
        classes=torch.tensor([2, 0]),  # u = 1 + object class; the second RoI is background
        box_targets=torch.zeros(2, 4),
        matched=[torch.tensor([0, 0])],
    )
    logits = torch.full((2, 3, 8, 8), -20.0)  # confident background everywhere …
    logits[0, 2, :, :4] = 20.0  # … except the true class's left half: a perfect mask
    assert mask_loss(logits, batch, targets) < 1e-6
    logits[0, 1] = 20.0  # another class's mask gets no loss (Sec. 3: decoupled from classes)
    logits[1] = 20.0  # nor does a background RoI
    assert mask_loss(logits, batch, targets) < 1e-6
    logits[0, 2, :, 4:] = 20.0  # the true class's right half is wrong: half the pixels cost ~20
    assert mask_loss(logits, batch, targets) == pytest.approx(10.0, rel=1e-3)


TINY = ("train_images=32", "eval_every=3", "log_every=1")


def test_a_few_real_training_steps_of_both_roi_layers(runner, tmp_path):
    record, rows = three_steps(runner, "mask-rcnn", tmp_path / "mask", TINY)
    assert {"train_align_mask", "train_pool_mask", "train_align_rpn_cls"} <= set(rows[-1])
    m = record["metrics"]
    assert m["align_minus_pool_mask_map"] == pytest.approx(m["align_mask_map"] - m["pool_mask_map"])
    assert (
        record["arm_params"]["align"] == record["arm_params"]["pool"]
    )  # only the RoI layer differs


def test_two_steps_do_not_reproduce(runner, tmp_path):
    failed = two_step_control(runner, "mask-rcnn", tmp_path / "control", TINY[0])
    assert "align_mask_map" in failed  # the absolute floor


def test_the_two_arms_differ_only_in_the_roi_layer():
    """Table 2c's ablation is fair: the align and pool arms are one detector config but for the
    RoI layer (both with the mask head, the nuclei's one class, one input channel)."""
    from dataclasses import replace

    from papercli.recipes.mask_rcnn import MINI, MaskRCNNRecipe
    from papercli.reproduce.recipe import Context

    ctx = Context(device=torch.device("cpu"), seed=0)
    ctx.split_batch(MINI.batch_size, 0)
    recipe = MaskRCNNRecipe(MINI, ctx)
    align, pool = recipe.arm_config("align"), recipe.arm_config("pool")
    assert (align.roi, pool.roi) == ("align", "pool")
    assert align.mask and align.num_classes == 1 and align.in_channels == 1
    assert replace(align, roi="pool") == pool
