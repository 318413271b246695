"""ResNet and ViT recipes: the data loaders, a few real training steps each, and the verdict logic
on recorded metrics."""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import serve_folder

from papercli.cli import app
from papercli.data import cifar10, fashion_mnist
from papercli.data.download import download_verified, md5sum
from papercli.data.imagefolder import ImageFolder
from papercli.errors import PapercliError
from papercli.registry import Registry
from papercli.reproduce.claims import evaluate_checks, verdict


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_and_missing_data_message(tmp_path, monkeypatch):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    write_idx(tmp_path / "x.gz", images)
    assert (fashion_mnist.read_idx(tmp_path / "x.gz") == images).all()
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01junk")
    with pytest.raises(PapercliError, match="not an IDX file"):
        fashion_mnist.read_idx(tmp_path / "bad")
    monkeypatch.setattr(fashion_mnist.sources, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    monkeypatch.delenv("PAPERCLI_FASHION_MNIST", raising=False)
    with pytest.raises(PapercliError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.locate(None)


def test_cifar10_binary_reader_from_folder_and_archive(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in cifar10.TRAIN + cifar10.TEST:
        labels = rng.integers(0, 10, 4, dtype=np.uint8)
        pixels = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        np.concatenate([labels[:, None], pixels], axis=1).tofile(folder / name)
    d = cifar10.load(tmp_path, download=False)
    assert d["train_x"].shape == (20, 3, 32, 32) and d["test_y"].shape == (4,)
    archive = tmp_path / "arch" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")
    d2 = cifar10.load(archive, download=False)
    assert (d2["train_x"] == d["train_x"]).all()
    with pytest.raises(PapercliError, match="holds no CIFAR-10"):
        cifar10.load(tmp_path / "arch" / "empty-dir-that-does-not-exist", download=False)


def test_download_is_verified_against_a_local_server(tmp_path):
    served = tmp_path / "srv"
    served.mkdir()
    (served / "file.bin").write_bytes(b"papercli" * 1000)

    with serve_folder(served) as base:
        url = base + "file.bin"
        good = md5sum(served / "file.bin")
        dest = download_verified(url, tmp_path / "out" / "file.bin", good)
        assert dest.read_bytes() == (served / "file.bin").read_bytes()
        with pytest.raises(PapercliError, match="checksum mismatch"):
            download_verified(url, tmp_path / "out2" / "file.bin", "0" * 32)
        assert (
            not (tmp_path / "out2" / "file.bin").exists()
            and not (tmp_path / "out2" / "file.bin.part").exists()
        )
        with pytest.raises(PapercliError, match="HTTP 404"):
            download_verified(url + ".missing", tmp_path / "out3" / "x", good)


def test_image_folder_loader(tmp_path):
    from PIL import Image

    for cls, color in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (50 + 10 * i, 40), color).save(tmp_path / cls / f"{i}.png")
    train = ImageFolder(tmp_path, train=True, size=32, seed=1)
    assert train.classes == ["cat", "dog"] and len(train) == 6
    x, label = train[(4, 7)]
    assert x.shape == (3, 32, 32) and label == 1
    assert (train[(4, 7)][0] == x).all()  # same (index, step) -> same crop
    val = ImageFolder(tmp_path, train=False, size=32)
    assert val[0][0].shape == (3, 32, 32)
    with pytest.raises(PapercliError):
        ImageFolder(tmp_path / "missing", train=True)


@pytest.mark.parametrize("paper", ["resnet", "vit"])
def test_a_few_real_training_steps(paper, runner, tmp_path):
    out = tmp_path / paper
    args = [
        "reproduce",
        paper,
        "--steps",
        "4",
        "--set",
        "dataset=digits",
        "--set",
        "eval_every=2",
        "--batch-size",
        "32",
        "--out",
        str(out),
    ]
    if paper == "resnet":
        args += ["--set", "width=4", "--set", "arms=plain8,resnet8"]
    else:
        args += ["--set", "warmup_steps=1", "--set", "patch_size=4"]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    record = json.loads((out / "result.json").read_text())
    assert record["steps"] == 4 and record["params"] > 0
    key = "plain8_test_acc" if paper == "resnet" else "vit_test_acc"
    assert 0.0 <= record["metrics"][key] <= 1.0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]


def test_bad_model_setting_is_a_clean_error(runner):
    result = runner.invoke(app, ["reproduce", "vit", "--set", "dataset=digits", "--dry-run"])
    assert result.exit_code == 2
    err = result.stderr
    assert "cannot build the model: image size 8 is not a multiple of the patch size 7" in err
    assert "Traceback" not in err


def test_dry_run_reports_paper_sizes(runner):
    plan = json.loads(
        runner.invoke(
            app,
            [
                "reproduce",
                "resnet",
                "--dry-run",
                "--json",
                "--scale",
                "paper",
                "--set",
                "arms=resnet110",
            ],
        ).stdout
    )
    assert 1.70e6 < plan["params"] < 1.75e6 and plan["config"]["lr_drops"] == [0.5, 0.75]
    plan = json.loads(
        runner.invoke(app, ["reproduce", "vit", "--dry-run", "--json", "--scale", "paper"]).stdout
    )
    assert plan["params"] == 86_567_656 and plan["config"]["batch_size"] == 4096


RESNET_RECORDED = {  # a real mini run's last evaluation (benchmarks/reproduce_mini.py, seed 0)
    "plain20_train_loss": 0.4534,
    "plain56_train_loss": 0.8033,
    "resnet20_train_loss": 0.3805,
    "resnet56_train_loss": 0.3874,
    "plain20_test_acc": 0.823,
    "plain56_test_acc": 0.6525,
    "resnet20_test_acc": 0.8585,
    "resnet56_test_acc": 0.8405,
}


def _resnet_derived(m: dict) -> dict:
    from papercli.recipes.resnet import ResNetRecipe, ResNetTrainConfig

    recipe = ResNetRecipe.__new__(ResNetRecipe)
    recipe.cfg = ResNetTrainConfig()
    return recipe.final_metrics(None, m)


def test_resnet_verdict_logic_on_recorded_metrics():
    checks = Registry.load().get("resnet").reproduce.checks
    metrics = {**_resnet_derived(RESNET_RECORDED), "seconds": 250.0}
    rows = evaluate_checks(checks, metrics, "mini")
    assert {r["metric"] for r in rows} == {
        "residual_vs_plain_loss",
        "residual_vs_plain_acc",
        "plain_degradation",
        "depth_penalty_removed",
        "seconds",
    }
    assert verdict(rows) == "reproduced"
    assert metrics["depth_penalty_removed"] == pytest.approx(1 - 0.0069 / 0.3499, abs=1e-3)
    # a ResNet-56 that degraded like the plain net would fail the shortcut check
    degraded = {**RESNET_RECORDED, "resnet56_train_loss": 0.70}
    rows = evaluate_checks(checks, {**_resnet_derived(degraded), "seconds": 250.0}, "mini")
    assert [r["metric"] for r in rows if not r["passed"]] == ["depth_penalty_removed"]
    # if plain-56 trained as well as plain-20 there would be no degradation to reproduce
    no_degradation = {**RESNET_RECORDED, "plain56_train_loss": 0.38}
    rows = evaluate_checks(checks, {**_resnet_derived(no_degradation), "seconds": 250.0}, "mini")
    assert verdict(rows) == "not reproduced"
    assert [r["metric"] for r in rows if not r["passed"]] == [
        "residual_vs_plain_loss",
        "plain_degradation",
        "depth_penalty_removed",
    ]
    assert evaluate_checks(checks, {}, "paper")[0]["metric"] == "residual_vs_plain_loss"


def test_vit_verdict_logic_on_recorded_metrics():
    checks = Registry.load().get("vit").reproduce.checks
    good = {
        "vit_test_acc": 0.85,
        "resnet_test_acc": 0.89,
        "resnet_minus_vit_acc": 0.04,
        "seconds": 200.0,
    }
    assert verdict(evaluate_checks(checks, good, "mini")) == "reproduced"
    vit_wins = {**good, "resnet_minus_vit_acc": -0.01}
    assert verdict(evaluate_checks(checks, vit_wins, "mini")) == "not reproduced"
    paper_rows = evaluate_checks(checks, {"vit_test_acc": 0.78}, "paper")
    assert [r["metric"] for r in paper_rows] == ["vit_test_acc"] and verdict(
        paper_rows
    ) == "reproduced"
