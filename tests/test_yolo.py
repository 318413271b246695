"""YOLO: the Fig. 3 network's size against its layer table, Eq. 3 on cases worked out by hand,
class-specific confidence and NMS at test time, R-CNN-style region warping, a few real training
steps through the CLI, and a 2-step control that must not reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_run, two_step_control

from papercli.cli import app
from papercli.models import create_model
from papercli.models.yolo import YOLOConfig, yolo_detect, yolo_loss
from papercli.recipes.yolo import warp


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_network_is_fig_3():
    """24 convs (kernel, in, out) as Fig. 3 lists them, then FC 7·7·1024 -> 4096 -> 7·7·30."""
    convs = [(7, 3, 64), (3, 64, 192), (1, 192, 128), (3, 128, 256), (1, 256, 256), (3, 256, 512)]
    convs += [(1, 512, 256), (3, 256, 512)] * 4 + [(1, 512, 512), (3, 512, 1024)]
    convs += [(1, 1024, 512), (3, 512, 1024)] * 2 + [(3, 1024, 1024)] * 4
    assert len(convs) == 24
    expected = sum(k * k * cin * cout + cout for k, cin, cout in convs)
    expected += 7 * 7 * 1024 * 4096 + 4096 + 4096 * 7 * 7 * 30 + 7 * 7 * 30
    with torch.device("meta"):
        model = create_model("yolo")
        out = model(torch.empty(1, 3, 448, 448))
    assert n_params(model) == expected == 271_703_550
    assert tuple(out.shape) == (1, 7, 7, 30) and model.map_size == 7


# --------------------------------------------------------------------------- Eq. 3 by hand
CFG = YOLOConfig(image_size=64, grid=2, boxes=2, num_classes=2)
# one object filling the top-left cell's quarter of the image: centre (16, 16) px, 32 x 32 px
TARGET = [{"boxes": torch.tensor([[0.0, 0.0, 32.0, 32.0]]), "labels": torch.tensor([1])}]
EXACT = [0.5, 0.5, 0.5**0.5, 0.5**0.5]  # x, y in the cell; √w, √h of the image


def _output(first: list[float], second: list[float], classes: list[float]) -> torch.Tensor:
    out = torch.zeros(1, 2, 2, 12)
    out[0, 0, 0, :5], out[0, 0, 0, 5:10], out[0, 0, 0, 10:] = (
        torch.tensor(first),
        torch.tensor(second),
        torch.tensor(classes),
    )
    return out


def test_a_perfect_responsible_predictor_costs_only_its_neighbours():
    # predictor 1 is exact (IOU 1, confidence 1); predictor 0 is elsewhere with confidence 0.3,
    # so it is not responsible and pays λ_noobj · 0.3²; the classes pay (0 − 0.2)² + (1 − 0.8)²
    out = _output([0.1, 0.1, 0.2, 0.2, 0.3], [*EXACT, 1.0], [0.2, 0.8])
    loss = yolo_loss(out, TARGET, CFG)
    assert loss.item() == pytest.approx(0.5 * 0.09 + 0.04 + 0.04)
    # empty cells pay λ_noobj · C² for each of their predictors
    out[0, 1, 1, 4] = 0.4
    assert yolo_loss(out, TARGET, CFG).item() == pytest.approx(0.125 + 0.5 * 0.16)


def test_coordinates_weigh_five_times_and_confidence_targets_the_iou():
    # x off by 0.25 cells = 8 px: the predicted 32 px box overlaps the truth by 24/40 of a union
    shifted = [0.75, 0.5, 0.5**0.5, 0.5**0.5]
    out = _output([*shifted, 0.6], [0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0])
    iou = (24 * 32) / (2 * 32 * 32 - 24 * 32)
    assert yolo_loss(out, TARGET, CFG).item() == pytest.approx(5 * 0.25**2 + (0.6 - iou) ** 2)
    # with two images the loss is their mean
    two = yolo_loss(torch.cat([out, out]), TARGET * 2, CFG)
    assert two.item() == pytest.approx(yolo_loss(out, TARGET, CFG).item())


def test_detection_scores_are_class_specific_confidences_after_nms():
    out = _output([*EXACT, 0.9], [0.55, 0.5, 0.5**0.5, 0.5**0.5, 0.5], [0.25, 0.75])
    found = yolo_detect(out, CFG)[0]
    best = found["scores"].argmax()
    assert found["labels"][best] == 1 and found["scores"][best].item() == pytest.approx(0.675)
    assert torch.allclose(found["boxes"][best], torch.tensor([0.0, 0.0, 32.0, 32.0]), atol=1e-5)
    # the second predictor's box (IoU 0.9 with the first) is suppressed in each class
    for label, kept, dropped in ((1, 0.675, 0.375), (0, 0.225, 0.125)):
        scores = found["scores"][found["labels"] == label].tolist()
        assert pytest.approx(kept) in scores and pytest.approx(dropped) not in scores


def test_warp_resamples_each_region_to_the_input_size():
    image = torch.arange(16.0).view(1, 4, 4)
    whole = warp(image, torch.tensor([[0.0, 0.0, 4.0, 4.0]]), 4)
    assert torch.allclose(whole[0], image, atol=1e-5)
    quarter = warp(image, torch.tensor([[2.0, 0.0, 4.0, 2.0]]), 2)  # the top-right 2x2 pixels
    assert torch.allclose(quarter[0], image[:, :2, 2:], atol=1e-5)


# --------------------------------------------------------------------------- the recipe
TINY = ("items=digits", "train_images=64", "test_images=16", "speed_images=2", "eval_every=2")


def test_a_few_real_training_steps(runner, tmp_path):
    out = tmp_path / "yolo"
    record, rows = tiny_run(runner, "yolo", out, *TINY)
    assert [r["step"] for r in rows] == [2, 4] and "train_yolo" in rows[0]
    m = record["metrics"]
    assert 0 <= m["yolo_map_50"] <= 1 and m["yolo_ms_per_image"] > 0
    assert m["yolo_speedup"] == pytest.approx(m["rcnn_ms_per_image"] / m["yolo_ms_per_image"])
    assert record["params"] == n_params(create_model("yolo-mini", in_channels=1, image_size=64))
    assert (out / "detections.png").stat().st_size > 0


def test_paper_scale_counts_and_stops_without_data(runner, capfd):
    plan = runner.invoke(app, ["reproduce", "yolo", "--scale", "paper", "--dry-run", "--json"])
    assert plan.exit_code == 0, plan.output
    assert json.loads(plan.stdout)["params"] == 271_703_550
    result = runner.invoke(app, ["reproduce", "yolo", "--scale", "paper", "--steps", "1"])
    err = capfd.readouterr().err  # the training process's own stderr
    assert result.exit_code == 1 and "papercli: error: VOC is not loaded yet" in err
    assert "Traceback" not in err


def test_two_steps_do_not_reproduce(runner, tmp_path: Path):
    failed = two_step_control(runner, "yolo", tmp_path / "control", "speed_images=2")
    assert "yolo_map_50" in failed  # the absolute floor
