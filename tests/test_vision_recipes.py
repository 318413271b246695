"""ResNet on ImageNet (arms of the data set's family), DeiT and MLP-Mixer: parameter counts of the
paper-scale models, a few real training steps through the CLI, the verdict logic on recorded
metrics, and a 2-step control that must not reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import two_step_control

from papercli.cli import app
from papercli.models import create_model
from papercli.models.mixer import config as mixer_config
from papercli.registry import Registry
from papercli.reproduce.claims import evaluate_checks, verdict


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def plan(runner, *args: str) -> dict:
    result = runner.invoke(app, ["reproduce", *args, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- ResNet on ImageNet
def test_imagenet_arms_are_table_2s_networks(runner):
    arms = plan(runner, "resnet", "--scale", "paper", "--set", "dataset=imagenet")["arm_params"]
    # Table 2: plain-18/34 vs ResNet-18/34; the plain twins lack the three projection shortcuts
    assert {name: c["total"] for name, c in arms.items()} == {
        "plain18": 11_689_512 - 173_824,
        "plain34": 21_797_672 - 173_824,
        "resnet18": 11_689_512,
        "resnet34": 21_797_672,
    }
    single = plan(
        runner, "resnet", "--scale", "paper", "--set", "dataset=imagenet", "--set", "arms=resnet50"
    )
    assert single["params"] == 25_557_032 and list(single["arm_params"]) == ["resnet50"]
    deep = plan(
        runner,
        "resnet",
        "--scale",
        "paper",
        "--set",
        "dataset=imagenet",
        "--set",
        "arms=resnet101,resnet152",
    )
    assert deep["params"] == 44_549_160 + 60_192_808  # the total is the sum of the arms


@pytest.mark.parametrize(
    ("dataset", "arm", "needle"),
    [
        ("imagenet", "resnet56", "arm 'resnet56' does not fit imagenet"),
        ("fashion-mnist", "resnet50", "arm 'resnet50' does not fit fashion-mnist"),
        (
            "cifar10",
            "resnet18",
            "the 18/34/50/101/152-layer ImageNet networks need dataset=imagenet",
        ),
        ("imagenet", "vgg16", "arm 'vgg16' is not resnet<depth> or plain<depth>"),
    ],
)
def test_an_arm_of_the_other_family_is_refused(runner, dataset, arm, needle):
    result = runner.invoke(
        app,
        ["reproduce", "resnet", "--dry-run", "--set", f"dataset={dataset}", "--set", f"arms={arm}"],
    )
    assert result.exit_code == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_imagenet_folder_trains_plain_and_residual_and_scores_a_training_subset(runner, tmp_path):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 4), ("val", 2)):
        for cls, channel in (("a", 0), ("b", 2)):
            folder = tmp_path / "data" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 80, (40, 48, 3), generator=g, dtype=torch.uint8)
                pixels[..., channel] += 150
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "reproduce", "resnet", "--steps", "2", "--batch-size", "4", "--out", str(out),
            "--data", str(tmp_path / "data"),
            "--set", "dataset=imagenet", "--set", "arms=plain18,resnet18",
            "--set", "image_size=32", "--set", "workers=0", "--set", "eval_every=2",
        ],
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    record = json.loads((out / "result.json").read_text())
    assert record["arm_params"]["resnet18"]["total"] == 11_689_512 - 513 * 998  # a 2-class head
    metrics = record["metrics"]
    for arm in ("plain18", "resnet18"):
        assert 0.0 <= metrics[f"{arm}_test_acc"] <= 1.0 and metrics[f"{arm}_train_loss"] > 0


# --------------------------------------------------------------------------- models
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # DeiT Table 1: Ti 5M, S 22M, B 86M — ViT's architecture at widths 192/384/768 …
        ("deit-ti/16", 5_717_416),
        ("deit-s/16", 22_050_664),
        ("deit-b/16", 86_567_656),
        # … and with the distillation token: its embedding, position and head (timm: 5.91M …)
        ("deit-ti-distilled/16", 5_717_416 + 192 * 2 + 192 * 1000 + 1000),
        ("deit-s-distilled/16", 22_436_432),
        ("deit-b-distilled/16", 87_338_192),
        # Mixer Table 1: B/16 59M, L/16 207M (with a 1000-class head: 59.88M, 208.2M as in timm)
        ("mixer-b/16", 59_880_472),
        ("mixer-l/16", 208_196_168),
        ("mixer-s/16", 18_528_264),
    ],
)
def test_paper_scale_counts_on_the_meta_device(name, expected):
    with torch.device("meta"):
        assert n_params(create_model(name)) == expected


def test_distilled_vit_has_two_heads_and_a_joint_classifier():
    model = create_model("deit-mini-distilled/7", image_size=28, in_channels=1, num_classes=10)
    x = torch.randn(3, 1, 28, 28)
    cls, dist = model(x)  # training mode: Eq. 2's two outputs
    assert cls.shape == dist.shape == (3, 10)
    assert model.pos_embed.shape[1] == 16 + 2  # patches, class and distillation tokens
    with torch.no_grad():
        torch.nn.init.normal_(model.head.weight)
        torch.nn.init.normal_(model.head_dist.weight)
        model.eval()
        joint = model(x)
        model.train()
        cls, dist = model(x)
    expected = (cls.softmax(-1) + dist.softmax(-1)) / 2  # the sum of the heads' softmax (Sec. 4)
    assert torch.allclose(joint.exp(), expected, atol=1e-6)


def test_distilled_vit_can_start_from_the_plain_vits_weights():
    """DeiT's two students differ only in what distillation adds: token, its position, head."""
    from papercli.models.deit import deit

    kw = dict(image_size=28, in_channels=1, num_classes=10)
    plain, distilled = create_model("vit-mini/7", **kw), deit("vit-mini/7", **kw)
    distilled.copy_from(plain)
    own, theirs = distilled.state_dict(), plain.state_dict()
    assert set(own) - set(theirs) == {"dist_token", "head_dist.weight", "head_dist.bias"}
    for name, value in theirs.items():
        if name == "pos_embed":
            assert torch.equal(own[name][:, :1], value[:, :1])  # the class token's position
            assert torch.equal(own[name][:, 2:], value[:, 1:])  # the patches'
        else:
            assert torch.equal(own[name], value), name


