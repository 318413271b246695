"""The R-CNN family: paper-scale parameter counts against the papers' numbers, anchors, the
labelling and sampling of Eq. 1's losses, the fixed proposals on real scenes, a few real
training steps of the three arms through the CLI, and a 2-step control that must not reproduce."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import two_step_control

from papercli.cli import app
from papercli.methods.boxes import box_iou
from papercli.methods.region_proposals import fixed_proposals
from papercli.methods.region_training import label_boxes, sample
from papercli.models import create_model
from papercli.models.rcnn import anchor_grid
from papercli.recipes.rcnn import MINI

VGG16 = 138_357_544  # Simonyan & Zisserman, Table 2: 138M (configuration D, 1000 classes)
FC8 = 4096 * 1000 + 1000


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_vgg16_detectors_count_what_the_papers_describe():
    """Fast R-CNN Sec. 2.2: VGG-16 with fc8 replaced by a (K+1)-way softmax and 4(K+1) box
    outputs (VOC: K = 20); R-CNN runs the same network per region; Faster R-CNN adds the RPN,
    whose output layers have 512 x (4 + 2) x 9 ≈ 2.8 x 10^4 weights (Sec. 3.1.1)."""
    with torch.device("meta"):
        fast = create_model("fast-rcnn-vgg16")
        faster = create_model("faster-rcnn-vgg16")
        rcnn = create_model("rcnn-vgg16")
    head = 21 * 4097 + 84 * 4097
    assert n_params(fast) == VGG16 - FC8 + head == n_params(rcnn)
    rpn = faster.rpn
    assert rpn.cls.weight.numel() + rpn.reg.weight.numel() == 512 * (4 + 2) * 9 == 27_648
    assert n_params(faster) == n_params(fast) + n_params(rpn)
    assert n_params(rpn) == 512 * 512 * 9 + 512 + 27_648 + 6 * 9


def test_anchors_have_the_sizes_and_ratios_asked_for():
    anchors = anchor_grid(2, 3, 16, (128, 256), (0.5, 1.0, 2.0))
    assert anchors.shape == (2 * 3 * 6, 4)
    w, h = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    assert torch.allclose((w * h)[:6], torch.tensor([128.0**2] * 3 + [256.0**2] * 3))
    assert torch.allclose((h / w)[:3], torch.tensor([0.5, 1.0, 2.0]))
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert centres[0].tolist() == [8.0, 8.0] and centres[6].tolist() == [24.0, 8.0]  # (y, x, a)


def test_anchor_labels_follow_sec_3_1_2():
    gt = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    anchors = torch.tensor(
        [[0.0, 0, 10, 10], [0, 0, 10, 12], [30, 30, 40, 40], [50, 50, 63, 63], [0, 0, 10, 20]]
    )
    matched, labels = label_boxes(anchors, gt, 0.7, 0.3, best_is_positive=True)
    # IoU 1.0 and 0.83 are positive, no overlap negative, 0.5 is ignored — except that the
    # second object's best anchor (IoU 0.59) is made positive by condition (i)
    assert labels.tolist() == [1, 1, 0, 1, -1]
    assert matched[3] == 1
    g = torch.Generator().manual_seed(0)
    pos, neg = sample(torch.tensor([1, 1, 1, 0, 0, 0, 0, -1]), 4, 0.25, g)
    assert len(pos) == 1 and len(neg) == 3 and set(neg.tolist()) <= {3, 4, 5, 6}


def best_overlaps(data) -> torch.Tensor:
    """Each object's best IoU with the fixed proposals of its image."""
    recall = []
    for image, boxes in zip(data.images, data.boxes, strict=True):
        props = fixed_proposals(image)
        assert 100 <= len(props) <= 1000
        recall.append(box_iou(torch.from_numpy(boxes), torch.from_numpy(props)).max(1).values)
    return torch.cat(recall)


def test_fixed_proposals_cover_the_objects_of_real_scenes():
    from papercli.data import scenes

    data = scenes.load("test", 30, scenes.SceneSpec(), "digits", seed=3)
    best = best_overlaps(data)
    assert (best >= 0.5).float().mean() >= 0.9  # selective search: ~98 % at 0.5 (R-CNN Sec. 2.1)
    assert (best >= 0.9).float().mean() < 0.9  # … but not exact boxes: regression has work to do
    assert np.allclose(fixed_proposals(data.images[0]), fixed_proposals(data.images[0]))
    # the mini's cluttered background: the same objects are still found at IoU 0.5, but fewer
    # tightly, since thresholded segments now merge objects with background fragments
    busy = scenes.load("test", 30, scenes.SceneSpec(clutter=MINI.clutter), "digits", seed=3)
    cluttered = best_overlaps(busy)
    assert (cluttered >= 0.5).float().mean() >= 0.9
    assert (cluttered >= 0.9).float().mean() < (best >= 0.9).float().mean() - 0.1


