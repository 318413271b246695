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


def _tiny_coco(root):
    """A real COCO-format folder: two PNG photos and their instances JSON (polygons)."""
    import json

    from PIL import Image

    (root / "annotations").mkdir(parents=True)
    images, anns = [], []
    for split in ("train2017", "val2017"):
        (root / split).mkdir()
        for i, (w, h) in enumerate([(80, 40), (30, 60)], start=1):
            pixels = np.zeros((h, w, 3), np.uint8)
            pixels[10:20, 5:25] = 255  # the object: x 5–25, y 10–20
            Image.fromarray(pixels).save(root / split / f"{i:012d}.png")
            images.append({"id": i, "file_name": f"{i:012d}.png", "width": w, "height": h})
            anns.append(
                {
                    "id": i,
                    "image_id": i,
                    "category_id": 18 if i == 1 else 3,
                    "bbox": [5, 10, 20, 10],
                    "area": 200.0,
                    "iscrowd": 0,
                    "segmentation": [[5, 10, 25, 10, 25, 20, 5, 20]],
                }
            )
        cats = [{"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
        doc = {"images": images, "annotations": anns, "categories": cats}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
        images, anns = [], []


def test_coco_folders_are_letterboxed_with_their_boxes_and_masks(tmp_path):
    from papercli.data.coco import CocoDetection
    from papercli.errors import PapercliError

    _tiny_coco(tmp_path)
    data = CocoDetection(tmp_path, "val2017", size=40, with_masks=True)
    assert data.class_names == ("car", "dog") and len(data) == 2
    image, target = data[0]  # 80x40 → scale 0.5 → 40x20, padded to 40x40
    assert image.shape == (3, 40, 40)
    assert target["labels"].tolist() == [1]  # category 18 is the second in id order
    assert target["boxes"].tolist() == [[2.5, 5.0, 12.5, 10.0]]
    assert target["masks"].shape == (1, 40, 40) and 40 <= int(target["masks"].sum()) <= 60
    image, target = data[1]  # 30x60 → scale 2/3 → 20x40
    assert target["boxes"][0].tolist() == pytest.approx(
        [5 * 2 / 3, 10 * 2 / 3, 25 * 2 / 3, 20 * 2 / 3]
    )
    assert (image[:, :, 20:] == 0).all()  # the padding on the right
    with pytest.raises(PapercliError, match="annotations/instances"):
        CocoDetection(tmp_path / "annotations", "val2017", 40)


def test_detection_base_reads_coco_at_paper_scale(tmp_path):
    from papercli.recipes._detection import DetectionConfig, DetectionRecipe
    from papercli.reproduce.recipe import Context

    _tiny_coco(tmp_path)
    ctx = Context(device=torch.device("cpu"), seed=0, data_path=tmp_path)
    ctx.split_batch(2, 0)
    cfg = DetectionConfig(dataset="coco", canvas=32, workers=0, steps=3, test_images=5)
    recipe = DetectionRecipe(cfg, ctx)
    recipe.ensure_data()
    assert recipe.in_channels == 3 and recipe.num_classes == 2 and recipe.steps_per_epoch() == 1
    for step in range(3):
        x, targets = recipe.train_batch(step)
        assert x.shape == (2, 3, 32, 32) and len(targets) == 2
    batches = list(recipe._test_batches())
    assert len(batches) == 1 and batches[0][0].shape == (2, 3, 32, 32)


def test_the_registry_checks_a_coco_folder_through_its_loader(tmp_path):
    from papercli.data import registry as datasets
    from papercli.errors import PapercliError

    _tiny_coco(tmp_path)
    assert datasets.get("coco").load(tmp_path) == tmp_path
    with pytest.raises(PapercliError, match="not downloadable"):
        datasets.get("coco").load(None)
    with pytest.raises(PapercliError, match="instances_train2017"):
        datasets.get("coco").load(tmp_path / "annotations")
