"""Model shapes and parameter counts against the papers' tables."""

from __future__ import annotations

import pytest
import torch

from papercli.models import create_model
from papercli.models.resnet import BasicBlock, ShortcutA
from papercli.models.vit import config as vit_config


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "expected", "tolerance"),
    [
        ("resnet20-cifar", 0.27e6, 0.01e6),
        ("resnet32-cifar", 0.46e6, 0.01e6),
        ("resnet44-cifar", 0.66e6, 0.01e6),
        ("resnet56-cifar", 0.85e6, 0.01e6),
        ("resnet110-cifar", 1.7e6, 0.05e6),  # ResNet Table 6
    ],
)
def test_cifar_resnet_counts(name, expected, tolerance):
    assert abs(n_params(create_model(name)) - expected) <= tolerance


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
    ],
)
def test_imagenet_resnet_counts(name, expected):
    with torch.device("meta"):
        assert (
            n_params(create_model(name)) == expected
        )  # 25.6M for ResNet-50, as in Table 3's FLOPs row


def test_resnet_forward_shapes_and_plain_twins():
    x = torch.randn(2, 3, 32, 32)
    assert create_model("resnet20-cifar")(x).shape == (2, 10)
    assert create_model("resnet18", num_classes=7)(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    plain, res = create_model("plain20-cifar"), create_model("resnet20-cifar")
    assert n_params(plain) == n_params(res)  # option A shortcuts are parameter-free
    assert all(b.shortcut is None for b in plain.modules() if isinstance(b, BasicBlock))
    assert any(
        isinstance(b.shortcut, ShortcutA) for b in res.modules() if isinstance(b, BasicBlock)
    )
    with pytest.raises(ValueError):
        create_model("resnet21-cifar")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vit-b/16", 86_567_656),
        ("vit-l/16", 304_326_632),
        ("vit-h/14", 632_045_800),
    ],
)
def test_vit_counts(name, expected):
    # Table 1: ViT-Base 86M, ViT-Large 307M (304M with a 1000-class linear head), ViT-Huge 632M
    with torch.device("meta"):
        assert n_params(create_model(name)) == expected


def test_vit_forward_uses_sdpa_and_interpolates_positions(monkeypatch):
    model = create_model("vit-ti/16", image_size=64, num_classes=5).eval()
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional,
        "scaled_dot_product_attention",
        lambda *a, **k: calls.append(1) or real(*a, **k),
    )
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 5)
    assert len(calls) == 12  # one fused attention call per block
    model.resize_pos_embed(96)
    assert model.pos_embed.shape == (1, 6 * 6 + 1, 192)
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 5)


def test_vit_config_names():
    assert vit_config("ViT-L/14").dim == 1024 and vit_config("vit_b_32").patch_size == 32
    with pytest.raises(ValueError):
        vit_config("vit-x/16")