def test_mixer_mixes_tokens_and_channels_without_attention():
    model = create_model("mixer-mini/7", image_size=28, in_channels=1, num_classes=10)
    assert not any("attn" in name for name, _ in model.named_modules())
    block = model.blocks[0]
    assert block.token_mlp[0].in_features == 16 and block.channel_mlp[0].in_features == 64
    with torch.no_grad():
        torch.nn.init.normal_(model.head.weight)  # the head starts at zero (outputs all 0)
        x = torch.randn(2, 1, 28, 28)
        out = model(x)
        # token mixing makes the output depend on where a patch is: swap two patches
        swapped = x.clone()
        swapped[..., :7, :7], swapped[..., :7, 7:14] = x[..., :7, 7:14], x[..., :7, :7]
        assert out.shape == (2, 10) and not torch.allclose(model(swapped), out)
    assert mixer_config("Mixer-L/14").dim == 1024 and mixer_config("mixer_b_32").patch_size == 32
    with pytest.raises(ValueError, match="unknown Mixer 'mixer-x/16'"):
        mixer_config("mixer-x/16")


# --------------------------------------------------------------------------- DeiT's Mixup/CutMix
def test_cutmix_pastes_a_box_and_weights_the_labels_by_its_area():
    from papercli.data.transforms import mixup_cutmix

    x = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 1, 12, 12).contiguous()  # image i is all i
    y = torch.arange(8)
    g = torch.Generator().manual_seed(0)
    mixed, target = mixup_cutmix(x, y, 10, g, mixup_alpha=0.0, cutmix_alpha=1.0)
    assert torch.allclose(target.sum(1), torch.ones(8))
    for i in range(8):
        own = (mixed[i] == i).float().mean()  # every pixel is the image's or its partner's
        assert ((mixed[i] == i) | (mixed[i] == 7 - i)).all()
        assert target[i, i] == pytest.approx(own.item()) and target[i, 7 - i] == pytest.approx(
            1 - own.item()
        )
    again, _ = mixup_cutmix(x, y, 10, torch.Generator().manual_seed(0), 0.0, 1.0)
    assert torch.equal(mixed, again)  # the same step replays the same boxes


