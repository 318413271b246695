"""U-Net: the paper's shape contract, Eq. 2, overlap-tile inference, the ISBI loader, and a short
real training run on the nuclei image through the CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import RESULT_KEYS

from papercli.cli import app
from papercli.data import isbi2012, nuclei, sources
from papercli.errors import PapercliError
from papercli.metrics.segmentation import foreground_iou, object_f1, rand_error
from papercli.models.unet import UNet, UNetConfig, unet
from papercli.recipes.unet import border_weight_map, overlap_tile_predict


def test_paper_shape_contract_572_to_388():
    model = unet("unet-paper").eval()
    assert sum(p.numel() for p in model.parameters()) == 31_030_658
    assert model.output_size(572) == 388
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    convs = [
        m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    assert all(c.padding == (0, 0) for c in convs)
    assert max(c.out_channels for c in convs) == 1024
    with pytest.raises(ValueError):
        model.output_size(573)


def test_weight_map_is_high_between_touching_cells():
    inst = np.zeros((40, 60), dtype=np.int32)
    inst[10:30, 5:28] = 1
    inst[10:30, 31:55] = 2  # a 3-pixel gap between two cells
    w = border_weight_map(inst, w0=10, sigma=5)
    gap, far_bg, inside = w[20, 29], w[2, 2], w[20, 15]
    assert gap > 8 > far_bg and gap > inside
    assert w[20, 29] == pytest.approx(w[20, 29], rel=1e-6) and np.isfinite(w).all()


def test_overlap_tile_handles_any_size_and_is_consistent():
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=4, depth=2)).eval()  # unpadded, like the paper
    image = torch.rand(1, 70, 93)
    a = overlap_tile_predict(model, image, out_tile=16)
    b = overlap_tile_predict(model, image, out_tile=32)
    assert a.shape == (2, 70, 93)
    assert torch.allclose(a, b, atol=1e-5)  # tiling does not change the answer
    assert torch.allclose(a.sum(0), torch.ones(70, 93), atol=1e-5)


def test_metrics():
    truth = np.zeros((10, 10), bool)
    truth[2:6, 2:6] = True
    assert foreground_iou(truth, truth) == 1.0
    inst = truth.astype(np.int32)
    assert object_f1(truth, inst) == 1.0
    assert rand_error(truth, inst) == pytest.approx(0.0)
    assert foreground_iou(np.zeros_like(truth), truth) == 0.0


def test_isbi_loader_reads_tif_stacks(tmp_path):
    import tifffile

    vol = (np.random.default_rng(0).random((30, 32, 32)) * 255).astype(np.uint8)
    lab = np.full((30, 32, 32), 255, np.uint8)
    lab[:, 15:17, :] = 0  # a membrane splits each slice into two cells
    tifffile.imwrite(tmp_path / "train-volume.tif", vol)
    tifffile.imwrite(tmp_path / "train-labels.tif", lab)
    images, instances = isbi2012.load(tmp_path)
    assert images.shape == (30, 32, 32) and images.dtype == np.float32 and images.max() <= 1
    assert instances.max() == 2 and (instances[:, 15:17] == 0).all()
    with pytest.raises(PapercliError, match="pass --data PATH"):
        isbi2012.load(None)
    with pytest.raises(PapercliError, match=r"lacks train-labels\.tif"):
        (tmp_path / "train-labels.tif").unlink()
        isbi2012.load(tmp_path)


def test_shipped_nuclei_are_the_stardist_arrays_bit_for_bit():
    # The SHA-256 of img2d.tif / mask2d.tif pixel data in the stardist 0.9.2 wheel (NOTICE.md).
    with np.load(sources.NUCLEI_FILE, allow_pickle=False) as arrays:
        assert sorted(arrays.files) == ["image", "labels"]
        image, labels = arrays["image"], arrays["labels"]
    assert image.shape == labels.shape == (512, 512)
    assert image.dtype == labels.dtype == np.uint16
    assert hashlib.sha256(image.tobytes()).hexdigest() == (
        "8952cab7611450bd761f81e14b95bdd197d5b17487ed98f6814fd35720e65963"
    )
    assert hashlib.sha256(labels.tobytes()).hexdigest() == (
        "13ef0db2a960a93cf97cc419d9e02aa90038feb4b143fe6e0623bcfcc10ad5f4"
    )
    assert len(np.unique(labels)) == 126  # background + 125 nuclei
    assert (sources.NUCLEI_FILE.parent / "NOTICE.md").is_file()


def test_nuclei_loader_normalises_the_shipped_image():
    image, labels = nuclei.load()
    assert image.dtype == np.float32 and labels.dtype == np.int32
    assert image.min() == 0.0 and image.max() == 1.0 and 0.0 < image.mean() < 0.5
    assert labels.max() == 183 and (labels > 0).mean() > 0.1


def test_short_real_unet_run_through_the_cli(runner, papercli_home):
    result = runner.invoke(app, ["reproduce", "unet", "--steps", "30", "--set", "eval_every=15"])
    assert result.exit_code in (0, 1), result.output  # 30 steps need not reach the claim
    (out,) = (papercli_home / "runs").iterdir()
    assert out.parent == papercli_home / "runs" and out.name.startswith("unet-")
    record = json.loads((out / "result.json").read_text())
    assert set(record) >= RESULT_KEYS
    assert record["paper"] == "unet" and record["params"] == 481_762 and record["steps"] == 30
    assert {"foreground_iou", "pixel_error", "object_f1"} <= set(record["metrics"])
    assert {c["metric"] for c in record["checks"]} == {"foreground_iou", "seconds"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [15, 30]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]  # it learns
    assert (out / "samples.png").stat().st_size > 5000 and (out / "curves.png").exists()
    assert "the paper's claim".upper() in result.stdout or "THE PAPER'S CLAIM" in result.stdout
    listed = json.loads(runner.invoke(app, ["runs", "unet", "--json"]).stdout)
    assert [r["name"] for r in listed] == [out.name]
    assert listed[0]["verdict"] == record["verdict"] and listed[0]["steps"] == 30