# --------------------------------------------------------------------------- the recipe
TINY = ("items=digits", "train_images=48", "test_images=6", "eval_every=3", "log_every=1")


def three_steps(runner, paper: str, out, settings) -> tuple[dict, list[dict]]:
    """A real 3-step run of `paper` (batch 4) through the CLI: its result.json and metrics rows."""
    args = ["reproduce", paper, "--steps", "3", "--batch-size", "4", "--out", str(out)]
    for setting in settings:
        args += ["--set", setting]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return json.loads((out / "result.json").read_text()), rows


def test_a_few_real_training_steps_of_the_three_arms(runner, tmp_path):
    out = tmp_path / "rcnn"
    record, rows = three_steps(runner, "faster-rcnn", out, TINY)
    losses = rows[-1]
    for name in ("rcnn_cls", "rcnn_loc", "fast_cls", "faster_rpn_cls", "faster_rpn_reg"):
        assert np.isfinite(losses[f"train_{name}"])
    m = record["metrics"]
    assert m["faster_proposals_per_image"] <= MINI.test_proposals < m["fast_proposals_per_image"]
    assert m["rcnn_proposals_per_image"] == m["fast_proposals_per_image"]  # the same proposals
    assert m["fast_speedup_vs_rcnn"] == pytest.approx(
        m["rcnn_ms_per_image"] / m["fast_ms_per_image"]
    )
    assert m["faster_minus_fast_map"] == pytest.approx(m["faster_map"] - m["fast_map"])
    assert record["arm_params"]["rcnn"] == record["arm_params"]["fast"]
    assert (out / "detections.png").stat().st_size > 0


def test_an_unknown_arm_is_one_line(runner):
    result = runner.invoke(app, ["reproduce", "rcnn", "--dry-run", "--set", "arms=fast,yolo"])
    assert result.exit_code == 2
    assert "--set arms: unknown yolo" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("paper", ["rcnn", "fast-rcnn", "faster-rcnn"])
