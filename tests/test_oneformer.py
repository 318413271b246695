"""OneFormer: the paper-scale size against the paper's 219M, deformable attention against a
direct lookup, the task-derived ground truths, the task token, a few real training steps through
the CLI, and a 2-step control that must not reproduce."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import two_step_control

from papercli.cli import app
from papercli.models import create_model
from papercli.models.oneformer import MSDeformAttn
from papercli.recipes.oneformer import _mask_boxes, task_targets
from papercli.reproduce.params import meta_counts


@pytest.mark.parametrize(("queries", "classes"), [(250, 150), (150, 133)])
def test_paper_scale_count_on_the_meta_device(queries, classes):
    # the paper's and official README's #params: Swin-L OneFormer 219M (ADE20K: 250 queries,
    # 150 classes; COCO: 150 queries, 133 classes)
    counts = meta_counts(
        lambda: create_model("oneformer-swin-l", queries=queries, num_classes=classes)
    )
    assert round(counts["total"] / 1e6) == 219


def test_deformable_attention_with_zero_offsets_reads_the_reference_pixel():
    torch.manual_seed(0)
    attn = MSDeformAttn(dim=4, heads=1, levels=2, points=1)
    torch.nn.init.zeros_(attn.sampling_offsets.bias)
    shapes = [(2, 3), (1, 2)]
    value = torch.randn(1, 8, 4)
    # the centre of pixel (y=1, x=2) of level 0; level 1 is read at the same relative place
    reference = torch.tensor([[[2.5 / 3, 1.5 / 2]]])
    weights = torch.tensor([[[1.0, 0.0]]])  # make the attention weights pick level 0 only
    attn.attention_weights.bias.data = torch.log(weights.flatten() + 1e-12)
    with torch.no_grad():
        out = attn(torch.zeros(1, 1, 4), reference, value, shapes)
        expected = attn.output_proj(attn.value_proj(value[:, 1 * 3 + 2]))
    assert torch.allclose(out[0, 0], expected[0], atol=1e-5)


def test_each_task_derives_its_ground_truth_from_the_panoptic_one():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, 0, :2] = masks[1, 1, :2] = masks[2, 3, :] = True
    target = {"masks": masks, "labels": torch.tensor([5, 5, 2])}
    labels, got = task_targets("instance", target, (4, 4))
    assert labels.tolist() == [6, 6, 3] and torch.equal(got, masks)  # objects only
    labels, got = task_targets("panoptic", target, (4, 4))
    assert labels.tolist() == [0, 6, 6, 3]  # + the background "stuff" segment
    assert torch.equal(got[0], ~masks.any(0))
    labels, got = task_targets("semantic", target, (4, 4))
    assert labels.tolist() == [0, 3, 6]  # one mask per class: the two class-5 items merge
    assert torch.equal(got[2], masks[0] | masks[1])


def test_the_task_token_changes_the_prediction():
    torch.manual_seed(0)
    model = create_model("oneformer-mini", num_classes=11, in_channels=1).eval()
    tokens = model.task_tokens(["semantic", "instance"])
    # 8 words, each one-hot over the 6 words of the sentences; they differ in the task word only
    assert tokens.shape == (2, 8 * 6) and (tokens[0] != tokens[1]).sum() == 2
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        a = model(x, ["semantic"])
        b = model(x, ["panoptic"])
    assert len(a) == 4  # the task-conditioned queries, then 3 decoder layers
    assert a[-1][0].shape == (1, 16, 12) and a[-1][1].shape == (1, 16, 16, 16)
    assert not torch.allclose(a[-1][0], b[-1][0])


def test_mask_boxes_are_tight_pixel_edges():
    masks = torch.zeros(2, 5, 6, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    assert _mask_boxes(masks).tolist() == [[2, 1, 5, 3], [0, 0, 0, 0]]


FAST = ("items=digits", "train_images=32", "test_images=8", "batch_size=4", "warmup_steps=1")


def test_a_few_real_training_steps(runner, tmp_path):
    out = tmp_path / "oneformer"
    args = ["reproduce", "oneformer", "--steps", "2", "--out", str(out)]
    for setting in (*FAST, "eval_every=1"):
        args += ["--set", setting]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"train_ce", "train_bce", "train_dice"} <= set(rows[0])
    m = json.loads((out / "result.json").read_text())["metrics"]
    assert {"miou", "mask_map", "pq", "sq", "rq"} <= set(m)
    assert m["miou_token_gain"] == pytest.approx(m["miou"] - m["miou_with_instance_token"])
    assert (out / "segmentation.png").stat().st_size > 0


def test_two_steps_do_not_reproduce(runner, tmp_path):
    failed = two_step_control(runner, "oneformer", tmp_path / "control", *FAST)
    assert {"miou", "mask_map", "pq"} <= failed  # the absolute floors
