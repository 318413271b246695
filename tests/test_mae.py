"""MAE: per-sample random masking reversible by its restore index, an encoder that sees only the
visible patches, a loss that ignores them, a real two-phase run through the CLI with its
reconstruction figure, paper-scale sizes, and a 2-step control."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import two_step_control

from papercli.cli import app
from papercli.methods.mae import MAE, masked_mse, patchify, random_masking, unpatchify
from papercli.models import create_model


def tiny_mae(**kw) -> MAE:
    torch.manual_seed(0)
    encoder = create_model("vit-mini/7", image_size=28, in_channels=1, num_classes=10)
    return MAE(encoder, decoder_dim=32, decoder_depth=1, decoder_heads=4, **kw)


def test_masking_keeps_a_quarter_of_each_image_and_is_undone_by_the_restore_index():
    m = random_masking(64, 16, 0.75, torch.Generator().manual_seed(0))
    assert m.keep.shape == (64, 4)
    assert torch.all(m.mask.sum(1) == 12)  # exactly 75% masked in every image
    # the kept indices are exactly the unmasked patches, and they differ between images
    for b in range(64):
        assert set(m.keep[b].tolist()) == set((m.mask[b] == 0).nonzero().flatten().tolist())
    assert len({tuple(sorted(k.tolist())) for k in m.keep}) > 1
    # the shuffle is the restore index's inverse: its first 4 are the kept patches, and
    # gathering the shuffled tokens (visible first, then masked) by `restore` gives the image order
    shuffle = m.restore.argsort(1)
    assert torch.equal(shuffle[:, :4], m.keep)
    tokens = torch.randn(64, 16)
    assert torch.equal(tokens.gather(1, shuffle).gather(1, m.restore), tokens)


def test_patchify_round_trips():
    x = torch.randn(2, 3, 28, 28)
    patches = patchify(x, 7)
    assert patches.shape == (2, 16, 147)
    assert torch.equal(patches[0, 1].view(7, 7, 3).permute(2, 0, 1), x[0, :, :7, 7:14])
    assert torch.equal(unpatchify(patches, 7, 3), x)


def test_the_encoder_sees_only_the_visible_patches():
    model = tiny_mae()
    x = torch.randn(3, 1, 28, 28)
    m = random_masking(3, 16, 0.75, torch.Generator().manual_seed(1))
    latent = model.encode_visible(x, m)
    assert latent.shape == (3, 1 + 4, 64)  # the class token and the 4 visible patches
    # changing a masked patch's pixels does not change what the encoder computes
    b, patch = 0, int((m.mask[0] == 1).nonzero()[0])
    row, col = divmod(patch, 4)
    changed = x.clone()
    changed[b, :, row * 7 : row * 7 + 7, col * 7 : col * 7 + 7] += 5.0
    assert torch.allclose(model.encode_visible(changed, m), latent, atol=1e-6)


def test_the_loss_ignores_the_visible_patches():
    model = tiny_mae(norm_pix_loss=False)
    x = torch.randn(2, 1, 28, 28)
    m = random_masking(2, 16, 0.75, torch.Generator().manual_seed(2))
    loss, pred = model(x, m)
    target = patchify(x, 7)
    per_patch = (pred - target).pow(2).mean(-1)
    assert torch.allclose(loss, per_patch[m.mask == 1].mean())
    # a prediction that is perfect on the masked patches scores 0, whatever it says elsewhere
    perfect = torch.where(m.mask[..., None] == 1, target, torch.randn_like(target))
    assert masked_mse(perfect, target, m.mask) == 0
    loss.backward()
    assert model.decoder_pred.weight.grad.abs().sum() > 0


def test_normalised_pixel_targets():
    model = tiny_mae(norm_pix_loss=True)
    x = torch.randn(2, 1, 28, 28) * 3 + 1
    m = random_masking(2, 16, 0.75, torch.Generator().manual_seed(3))
    loss, pred = model(x, m)
    t = patchify(x, 7)
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(loss, masked_mse(pred, t, m.mask))


@pytest.mark.parametrize(
    ("name", "expected"), [("vit-l/16", 304_326_632), ("vit-h/14", 632_045_800)]
)
def test_paper_scale_encoders(name, expected):
    # Sec. 4: ViT-L 304M, ViT-H 632M encoders (with a 1000-class head)
    with torch.device("meta"):
        n = sum(p.numel() for p in create_model(name).parameters())
    assert n == expected


def test_a_real_run_pretrains_then_finetunes_both_arms_and_draws(runner, tmp_path):
    out = tmp_path / "mae"
    args = ["reproduce", "mae", "--steps", "6", "--batch-size", "32", "--out", str(out)]
    for setting in (
        "dataset=digits", "patch_size=4", "eval_every=3", "pretrain_fraction=0.5",
        "decoder_dim=16", "decoder_depth=1", "finetune_batch_size=20", "labelled_per_class=3",
        "warmup_steps=1", "finetune_warmup_steps=1", "eval_test_samples=100",
    ):  # fmt: skip
        args += ["--set", setting]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    # phase 1 pre-trains alone (scratch untouched), phase 2 trains both classifiers alone
    assert "train_reconstruction" in rows[0] and "train_scratch" not in rows[0]
    assert {"train_mae", "train_scratch"} <= set(rows[1]) and "train_reconstruction" not in rows[1]
    m = json.loads((out / "result.json").read_text())["metrics"]
    assert m["mae_minus_scratch_acc"] == pytest.approx(m["mae_test_acc"] - m["scratch_test_acc"])
    assert (out / "reconstructions.png").stat().st_size > 1000


def test_two_steps_do_not_reproduce(runner, tmp_path):
    failed = two_step_control(runner, "mae", tmp_path / "control", "eval_test_samples=500")
    assert "mae_test_acc" in failed