def test_mixup_blends_images_and_labels_alike_and_prob_zero_leaves_the_batch():
    from papercli.data.transforms import mixup_cutmix

    x, y = torch.randn(6, 1, 5, 5), torch.tensor([0, 1, 2, 3, 4, 5])
    mixed, target = mixup_cutmix(x, y, 6, torch.Generator().manual_seed(1), 0.8, 0.0)
    lam = target[torch.arange(6), y].view(6, 1, 1, 1)
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert ((lam > 0) & (lam < 1)).all()
    same, onehot = mixup_cutmix(x, y, 6, torch.Generator().manual_seed(1), prob=0.0)
    assert torch.equal(same, x) and torch.equal(onehot, torch.eye(6))


def _deit_on_eight_images():
    """A DeiT recipe whose every batch is the same 8 random images (no data set, no model)."""
    from types import SimpleNamespace

    from papercli.recipes.deit import DeiTRecipe
    from papercli.seeding import step_generator

    recipe = DeiTRecipe.__new__(DeiTRecipe)
    recipe.ctx = SimpleNamespace(
        device=torch.device("cpu"),
        generator=lambda step, stream=0: step_generator(0, step, stream),
        shard=lambda micro=0: micro,
        batch_indices=lambda n, step, micro=0: torch.arange(8),
    )
    recipe.train_x = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    recipe.train_y = torch.arange(8)
    recipe.mean, recipe.std = (0.5,), (0.5,)
    return recipe


def test_deit_mixes_the_students_batches_and_the_teachers_only_if_asked():
    """Phase 1 (the teacher's 2 steps) sees plain labels unless `teacher_mix`; phase 2 (the
    students') always sees mixed images with probability targets, the same ones on a replay."""
    from papercli.recipes.deit import DeiTRecipe

    recipe = _deit_on_eight_images()
    mini = vars(DeiTRecipe.scales["mini"])
    for teacher_mix in (False, True):
        recipe.cfg = DeiTRecipe.config_class(
            **{
                **mini,
                "steps": 4,
                "mixup_alpha": 0.8,
                "cutmix_alpha": 1.0,
                "teacher_mix": teacher_mix,
            }
        )
        assert recipe.mixing and recipe.teacher_steps == 2
        _, y_teacher = recipe.train_batch(1)
        assert (y_teacher.dim() == 2) == teacher_mix  # probabilities only when mixed
        x, y = recipe.train_batch(2)
        assert y.shape == (8, 10) and torch.allclose(y.sum(1), torch.ones(8))
        assert torch.equal(recipe.train_batch(2)[0], x)
    recipe.cfg = DeiTRecipe.scales["mini"]
    assert not recipe.mixing and recipe.train_batch(3)[1].dim() == 1  # the mini's plain batches


def test_deit_can_shift_and_flip_the_teachers_images_alone():
    from papercli.recipes.deit import DeiTRecipe

    recipe = _deit_on_eight_images()
    mini = vars(DeiTRecipe.scales["mini"])
    recipe.cfg = DeiTRecipe.config_class(
        **{**mini, "steps": 4, "augment": False, "teacher_augment": True}
    )
    plain = recipe._prepare(recipe.train_x)
    assert not torch.equal(recipe.train_batch(1)[0], plain)  # phase 1: the teacher's
    assert torch.equal(recipe.train_batch(2)[0], plain)  # phase 2: the students' plain images


