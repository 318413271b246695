"""The shared detection/segmentation layer: scenes, nuclei crops, box arithmetic, COCO AP and the
semantic/panoptic metrics, each against cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from papercli.data import nuclei, scenes
from papercli.data.instances import InstanceSet, boxes_of
from papercli.methods import boxes as B
from papercli.metrics.detection import coco_ap
from papercli.metrics.panoptic import mean_iou, panoptic_quality


@pytest.fixture(scope="module")
def digit_scenes() -> InstanceSet:
    return scenes.load(
        "train", 60, scenes.SceneSpec(canvas=48, max_size=24), items="digits", seed=3
    )


def test_scenes_are_deterministic_and_consistent(digit_scenes):
    again = scenes.load(
        "train", 60, scenes.SceneSpec(canvas=48, max_size=24), items="digits", seed=3
    )
    assert np.array_equal(again.images, digit_scenes.images)
    assert np.array_equal(again.instances, digit_scenes.instances)
    other = scenes.load(
        "train", 60, scenes.SceneSpec(canvas=48, max_size=24), items="digits", seed=4
    )
    assert not np.array_equal(other.images, digit_scenes.images)
    for i in range(len(digit_scenes)):
        k = len(digit_scenes.classes[i])
        assert 1 <= k <= 4
        masks = digit_scenes.masks(i)
        assert masks.shape == (k, 48, 48) and masks.any(axis=(1, 2)).all()  # every object visible
        assert not (masks.sum(0) > 1).any()  # objects never share a pixel
        for mask, box in zip(masks, digit_scenes.boxes[i], strict=True):
            ys, xs = np.nonzero(mask)  # the box is the tight box of the visible pixels
            assert tuple(box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        semantic = digit_scenes.semantic(i)
        assert set(np.unique(semantic)) == {0, *(digit_scenes.classes[i] + 1)}
        assert (digit_scenes.images[i][digit_scenes.instances[i] == 0] == 0).all()


def test_scenes_keep_only_the_allowed_classes_and_their_own_split():
    data, _ = scenes.item_source("digits")
    spec = scenes.SceneSpec(canvas=32, max_size=16, classes=(3, 7))
    few = scenes.load("test", 30, spec, items="digits")
    assert set(np.concatenate(few.classes)) <= {3, 7}
    with pytest.raises(ValueError):
        scenes.SceneSpec(canvas=32, min_size=40)
    # a scene made from one photo only shows that photo's pixels (split photos are not mixed)
    one = scenes.make_scenes(
        data["test_x"][:1],
        data["test_y"][:1],
        ("d",) * 10,
        5,
        scenes.SceneSpec(canvas=32, max_size=16),
    )
    assert set(np.concatenate(one.classes)) <= {int(data["test_y"][0])}


def test_nuclei_crops_tile_the_held_out_part_once():
    test = nuclei.instance_crops("test", 64)
    _, labels = nuclei.load()
    held = labels[:, 384:]
    assert len(test) == (512 // 64) * (128 // 64)
    for crop in test.instances:  # instance ids are consecutive from 1
        assert set(np.unique(crop)) == set(range(int(crop.max()) + 1))
    cut_objects = sum(
        len(np.unique(held[y : y + 64, x : x + 64])) - 1
        for y in range(0, 512, 64)
        for x in range(0, 128, 64)
    )
    assert test.num_objects == cut_objects
    train = nuclei.instance_crops("train", 96, count=5, seed=1)
    assert train.images.shape == (5, 96, 96) and train.class_names == ("nucleus",)


def test_boxes_of_uses_pixel_edges():
    m = np.zeros((5, 6), np.int16)
    m[1:3, 2] = 1
    m[4, 5] = 2
    assert boxes_of(m, 3).tolist() == [[2, 1, 3, 3], [5, 4, 6, 5], [0, 0, 0, 0]]


def test_box_arithmetic_by_hand():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0]])
    assert B.box_iou(a, b).item() == pytest.approx(50 / 150)
    # hull 15x10 = 150 = union, so GIoU = IoU; apart boxes get a negative GIoU
    assert B.generalized_box_iou(a, b).item() == pytest.approx(50 / 150)
    far = torch.tensor([[20.0, 0.0, 30.0, 10.0]])
    assert B.generalized_box_iou(a, far).item() == pytest.approx(0 - (300 - 200) / 300)
    ref = torch.tensor([[2.0, 4.0, 12.0, 24.0]])
    tgt = torch.tensor([[3.0, 2.0, 9.0, 30.0]])
    deltas = B.encode(ref, tgt, (10, 10, 5, 5))
    assert deltas[0, 0].item() == pytest.approx(10 * (6 - 7) / 10)
    assert deltas[0, 3].item() == pytest.approx(5 * np.log(28 / 20))
    assert torch.allclose(B.decode(ref, deltas, (10, 10, 5, 5)), tgt, atol=1e-5)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]]).float()
    scores = torch.tensor([0.6, 0.9, 0.5, 0.8])
    assert B.nms(boxes, scores, 0.5).tolist() == [1, 2]  # 1 hides 0 and 3
    assert B.batched_nms(boxes, scores, torch.tensor([0, 0, 0, 1]), 0.5).tolist() == [1, 3, 2]


def test_coco_ap_scores_right_wrong_and_missing(digit_scenes):
    targets = digit_scenes.targets(range(20), with_masks=True)
    perfect = [
        {**t, "scores": torch.ones(len(t["labels"])), "masks": t["masks"].float()} for t in targets
    ]
    box = coco_ap(perfect, targets, 10, "bbox", (12**2, 20**2))
    assert box["map"] == pytest.approx(1.0) and box["map_50"] == pytest.approx(1.0)
    assert coco_ap(perfect, targets, 10, "segm")["map"] == pytest.approx(1.0)
    shifted = [{**p, "boxes": p["boxes"] + 2} for p in perfect]
    assert 0.0 < coco_ap(shifted, targets, 10)["map"] < 0.9
    wrong = [{**p, "labels": (p["labels"] + 1) % 10} for p in perfect]
    assert coco_ap(wrong, targets, 10)["map"] == 0.0
    # a duplicate of every box with a lower score is a false positive after the true one:
    # AP stays 1 (recall is complete before it), which is why DETR must be checked without NMS
    # by precision, not AP alone
    doubled = [
        {k: torch.cat([v, v]) if k != "scores" else torch.cat([v, 0.5 * v]) for k, v in p.items()}
        for p in perfect
    ]
    assert coco_ap(doubled, targets, 10)["map"] == pytest.approx(1.0)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}
    assert coco_ap([empty] * 20, targets, 10)["map"] == 0.0


def test_mean_iou_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 2]])
    miou, per_class = mean_iou([pred], [truth], 3)
    # class 0: 3 hits / 4 truth+3 pred-3 = 4 → 0.75; class 1: 3 / (4 + 4 − 3) = 0.6; class 2: 0/1
    assert per_class.tolist() == pytest.approx([0.75, 0.6, 0.0])
    assert miou == pytest.approx((0.75 + 0.6 + 0.0) / 3)
    assert np.isnan(mean_iou([pred], [truth], 4)[1][3])  # absent everywhere: left out


def test_panoptic_quality_by_hand():
    # truth: background (class 0) and two objects of class 1; the prediction finds object 1
    # at IoU 4/6, misses object 2 (it says background there) and adds a false class-1 object
    truth = np.array(
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 0, 0, 2, 2],
            [0, 0, 0, 0, 2, 2],
        ]
    )
    pred = np.array(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 3],
        ]
    )
    truth_classes, pred_classes = [0, 1, 1], [0, 1, 0, 1]  # segment id → class
    result = panoptic_quality([(pred, pred_classes)], [(truth, truth_classes)], 2)
    # background: truth 9 px, prediction 12 px, overlap 8 (truth's (1, 2) went to object 1)
    bg_iou = 8 / 13
    obj_iou = 4 / 6
    # class 0: one TP (bg); class 1: one TP (IoU 4/6), one FN (object 2), one FP (segment 3)
    pq0, pq1 = bg_iou * 1.0, obj_iou * (1 / (1 + 0.5 + 0.5))
    assert result["pq"] == pytest.approx((pq0 + pq1) / 2)
    assert result["rq"] == pytest.approx((1.0 + 0.5) / 2)
    assert result["sq"] == pytest.approx((bg_iou + obj_iou) / 2)


def test_detection_batches_flip_images_boxes_and_masks_together():
    from papercli.recipes._detection import DetectionConfig, DetectionRecipe
    from papercli.reproduce.recipe import Context

    ctx = Context(device=torch.device("cpu"), seed=0)
    ctx.split_batch(16, 0)
    recipe = DetectionRecipe(DetectionConfig(items="digits", train_images=32, test_images=4), ctx)
    recipe.with_masks = True
    recipe.ensure_data()
    flipped = 0
    for step in range(2):
        x, targets = recipe.train_batch(step)
        assert x.shape == (16, 1, 64, 64)
        for image, t, i in zip(x, targets, recipe.ctx.batch_indices(32, step), strict=True):
            flipped += not torch.equal(image[0], torch.from_numpy(recipe.train_set.images[i]))
            for mask, box in zip(t["masks"], t["boxes"], strict=True):
                ys, xs = torch.nonzero(mask, as_tuple=True)
                assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                assert image[0][mask].mean() > 0.1  # the item is under its mask
    assert 0 < flipped < 32
