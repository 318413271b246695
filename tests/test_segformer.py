"""SegFormer: the paper-scale sizes against Table 2, the encoder's parts (sequence reduction,
Mix-FFN, no positional encoding), a few real training steps through the CLI, and a 2-step
control that must not reproduce."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import two_step_control

from papercli.cli import app
from papercli.models import create_model
from papercli.models.segformer import EfficientSelfAttention, MixTransformer


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("size", "millions"),
    # Table 2 (ADE20K, 150 classes): B0 3.8M, B1 13.7M, B2 27.5M, B3 47.3M, B4 64.1M, B5 84.7M
    [("b0", 3.8), ("b1", 13.7), ("b2", 27.5), ("b3", 47.3), ("b4", 64.1), ("b5", 84.7)],
)
def test_paper_scale_counts_on_the_meta_device(size, millions):
    with torch.device("meta"):
        model = create_model(f"segformer-{size}", num_classes=150)
    assert round(n_params(model) / 1e6, 1) == millions


def test_the_encoder_is_a_pyramid_without_positional_encoding():
    model = create_model("mit-mini", in_channels=1)
    assert isinstance(model, MixTransformer)
    assert not [n for n, _ in model.named_parameters() if "pos" in n]
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    for side in (64, 96):  # any resolution: nothing to interpolate
        maps = model.forward_features(torch.randn(1, 1, side, side))
        assert [m.shape[-1] for m in maps] == [side // 4, side // 8, side // 16, side // 32]
    ffn = model.stages[0][0].ffn.dwconv
    assert ffn.kernel_size == (3, 3) and ffn.groups == ffn.in_channels  # depth-wise 3×3 (Eq. 3)


def test_sequence_reduction_is_attention_over_the_shrunk_map():
    """Eq. 2: with ratio sr, keys and values come from the (h/sr × w/sr) map made by the
    strided reduction; the result is ordinary multi-head attention against those tokens."""
    torch.manual_seed(0)
    attn = EfficientSelfAttention(dim=8, heads=2, sr=2)
    x = torch.randn(1, 16, 8)  # a 4×4 map
    reduced = attn.norm(attn.sr(x.transpose(1, 2).reshape(1, 8, 4, 4)).flatten(2).transpose(1, 2))
    assert reduced.shape == (1, 4, 8)
    q = attn.q(x).view(1, 16, 2, 4).transpose(1, 2)
    k, v = attn.kv(reduced).view(1, 4, 2, 2, 4).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-1, -2) / 2.0).softmax(-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(1, 16, 8))
    with torch.no_grad():
        assert torch.allclose(attn(x, 4, 4), expected, atol=1e-5)


def test_both_arms_predict_every_pixel():
    x = torch.randn(2, 1, 64, 64)
    for name in ("segformer-mini", "setr-naive-mini"):
        model = create_model(name, num_classes=11, in_channels=1)
        assert model(x).shape == (2, 11, 64, 64)


FAST = (
    "items=digits",
    "train_images=64",
    "test_images=16",
    "batch_size=8",
    "test_side=32",
    "warmup_steps=1",
)


def test_a_few_real_training_steps(runner, tmp_path):
    out = tmp_path / "segformer"
    args = ["reproduce", "segformer", "--steps", "4", "--out", str(out)]
    for setting in (*FAST, "eval_every=2"):
        args += ["--set", setting]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    m = json.loads((out / "result.json").read_text())["metrics"]
    assert 0 <= m["segformer_miou"] <= 1 and 0 <= m["setr_miou_32"] <= 1
    assert m["segformer_minus_setr_miou"] == pytest.approx(m["segformer_miou"] - m["setr_miou"])
    assert (out / "segmentation.png").stat().st_size > 0


def test_two_steps_do_not_reproduce(runner, tmp_path):
    failed = two_step_control(runner, "segformer", tmp_path / "control", *FAST)
    assert "segformer_miou" in failed  # the absolute floor