# --------------------------------------------------------------------------- DeiT and Mixer runs
@pytest.mark.parametrize("paper", ["deit", "mlp-mixer"])
def test_a_few_real_training_steps(paper, runner, tmp_path):
    out = tmp_path / paper
    args = ["reproduce", paper, "--steps", "4", "--batch-size", "32", "--out", str(out)]
    for setting in ("dataset=digits", "eval_every=2", "warmup_steps=1", "patch_size=4"):
        args += ["--set", setting]
    if paper == "deit":
        args += ["--set", "baseline.width=4", "--set", "teacher_fraction=0.5"]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    record = json.loads((out / "result.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    if paper == "deit":
        # phase 1 trains the teacher alone, phase 2 the two students alone
        assert set(rows[0]) >= {"train_teacher"} and "train_deit" not in rows[0]
        assert set(rows[1]) >= {"train_deit", "train_vit"} and "train_teacher" not in rows[1]
        assert rows[0]["teacher_test_acc"] == rows[1]["teacher_test_acc"]  # frozen in phase 2
        # each head of the distilled ViT alone, and how often the teacher's label is not y
        assert {"deit_cls_acc", "deit_dist_acc"} <= set(rows[1])
        assert "teacher_label_flips" not in rows[0] and 0 <= rows[1]["teacher_label_flips"] <= 1
        key = "deit_minus_vit_acc"
    else:
        key = "mixer_minus_vit_acc"
    m = record["metrics"]
    assert m[key] == pytest.approx(m[f"{key.split('_')[0]}_test_acc"] - m["vit_test_acc"])


def test_train_samples_trains_on_a_fixed_subset(runner, tmp_path):
    """An epoch of `train_samples=100` in batches of 32 is 3 steps (the whole digits set: 46)."""
    out = tmp_path / "subset"
    args = ["reproduce", "vit", "--epochs", "1", "--batch-size", "32", "--out", str(out)]
    for setting in ("dataset=digits", "patch_size=4", "baseline.width=4", "train_samples=100"):
        args += ["--set", setting]
    result = runner.invoke(app, [*args, "--set", "eval_every=1"])
    assert result.exit_code in (0, 1), result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


# real mini runs' last evaluations (seed 0)
DEIT_RECORDED = {"teacher_test_acc": 0.8694, "deit_test_acc": 0.8154, "vit_test_acc": 0.8062}
MIXER_RECORDED = {"mixer_test_acc": 0.8692, "vit_test_acc": 0.8478}


def _derived(recipe_cls, metrics: dict) -> dict:
    recipe = recipe_cls.__new__(recipe_cls)
    recipe.cfg = recipe_cls.scales["mini"]
    model = {name.removesuffix("_test_acc"): None for name in metrics}
    return {**recipe.final_metrics(model, metrics), "seconds": 250.0}


def test_verdict_logic_on_recorded_metrics():
    from papercli.recipes.deit import DeiTRecipe
    from papercli.recipes.mlp_mixer import MixerRecipe

    deit_checks = Registry.load().get("deit").reproduce.checks
    assert (
        verdict(evaluate_checks(deit_checks, _derived(DeiTRecipe, DEIT_RECORDED))) == "reproduced"
    )
    no_gain = {**DEIT_RECORDED, "deit_test_acc": 0.8058}  # the teacher did not help
    rows = evaluate_checks(deit_checks, _derived(DeiTRecipe, no_gain))
    assert [r["metric"] for r in rows if not r["passed"]] == ["deit_minus_vit_acc"]

    mixer_checks = Registry.load().get("mlp-mixer").reproduce.checks
    rows = evaluate_checks(mixer_checks, _derived(MixerRecipe, MIXER_RECORDED))
    assert verdict(rows) == "reproduced"
    far_behind = {"mixer_test_acc": 0.83, "vit_test_acc": 0.8738}  # 4.4 points behind
    rows = evaluate_checks(mixer_checks, _derived(MixerRecipe, far_behind))
    assert [r["metric"] for r in rows if not r["passed"]] == ["mixer_minus_vit_acc"]
    # both arms untrained: within the margin of each other, but under the absolute floor
    rows = evaluate_checks(
        mixer_checks, _derived(MixerRecipe, {"mixer_test_acc": 0.1, "vit_test_acc": 0.1})
    )
    assert [r["metric"] for r in rows if not r["passed"]] == ["mixer_test_acc"]


@pytest.mark.parametrize("paper", ["deit", "mlp-mixer"])
def test_two_steps_do_not_reproduce(paper, runner, tmp_path: Path):
    failed = two_step_control(runner, paper, tmp_path / "control", "eval_test_samples=1000")
    assert f"{'deit' if paper == 'deit' else 'mixer'}_test_acc" in failed  # the absolute floor
