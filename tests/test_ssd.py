"""SSD: SSD300's size against torchvision's count, default boxes by Eq. 4, the matching rule,
the loss with hard negative mining on a case worked out by hand, decoding, a few real training
steps of SSD and YOLO side by side through the CLI, and a 2-step control that must not
reproduce."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_run, two_step_control

from papercli.cli import app
from papercli.methods import boxes as B
from papercli.models import create_model
from papercli.models.ssd import VARIANCES, SSDConfig, default_boxes, match, ssd_detect, ssd_loss


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        (90, 35_641_826),  # torchvision's ssd300_vgg16 (COCO's 91 labels with background)
        (20, 26_285_486),  # PASCAL VOC: 20 classes + background
    ],
)
def test_ssd300_counts_on_the_meta_device(classes, expected):
    with torch.device("meta"):
        model = create_model("ssd300", num_classes=classes)
        logits, offsets = model(torch.empty(1, 3, 300, 300))
    assert n_params(model) == expected
    # 38² · 4 + 19² · 6 + 10² · 6 + 5² · 6 + 3² · 4 + 1² · 4 default boxes (Fig. 2: 8732)
    assert len(model.defaults) == 8732
    assert tuple(logits.shape) == (1, 8732, classes + 1) and tuple(offsets.shape) == (1, 8732, 4)


def test_default_boxes_follow_eq_4():
    cfg = SSDConfig(image_size=100, stages=(((3, 8, 2),), ((3, 8, 2),)), ratios=((2,), (2, 3)))
    boxes = default_boxes(cfg)
    assert len(boxes) == 50 * 50 * 4 + 25 * 25 * 6
    wh = (boxes[:, 2:] - boxes[:, :2]) / 100
    # a centre box far from the border (not clipped): scales s_1 = 0.2, s_2 = 0.9, s_3 = 1.6
    centre = 50 * 50 * 4 + (12 * 25 + 12) * 6  # second map, row 12, column 12
    got = wh[centre : centre + 6]
    want = [(0.9, 0.9), (math.sqrt(0.9 * 1.6),) * 2]
    for r in (2, 3):
        want += [(0.9 * math.sqrt(r), 0.9 / math.sqrt(r)), (0.9 / math.sqrt(r), 0.9 * math.sqrt(r))]
    middle = (boxes[centre, :2] + boxes[centre, 2:]) / 2
    assert torch.allclose(middle, torch.tensor([50.0, 50.0]))  # ((12 + 0.5) / 25) · 100
    clipped = torch.tensor(want).clamp(max=1.0)  # wider than the image: clipped to it
    assert torch.allclose(got, clipped, atol=1e-5)
    # the corner box: centred at 0.5 / 50 = 0.01, its outer part clipped away
    assert torch.allclose(wh[0], torch.tensor([0.11, 0.11]), atol=1e-6)


def test_matching_is_best_box_then_iou_above_half():
    defaults = torch.tensor([[0.0, 0, 10, 10], [0, 0, 12, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    target = {
        "boxes": torch.tensor([[0.0, 0, 11, 10], [40, 40, 70, 70]]),
        "labels": torch.tensor([3, 5]),
    }
    labels, gt = match(defaults, target)
    # boxes 0 and 1 overlap the first truth by > 0.5; box 3 is the second truth's best (IoU 1/9)
    assert labels.tolist() == [4, 4, 0, 6]
    assert torch.equal(gt[3], target["boxes"][1])


def test_loss_mines_three_negatives_per_positive():
    cfg = SSDConfig(num_classes=4)
    defaults = torch.tensor([[float(10 * i), 0, 10 * i + 10, 10] for i in range(20)])
    target = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([2])}]
    logits = torch.zeros(1, 20, 5)
    offsets = torch.zeros(1, 20, 4)  # exact: the truth is default box 0 itself
    # uniform scores: every box costs log 5; 1 positive + 3 mined negatives, over N = 1
    assert ssd_loss(logits, offsets, target, cfg, defaults).item() == pytest.approx(4 * math.log(5))
    # the mined negatives are the 3 hardest: make 3 confident in a class, the rest in background
    logits[0, 1:, 0] = 10.0
    logits[0, 5:8, 0], logits[0, 5:8, 1] = 0.0, 10.0
    hard = torch.nn.functional.cross_entropy(logits[0, 5], torch.tensor(0)).item()
    expected = math.log(5) + 3 * hard
    assert ssd_loss(logits, offsets, target, cfg, defaults).item() == pytest.approx(expected)
    # a box offset costs its smooth L1 on the scaled targets (α = 1): 0.5 · 0.1² · 2
    moved = offsets.clone()
    moved[0, 0, :2] = 0.1
    extra = ssd_loss(logits, moved, target, cfg, defaults) - expected
    assert extra.item() == pytest.approx(0.5 * 0.1**2 * 2, abs=1e-6)


def test_detection_decodes_offsets_and_keeps_the_best_class():
    cfg = SSDConfig(image_size=100, num_classes=3)
    defaults = torch.tensor([[10.0, 10, 30, 30], [60, 60, 90, 90]])
    logits = torch.zeros(1, 2, 4)
    logits[0, 0, 3] = 8.0  # default box 0: class 2 (index 3 counts the background)
    offsets = torch.zeros(1, 2, 4)
    truth = torch.tensor([[12.0, 10, 32, 30]])
    offsets[0, 0] = B.encode(defaults[:1], truth, VARIANCES)[0]
    found = ssd_detect(logits, offsets, cfg, defaults)[0]
    best = found["scores"].argmax()
    assert found["labels"][best] == 2
    assert torch.allclose(found["boxes"][best], truth[0], atol=1e-4)


# --------------------------------------------------------------------------- the recipe
TINY = ("items=digits", "train_images=64", "test_images=16", "eval_every=2")


def test_a_few_real_training_steps_of_both_arms(runner, tmp_path):
    out = tmp_path / "ssd"
    record, rows = tiny_run(runner, "ssd", out, *TINY)
    assert [r["step"] for r in rows] == [2, 4]
    assert {"train_ssd", "train_yolo"} <= set(rows[0])
    m = record["metrics"]
    assert m["ssd_minus_yolo_map_small"] == pytest.approx(m["ssd_map_small"] - m["yolo_map_small"])
    assert set(record["arm_params"]) == {"ssd", "yolo"} and "rcnn_ms_per_image" not in m


def test_paper_scale_is_ssd300_on_coco(runner):
    plan = runner.invoke(app, ["reproduce", "ssd", "--scale", "paper", "--dry-run", "--json"])
    assert plan.exit_code == 0, plan.output
    plan = json.loads(plan.stdout)
    with torch.device("meta"):
        assert plan["params"] == n_params(create_model("ssd300", num_classes=80)) == 34_305_206


def test_two_steps_do_not_reproduce(runner, tmp_path: Path):
    failed = two_step_control(runner, "ssd", tmp_path / "control")
    assert "ssd_map_50" in failed  # the absolute floor
