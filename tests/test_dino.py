"""DINO: the head, the loss over pairs of different views, centring and sharpening, the momentum
teacher (no gradients, cosine momentum), multi-crop views, weighted k-NN, a real run through the
CLI and a 2-step control."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import two_step_control

from papercli.cli import app
from papercli.data.transforms import (
    color_jitter,
    gaussian_blur,
    normalize,
    random_resized_crop,
    solarize,
    unnormalize,
)
from papercli.methods.dino import (
    DINO,
    DINOHead,
    DINOLoss,
    collapse_monitor,
    teacher_momentum,
    teacher_temperature,
)
from papercli.methods.ema import EMA
from papercli.metrics.knn import weighted_knn
from papercli.models import create_model
from papercli.reproduce.checkpoint import CHECKPOINT
from papercli.reproduce.checkpoint import load as load_checkpoint


def test_head_is_an_mlp_to_a_normalised_bottleneck_and_a_unit_row_last_layer():
    head = DINOHead(16, 32, hidden=24, bottleneck=8)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 24), (24, 24), (24, 8)]
    assert head.last_layer.shape == (32, 8)
    x = torch.randn(5, 16)
    with torch.no_grad():
        head.last_layer.mul_(7.0)  # weight normalisation with g = 1: the scale of V is irrelevant
        out = head(x)
        z = torch.nn.functional.normalize(head.mlp(x), dim=-1)
        expected = z @ torch.nn.functional.normalize(head.last_layer, dim=-1).T
    assert torch.allclose(out, expected, atol=1e-6)
    assert out.abs().max() <= 1.0 + 1e-6  # cosines of unit vectors


def test_a_learnt_weight_norm_scale_multiplies_the_unit_rows():
    """`norm_last_layer=False` (the released code's setting for ViT-S): g is a parameter, 1 at
    initialisation, so the head starts as the normalised one and g scales each output."""
    torch.manual_seed(0)
    fixed = DINOHead(16, 32, hidden=24, bottleneck=8)
    torch.manual_seed(0)
    learnt = DINOHead(16, 32, hidden=24, bottleneck=8, norm_last_layer=False)
    x = torch.randn(5, 16)
    assert fixed.last_layer_g is None and learnt.last_layer_g.shape == (32, 1)
    assert torch.allclose(learnt(x), fixed(x), atol=1e-6)
    assert len(learnt.last_layer_parameters()) == 2 and len(fixed.last_layer_parameters()) == 1
    with torch.no_grad():
        learnt.last_layer_g.mul_(3.0)
    assert torch.allclose(learnt(x), 3.0 * fixed(x), atol=1e-5)
    learnt(x).sum().backward()
    assert learnt.last_layer_g.grad is not None and learnt.last_layer_g.grad.abs().sum() > 0


def test_loss_pairs_only_different_views_and_uses_the_teacher_on_global_views():
    torch.manual_seed(0)
    loss_fn = DINOLoss(8, student_temp=0.1)
    teacher = [torch.randn(4, 8), torch.randn(4, 8)]
    student = [torch.randn(4, 8, requires_grad=True) for _ in range(4)]  # 2 global + 2 local
    loss = loss_fn(student, teacher, teacher_temp=0.04)
    p = [torch.softmax(t / 0.04, -1) for t in teacher]  # the centre was 0 for this batch
    log_s = [torch.log_softmax(s / 0.1, -1) for s in student]
    pairs = [(i, j) for i in range(2) for j in range(4) if i != j]
    expected = sum(-(p[i] * log_s[j]).sum(-1).mean() for i, j in pairs) / len(pairs)
    assert len(pairs) == 6 and torch.allclose(loss, expected)
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)


def test_centring_follows_the_teacher_mean_and_sharpening_lowers_entropy():
    loss_fn = DINOLoss(4, center_momentum=0.9)
    shifted = torch.tensor([[5.0, 0.0, 0.0, 0.0]]).repeat(6, 1)
    for _ in range(200):
        loss_fn.update_center(shifted)
    assert torch.allclose(loss_fn.center, shifted[:1], atol=1e-6)  # EMA of the batch mean
    # centred, a dimension that every image favours loses its advantage: P_t is uniform here
    assert torch.allclose(loss_fn.teacher_probs(shifted, 0.04), torch.full((6, 4), 0.25), atol=1e-4)
    fresh = DINOLoss(4)
    logits = torch.tensor([[1.0, 0.5, 0.0, -0.5]])
    entropy = [collapse_monitor(fresh.teacher_probs(logits, t), torch.zeros(1, 4))["teacher_entropy"]
               for t in (1.0, 0.1, 0.04)]  # fmt: skip
    assert entropy[0] > entropy[1] > entropy[2]  # a lower τ_t sharpens


def test_collapse_monitor_recognises_both_collapses():
    k = 16
    uniform = torch.full((8, k), 1 / k)
    one_dim = torch.zeros(8, k)
    one_dim[:, 3] = 1.0
    log_s = torch.log_softmax(torch.randn(8, k), -1)
    assert collapse_monitor(uniform, log_s)["teacher_entropy"] == pytest.approx(1.0)
    collapsed = collapse_monitor(one_dim, log_s)
    assert collapsed["teacher_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert collapsed["teacher_batch_entropy"] == pytest.approx(0.0, abs=1e-6)
    spread = torch.eye(k)[torch.arange(8) * 2]  # sharp, but each image its own dimension
    healthy = collapse_monitor(spread, log_s)
    assert healthy["teacher_entropy"] < 0.01 and healthy["teacher_batch_entropy"] == pytest.approx(
        math.log(8) / math.log(k)
    )


def test_schedules():
    assert teacher_temperature(0, 30, 0.04, 0.07) == 0.04
    assert teacher_temperature(15, 30, 0.04, 0.07) == pytest.approx(0.055)
    assert teacher_temperature(100, 30, 0.04, 0.07) == 0.07
    assert teacher_momentum(0, 100) == pytest.approx(0.996)
    assert teacher_momentum(50, 100) == pytest.approx(0.998)
    assert teacher_momentum(100, 100) == pytest.approx(1.0)


def test_multi_crop_views_have_their_sizes_and_come_from_the_image():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(28.0).repeat(2, 1, 28, 1)  # value = column index
    crop = random_resized_crop(x, 14, (0.05, 0.4), g, flip=False)
    assert crop.shape == (2, 1, 14, 14)
    assert crop.min() >= 0 and crop.max() <= 27
    rows = crop[:, 0]
    assert torch.all(rows[:, :, 1:] >= rows[:, :, :-1] - 1e-5)  # no flip: columns keep their order
    full = random_resized_crop(x, 28, (1.0, 1.0), g, ratio=(1.0, 1.0), flip=False)
    assert torch.allclose(full, x, atol=1e-4)  # the whole image at its own size is the image


def test_byol_photometric_augmentations():
    """Colour jitter (brightness, contrast, saturation, grayscale), blur and solarisation, on
    [0, 1] images; each with probability 0 leaves the batch as it is."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8)
    assert torch.equal(color_jitter(x, g, p=0.0, grayscale_p=0.0), x)
    assert torch.equal(gaussian_blur(x, 0.0, g), x)
    assert torch.equal(solarize(x, 0.0, g), x)
    # brightness alone: every image scaled by one factor within 1 ± 0.4, then clamped to [0, 1]
    dim = 0.25 + 0.25 * x  # away from 0 (ratios) and from the clamp at 1
    bright = color_jitter(dim, g, brightness=0.4, contrast=0.0, saturation=0.0, p=1.0)
    ratio = bright / dim
    per_image = ratio.view(64, -1)
    assert torch.allclose(per_image, per_image[:, :1], atol=1e-4)
    assert per_image.min() >= 0.6 - 1e-5 and per_image.max() <= 1.4 + 1e-5
    assert per_image.std() > 0.1  # the factors differ between images
    # contrast alone keeps each image's mean (nothing clamped here) and scales its spread
    mid = 0.4 + 0.2 * x
    contrasted = color_jitter(mid, g, brightness=0.0, contrast=0.4, saturation=0.0, p=1.0)
    assert torch.allclose(contrasted.mean((1, 2, 3)), mid.mean((1, 2, 3)), atol=1e-5)
    # grayscale: RGB images become their luma in every channel
    rgb = torch.rand(4, 3, 8, 8)
    gray = color_jitter(rgb, g, p=0.0, grayscale_p=1.0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    # blur: a constant image stays constant, noise loses most of its variance
    flat = torch.full((2, 1, 8, 8), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.0, g), flat, atol=1e-6)
    assert gaussian_blur(x, 1.0, g, (1.5, 2.0)).std() < 0.5 * x.std()
    # solarisation inverts the pixels at or above 0.5 only
    sol = solarize(x, 1.0, g)
    assert torch.allclose(sol, torch.where(x >= 0.5, 1 - x, x))
    mean, std = (0.3,), (0.4,)
    assert torch.allclose(unnormalize(normalize(x, mean, std), mean, std), x, atol=1e-6)


def test_weighted_knn_votes_by_similarity():
    memory = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    queries = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert weighted_knn(memory, labels, queries, 2, k=3).tolist() == [0, 1]
    # k=3 and a high temperature: the two class-0 neighbours outvote the nearest class-1 sample
    assert weighted_knn(memory, labels, queries, 2, k=3, temperature=100.0).tolist() == [0, 0]


def run_tiny(runner, out, steps: int, batch: int, *settings: str) -> None:
    """A real `papercli reproduce dino` run on the digits with tiny settings."""
    args = ["reproduce", "dino", "--steps", str(steps), "--batch-size", str(batch)]
    args += ["--out", str(out), "--set", "dataset=digits"]
    for setting in settings:
        args += ["--set", setting]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output


def test_a_real_run_trains_the_student_and_averages_the_teacher(runner, tmp_path):
    out = tmp_path / "dino"
    run_tiny(
        runner, out, 4, 16, "eval_every=2", "patch_size=4", "local_size=4", "local_crops=2",
        "out_dim=32", "head_hidden=16", "bottleneck=8", "eval_train_samples=200",
        "eval_test_samples=100", "freeze_last_layer_steps=1", "warmup_steps=1",
    )  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    m = json.loads((out / "result.json").read_text())["metrics"]
    assert m["knn_gain"] == pytest.approx(m["knn_acc"] - m["random_knn_acc"])
    assert 0.0 < m["teacher_entropy"] < 1.0 and m["teacher_student_kl"] >= 0.0
    assert rows[0]["random_knn_acc"] == rows[1]["random_knn_acc"]  # the untrained baseline
    state = load_checkpoint(out / CHECKPOINT)
    teacher = state["recipe_state"]["teacher"]["model"]
    student = state["model"]
    assert set(teacher) == set(student)
    # the teacher is an average of the student's weights: it moved, but not all the way
    name = "backbone.blocks.0.attn.qkv.weight"
    assert not torch.equal(teacher[name], student[name])
    assert state["recipe_state"]["teacher"]["updates"] == 4
    assert state["recipe_state"]["center"].abs().sum() > 0


def test_a_resnet_backbone_trains_on_its_pooled_features(runner, tmp_path):
    """Table 2's other backbone: a (CIFAR-family) ResNet's pooled last stage feeds the head;
    its views go through BYOL's photometric augmentations as well."""
    out = tmp_path / "dino-resnet"
    run_tiny(
        runner, out, 2, 8, "model=resnet8-cifar", "width=4", "local_size=4", "local_crops=1",
        "out_dim=16", "head_hidden=8", "bottleneck=4", "eval_train_samples=100",
        "eval_test_samples=50", "warmup_steps=1", "photometric=true",
    )  # fmt: skip
    assert "knn_gain" in json.loads((out / "result.json").read_text())["metrics"]
    state = load_checkpoint(out / CHECKPOINT)
    student = state["model"]
    assert student["head.mlp.0.weight"].shape == (8, 16)  # 4 × width channels after the stages
    assert not any(name.startswith("backbone.fc.") for name in student)
    teacher = state["recipe_state"]["teacher"]["model"]
    name = "backbone.stem.0.weight"
    assert name in student and not torch.equal(teacher[name], student[name])


def test_the_teacher_gets_no_gradients_and_follows_the_student_by_its_momentum():
    torch.manual_seed(0)
    backbone = create_model("vit-mini/7", image_size=28, in_channels=1)
    backbone.head = torch.nn.Identity()
    student = DINO(backbone, DINOHead(64, 32, hidden=16, bottleneck=8))
    teacher = EMA(student, 0.996)
    views = [torch.randn(2, 1, 28, 28), torch.randn(2, 1, 28, 28), torch.randn(2, 1, 14, 14)]
    loss = DINOLoss(32)(student(views), teacher.model(views[:2]), teacher_temp=0.04)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())
    assert all(p.grad is not None for p in student.backbone.parameters())
    before = teacher.model.head.last_layer.detach().clone()
    with torch.no_grad():
        student.head.last_layer.add_(1.0)
    teacher.decay = teacher_momentum(0, 100)
    teacher.update(student)
    expected = 0.996 * before + 0.004 * student.head.last_layer.detach()
    assert torch.allclose(teacher.model.head.last_layer, expected, atol=1e-6)


def test_a_local_crop_that_does_not_fit_the_patches_is_a_usage_error(runner, tmp_path, capfd):
    result = runner.invoke(
        app, ["reproduce", "dino", "--steps", "1", "--out", str(tmp_path / "x"), "--set",
              "local_size=10"],
    )  # fmt: skip
    assert result.exit_code == 2
    err = capfd.readouterr().err  # the recipe process's own stderr
    assert "local_size 10 is not a multiple of the patch size 7" in err
    assert "Traceback" not in err


def test_two_steps_do_not_reproduce(runner, tmp_path):
    failed = two_step_control(
        runner, "dino", tmp_path / "control", "eval_train_samples=2000", "eval_test_samples=500"
    )
    assert "knn_gain" in failed
