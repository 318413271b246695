"""The recipe API and the shared layers below the recipes: nested config overrides, gradient
accumulation, recipe state (EMA) through resume, a recipe that owns its step (a GAN with two
optimizers), one recipe serving two papers, parameter counts, and the model/data registries."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_script, wait_for
from test_reproduce_cli import evals_done, papercli, result, tiny_papers  # noqa: F401

from papercli.data import registry as datasets
from papercli.errors import UsageError
from papercli.models import create_model, list_models
from papercli.recipes.vit import MINI as VIT_MINI
from papercli.reproduce.checkpoint import load as load_checkpoint
from papercli.reproduce.config import apply_overrides, bounded, validate
from papercli.reproduce.optim import weight_decay_groups

TINY, GAN = REPO / "tests" / "tiny_recipe.py", REPO / "tests" / "gan_recipe.py"


def rank0(out: Path) -> dict:
    return json.loads((out / "rank0.json").read_text())


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Arm:
    lr: float = bounded(0.1, gt=0)
    width: int = 16


@dataclass
class Nested:
    arms: dict[str, Arm] = field(default_factory=lambda: {"resnet": Arm(), "vit": Arm(lr=1e-3)})
    names: tuple[str, ...] = ("a", "b")
    limit: int | None = None
    share: float | None = 0.5
    levels: tuple[tuple[int, ...], ...] = ((1, 2),)
    layers: tuple = (8, "M")  # no item type: not settable


def test_nested_and_typed_overrides():
    cfg = apply_overrides(Nested(), ["arms.resnet.lr=0.05", "arms.vit.width=8", "limit=3"])
    assert cfg.arms["resnet"] == Arm(lr=0.05) and cfg.arms["vit"] == Arm(lr=1e-3, width=8)
    assert cfg.limit == 3 and isinstance(cfg.limit, int)  # not the string '3'
    assert apply_overrides(cfg, ["limit=none", "share=None"]).limit is None
    assert apply_overrides(cfg, ["names=x, y,z"]).names == ("x", "y", "z")
    assert apply_overrides(cfg, ["levels=10,14; 20"]).levels == ((10, 14), (20,))
    vit = apply_overrides(VIT_MINI, ["baseline.lr=0.05", "baseline.model=resnet32"])
    assert vit.baseline.lr == 0.05 and vit.baseline.model == "resnet32" and vit.lr == VIT_MINI.lr
    for bad, needle in (
        (
            ["arms.resnet.depth=3"],
            "--set arms.resnet.depth: unknown setting (known: arms.resnet.lr",
        ),
        (["arms.mlp.lr=1"], "no 'mlp' in arms (has: resnet, vit)"),
        (["limit=three"], "expected an integer, got 'three'"),
        (["arms=1"], "a group of settings"),
        (["names.x=1"], "'names' has no sub-settings"),
        (["levels=1;x"], "expected an integer, got 'x'"),
        (["layers=8,M"], "cannot be set from the command line"),
    ):
        with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            apply_overrides(Nested(), bad)
    with pytest.raises(UsageError, match=r"arms.resnet.lr must be > 0, got -1.0"):
        validate(apply_overrides(Nested(), ["arms.resnet.lr=-1"]))


# ----------------------------------------------------------------------------- accumulation
def test_accumulation_equals_one_big_batch(tmp_path):
    run_script(TINY, tmp_path / "big", "--batch-size", "64")
    run_script(TINY, tmp_path / "acc", "--batch-size", "64", "--set", "micro_batch_size=16")
    big, acc = rank0(tmp_path / "big"), rank0(tmp_path / "acc")
    assert sorted(big["seen"]) == sorted(acc["seen"])  # the same samples, in 4 micro-batches
    assert torch.allclose(torch.tensor(big["weights"]), torch.tensor(acc["weights"]), atol=1e-5)
    assert json.loads((tmp_path / "acc" / "result.json").read_text())["accum_steps"] == 4
    bad = subprocess.run(
        [sys.executable, str(TINY), "--out", str(tmp_path / "x"), "--set", "micro_batch_size=24"],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "cannot be split" in bad.stderr


# ----------------------------------------------------------------------------- recipe state
def test_ema_state_survives_resume_exactly(tmp_path):
    whole = tmp_path / "whole"
    run_script(TINY, whole, "--set", "ema_decay=0.9")
    parted = tmp_path / "parted"
    proc = subprocess.Popen(
        [sys.executable, str(TINY), "--out", str(parted), "--set", "ema_decay=0.9", "--set", "sleep=0.05"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
    )  # fmt: skip
    wait_for(evals_done(parted))
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    state = load_checkpoint(parted / "checkpoint.safetensors")
    assert 10 <= state["step"] < 40 and state["recipe_state"]["ema"]["updates"] == state["step"]
    run_script(TINY, parted, "--resume")
    assert rank0(parted)["ema"] == rank0(whole)["ema"]  # bit for bit
    assert rank0(parted)["ema"] != rank0(parted)["weights"]
    assert result(parted)["metrics"]["ema_accuracy"] == result(whole)["metrics"]["ema_accuracy"]


def test_a_recipe_that_owns_its_step_two_optimizers_in_its_order(tmp_path):
    out = tmp_path / "gan"
    run_script(GAN, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"train_d_real", "train_d_fake", "train_g"} <= set(rows[-1])  # named losses logged
    state = load_checkpoint(out / "checkpoint.safetensors")
    assert set(state["optimizers"]) == {"d", "g"}
    # the generator's optimizer alone moves the generator: with its lr at 0 it stays at its
    # initial weights while the discriminator trains
    frozen_a, frozen_b = tmp_path / "fa", tmp_path / "fb"
    run_script(GAN, frozen_a, "--steps", "1", "--set", "lr_g=0")
    run_script(GAN, frozen_b, "--steps", "20", "--set", "lr_g=0")
    a = json.loads((frozen_a / "weights.json").read_text())
    b = json.loads((frozen_b / "weights.json").read_text())
    assert a["generator"] == b["generator"] and a["discriminator"] != b["discriminator"]


# ----------------------------------------------------------------------------- two papers
def test_one_recipe_serves_several_papers(tiny_papers, tmp_path, papercli_home):  # noqa: F811
    for paper in ("tiny-a", "tiny-b", "tiny-wide"):
        papercli("reproduce", paper, "--steps", "20")
    runs = {r["paper"]: r for r in json.loads(papercli("runs", "--json").stdout)}
    assert set(runs) == {"tiny-a", "tiny-b", "tiny-wide"}
    a, b, wide = (json.loads((Path(runs[p]["path"]) / "result.json").read_text()) for p in runs)
    assert a["verdict"] == "reproduced" and b["verdict"] == "not reproduced"  # each its own checks
    assert b["checks"][0]["target"] == 1.01 and a["recipe"] == b["recipe"] == "tests.tiny_recipe"
    assert wide["params"] > a["params"]  # the recipe chose its config by paper id
    only_b = json.loads(papercli("runs", "tiny-b", "--json").stdout)
    assert [r["paper"] for r in only_b] == ["tiny-b"]


def test_dry_run_reports_total_trainable_and_per_arm_parameters():
    proc = papercli("reproduce", "resnet", "--dry-run", "--json", "--scale", "paper")
    plan = json.loads(proc.stdout)
    assert set(plan["arm_params"]) == {"plain20", "plain56", "resnet20", "resnet56"}
    assert plan["arm_params"]["resnet56"]["total"] == 853_018  # Table 6: 0.85M
    assert (
        plan["params"]
        == plan["trainable_params"]
        == sum(a["total"] for a in plan["arm_params"].values())
    )


# ----------------------------------------------------------------------------- shared layers
def test_model_registry_and_features_api():
    assert {"resnet50", "plain34", "resnet56-cifar", "vit-b/16", "unet-paper"} <= set(list_models())
    assert list_models("vit-*/16") == ["vit-b/16", "vit-l/16", "vit-s/16", "vit-ti/16"]
    assert create_model("ViT-L/14").cfg.patch_size == 14  # parametric names still resolve
    with pytest.raises(ValueError, match=r"unknown model 'resnet57' \(did you mean: resnet\d+"):
        create_model("resnet57")
    r50 = create_model("resnet50")
    maps = r50.forward_features(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [i["channels"] for i in r50.feature_info]
    assert [64 // m.shape[-1] for m in maps] == [i["reduction"] for i in r50.feature_info]
    assert [i["reduction"] for i in r50.feature_info] == [4, 8, 16, 32]
    cifar = create_model("resnet20-cifar")
    assert [m.shape[-1] for m in cifar.forward_features(torch.randn(1, 3, 32, 32))] == [32, 16, 8]
    vit = create_model("vit-ti/16", image_size=64)
    (grid,) = vit.forward_features(torch.randn(2, 3, 64, 64))
    assert grid.shape == (2, 192, 4, 4) and vit.feature_info == [{"channels": 192, "reduction": 16}]


def test_data_set_registry():
    spec = datasets.get("fashion-mnist")
    assert spec.shape == (1, 28, 28) and spec.num_classes == 10 and spec.train_size == 60_000
    assert datasets.get("digits").status().present
    assert "not bundled" in datasets.get("imagenet").status().detail
    d = datasets.get("digits").load(None)
    assert d["train_x"].shape == (1500, 8, 8) and len(d["test_y"]) == 297
    with pytest.raises(UsageError, match="unknown data set 'mnist'"):
        datasets.get("mnist")


def test_weight_decay_groups_skip_biases_norms_and_named_parameters():
    vit = create_model("vit-ti/16", image_size=32, num_classes=3)
    decay, no_decay = weight_decay_groups(vit, 0.3, skip=("pos_embed", "cls_token"))
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in vit.named_parameters()}
    assert all(p.ndim > 1 for p in decay["params"])
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"pos_embed", "cls_token", "norm.weight", "head.bias"} <= skipped
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(vit.parameters()))


def test_checkpoint_round_trip_has_no_name_collisions_and_refuses_odd_keys(tmp_path):
    from papercli.reproduce.checkpoint import CheckpointError, save

    path = tmp_path / "c.safetensors"
    tied = torch.ones(3)
    state = {0: torch.zeros(2), "0": torch.ones(2), "a/b": torch.full((1,), 5.0),
             "a": {"b": torch.full((1,), 7.0)}, "tied": [tied, tied], "x": (1.5, None, True)}  # fmt: skip
    save(path, state)
    back = load_checkpoint(path)
    assert torch.equal(back[0], torch.zeros(2)) and torch.equal(back["0"], torch.ones(2))
    assert back["a/b"].item() == 5.0 and back["a"]["b"].item() == 7.0
    assert torch.equal(back["tied"][1], tied) and back["x"] == (1.5, None, True)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"cannot store a tuple key.*is intact"):
        save(path, {("a", 1): torch.zeros(1)})
    assert path.read_bytes() == before


def test_a_phase_may_batch_differently_with_the_same_disjoint_shards():
    from papercli.reproduce.recipe import Context

    shards = []
    for rank in range(2):
        ctx = Context(device=torch.device("cpu"), seed=3, rank=rank, world=2)
        ctx.split_batch(8, 2)  # 2 processes × 2 accumulation steps
        shards += [ctx.batch_indices(100, 5, micro, batch=12).tolist() for micro in range(2)]
    assert [len(s) for s in shards] == [3, 3, 3, 3]  # 12 split into the same 4 shards
    assert len({i for s in shards for i in s}) == 12  # disjoint
    with pytest.raises(UsageError, match="cannot be split into 4 shards"):
        ctx.batch_indices(100, 0, 0, batch=10)