def test_paper_scale_dry_run_needs_no_data(runner, paper):
    result = runner.invoke(app, ["reproduce", paper, "--scale", "paper", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    arms = json.loads(result.stdout)["arm_params"]
    # COCO's 80 classes: VGG-16 minus fc8, plus 81 scores and 324 box outputs
    assert arms["fast"]["total"] == VGG16 - FC8 + 81 * 4097 + 324 * 4097


def test_two_steps_do_not_reproduce(runner, tmp_path):
    failed = two_step_control(runner, "faster-rcnn", tmp_path / "control", *TINY[:3])
    assert "faster_map" in failed  # the absolute floor


@pytest.mark.parametrize("trains_backbone", [True, False])
def test_the_rpn_loss_reaches_the_shared_layers_only_in_joint_training(trains_backbone):
    """Approximate joint training (Sec. 3.2) back-propagates the RPN's loss into the shared
    convolutions; with `rpn_trains_backbone` off they learn from the detector's loss alone, as
    after 4-step alternating training, and the RPN's own layers still learn."""
    from dataclasses import replace

    from papercli.models.rcnn import build
    from papercli.recipes.rcnn import RCNNRecipe
    from papercli.reproduce.recipe import Context

    cfg = replace(MINI, arms=("faster",), rpn_trains_backbone=trains_backbone)
    recipe = RCNNRecipe(cfg, Context(device=torch.device("cpu"), seed=0))
    torch.manual_seed(0)
    arm = build(recipe.arm_config("faster"))
    images = torch.rand(2, 1, 64, 64)
    targets = [
        {"boxes": torch.tensor([[4.0, 6, 24, 30]]), "labels": torch.tensor([3])},
        {
            "boxes": torch.tensor([[30.0, 20, 50, 44], [2, 2, 16, 14]]),
            "labels": torch.tensor([1, 7]),
        },
    ]
    losses = recipe.arm_loss(arm, images, targets, None, torch.Generator().manual_seed(0))
    (losses["rpn_cls"] + losses["rpn_reg"]).backward()
    backbone = sum(p.grad.abs().sum() for p in arm.backbone.parameters() if p.grad is not None)
    assert (backbone > 0) == trains_backbone
    assert arm.rpn.cls.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("shared", [True, False])
def test_shared_init_starts_every_arm_from_one_network(shared):
    """The papers' detectors all start from one ImageNet-pretrained VGG-16: with `shared_init`
    every arm's backbone and fc head start equal (the RPN is the faster arm's own); without it,
    each arm draws its own init from the stream the arms before it advanced."""
    from dataclasses import replace

    from papercli.recipes.rcnn import RCNNRecipe
    from papercli.reproduce.recipe import Context

    cfg = replace(MINI, items="digits", shared_init=shared, pretrain_steps=0)
    recipe = RCNNRecipe(cfg, Context(device=torch.device("cpu"), seed=0))
    torch.manual_seed(0)
    arms = recipe.build_model()
    for part in ("backbone", "head"):
        first = getattr(arms["rcnn"], part).state_dict()
        for name in ("fast", "faster"):
            other = getattr(arms[name], part).state_dict()
            same = all(torch.equal(first[k], other[k]) for k in first)
            assert same == shared


def test_pretraining_learns_to_classify_the_training_items():
    """The ImageNet pre-training stand-in: backbone + fc6/fc7 + a K-way softmax on single item
    photos of the training split beats chance (10 classes) within a few dozen steps."""
    from dataclasses import replace

    from papercli.models.rcnn import build
    from papercli.recipes.rcnn import RCNNRecipe, pretrain
    from papercli.reproduce.recipe import Context

    cfg = replace(MINI, items="digits", shared_init=True, pretrain_steps=60, pretrain_batch=32)
    ctx = Context(device=torch.device("cpu"), seed=0)
    recipe = RCNNRecipe(cfg, ctx)
    torch.manual_seed(0)
    detector = build(recipe.arm_config("fast"))
    assert pretrain(detector, cfg, 10, ctx) > 0.4


def test_four_step_alternating_training_trains_one_part_per_step():
    """Sec. 3.2's 4-step alternating training: 1 the RPN with the shared convs; 2 a detector
    restarted from the initial weights on step 1's proposals (RPN untouched); 3 the RPN's own
    layers on fixed shared convs; 4 the detector's head alone. The fast arm is never affected."""
    from dataclasses import replace

    from papercli.recipes.rcnn import RCNNRecipe
    from papercli.reproduce.recipe import Context

    cfg = replace(MINI, items="digits", arms=("fast", "faster"), steps=10)
    cfg = replace(cfg, rpn_training="alternating", alternating=(0.2, 0.5, 0.8))
    recipe = RCNNRecipe(cfg, Context(device=torch.device("cpu"), seed=0))
    torch.manual_seed(0)
    arms = recipe.build_model()
    assert [recipe.alternating_phase(s) for s in range(10)] == [1, 1, 2, 2, 2, 3, 3, 3, 4, 4]
    images = torch.rand(2, 1, 64, 64)
    targets = [
        {"boxes": torch.tensor([[4.0, 6, 24, 30]]), "labels": torch.tensor([3])},
        {"boxes": torch.tensor([[30.0, 20, 50, 44]]), "labels": torch.tensor([1])},
    ]
    fixed = recipe.fixed(images)
    faster = arms["faster"]
    trained = {}
    for step in (0, 2, 5, 8):
        with torch.no_grad():
            faster.backbone.body[0].weight.add_(0.1)  # as if step 1 had trained them
        arms.zero_grad(set_to_none=True)
        losses = recipe.loss(arms, (images, targets, fixed, (step, 0)))
        sum(losses.values()).backward()
        trained[step] = {
            part: any(p.grad is not None for p in getattr(faster, part).parameters())
            for part in ("backbone", "rpn", "head")
        }
        assert any(p.grad is not None for p in arms["fast"].backbone.parameters())
        if step == 2:  # step 2 restarted the shared convs from the initial weights
            start = recipe.start_backbones["faster"]["body.0.weight"]
            assert torch.equal(faster.backbone.body[0].weight, start)
            assert not torch.equal(recipe.proposers["faster"].body[0].weight, start)
    assert trained[0] == {"backbone": True, "rpn": True, "head": False}
    assert trained[2] == {"backbone": True, "rpn": False, "head": True}
    assert trained[5] == {"backbone": False, "rpn": True, "head": False}
    assert trained[8] == {"backbone": False, "rpn": False, "head": True}


def test_anchor_sizes_and_a_dilated_rpn_window_are_options():
    from dataclasses import replace

    from papercli.models.rcnn import build
    from papercli.recipes.rcnn import RCNNRecipe
    from papercli.reproduce.config import apply_overrides
    from papercli.reproduce.recipe import Context

    cfg = apply_overrides(
        replace(MINI, items="digits"),
        ["detector.anchor_sizes=10,14,20,28", "detector.rpn_dilation=4"],
    )
    recipe = RCNNRecipe(cfg, Context(device=torch.device("cpu"), seed=0))
    arm = build(recipe.arm_config("faster"))
    assert arm.cfg.anchor_sizes == ((10, 14, 20, 28),)
    assert arm.rpn.cls.out_channels == 2 * 4 * 3  # two scores x 4 sides x 3 ratios
    assert arm.rpn.conv.dilation == (4, 4)
    scores, deltas, anchors = arm.rpn_forward(arm.shared(torch.rand(1, 1, 64, 64)))
    assert scores.shape == (1, 32 * 32 * 12) == deltas.shape[:2] and len(anchors) == 32 * 32 * 12
