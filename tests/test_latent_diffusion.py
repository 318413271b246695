"""Latent diffusion: the KL-f4 autoencoder and LDM-4 sizes on the meta device, the equal-compute
budget of the pixel baseline, a tiny real run through the CLI, and a 2-step run that must NOT
reproduce."""

from __future__ import annotations

import json

import torch
from conftest import RESULT_KEYS, two_step_control

from papercli.cli import app
from papercli.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig

TINY = (
    "dataset=digits",
    "fd_samples=200",
    "fd_classifier_steps=20",
    "sample_steps=4",
    "strip_cols=4",
    "ch=16",
    "ae_ch=16",
    "pixel_ch_mult=1,2",
    "pixel_attn_resolutions=4",
    "ae_ch_mult=1,2",  # f = 2 on 8x8 digits: a 4x4 latent
    "ch_mult=1,2",
    "attn_resolutions=2",
)


def test_autoencoder_downsamples_by_f_and_its_kl_is_the_gaussian_one():
    torch.manual_seed(0)
    cfg = AutoencoderKLConfig(in_channels=1, z_channels=3, ch=8, ch_mult=(1, 2, 2), groups=4)
    ae = AutoencoderKL(cfg)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    mean, logvar = ae.encoder(x)
    assert cfg.factor == 4 and mean.shape == (2, 3, 7, 7)
    out = ae(x, torch.zeros_like(mean))
    assert out["recon"].shape == x.shape
    q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    kl = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    assert torch.allclose(out["kl"], kl, rtol=1e-4)


def test_paper_sizes_on_the_meta_device(runner):
    result = runner.invoke(
        app, ["reproduce", "latent-diffusion", "--dry-run", "--json", "--scale", "paper"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    arms = {arm: c["total"] for arm, c in plan["arm_params"].items()}
    # LDM-4 U-Net of the paper's unconditional table (ch 224, 1,2,3,4, attention 32/16/8): 274M;
    # the released KL-f4 autoencoder (autoencoder_kl_64x64x3: ch 128, 1,2,4): 55.3M
    assert arms["latent"] == 274_056_163
    assert arms["autoencoder"] == 55_312_063
    assert plan["params"] == sum(arms.values())
    c = plan["config"]
    assert (c["image_size"], c["z_channels"], c["ae_ch_mult"], c["kl_weight"]) == (
        256,
        3,
        [1, 2, 4],
        1e-6,
    )
    assert (c["beta_1"], c["beta_T"], c["beta_schedule"], c["batch_size"]) == (
        0.0015,
        0.0195,
        "sqrt-linear",
        48,
    )


def test_tiny_real_run_through_the_cli_spends_equal_flops(runner, tmp_path):
    out = tmp_path / "ldm"
    args = ["reproduce", "latent-diffusion", "--steps", "10", "--out", str(out)]
    for s in (*TINY, "eval_every=5"):
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    record = json.loads((out / "result.json").read_text())
    assert set(record) >= RESULT_KEYS and record["steps"] == 10
    assert set(record["arm_params"]) == {"autoencoder", "latent", "pixel"}
    m = record["metrics"]
    # equal compute: the pixel arm's FLOPs are within one of its steps of the latent side's
    assert 1 <= m["pixel_steps"] <= 10
    per_step = m["pixel_tflops"] / m["pixel_steps"]
    assert m["pixel_tflops"] <= m["latent_tflops"] < m["pixel_tflops"] + per_step
    assert 0 < m["ae_recon_mse"] < 1 and m["fd_digits_classifier"] > 0
    assert m["fd_gain"] == m["pixel_fd_digits_classifier"] - m["fd_digits_classifier"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # stage 1 (the autoencoder) is the first 3 of 10 steps, then it is frozen
    assert "train_ae_rec" in rows[0] and "train_ae_rec" not in rows[1]
    assert rows[0]["ae_recon_mse"] == rows[1]["ae_recon_mse"] == m["ae_recon_mse"]
    for png in ("samples.png", "samples_pixel.png", "reverse_process.png", "reconstructions.png"):
        assert (out / png).stat().st_size > 5000


def test_two_steps_do_not_reproduce(runner, tmp_path):
    settings = ("dataset=digits", "ae_ch_mult=1,2", "fd_classifier_steps=20", "sample_steps=5")
    failed = two_step_control(runner, "latent-diffusion", tmp_path / "control", *settings)
    assert "ae_recon_mse" in failed  # the absolute floor: 2 steps learn nothing


def test_train_flops_count_the_forward_and_both_backward_products():
    """The arms are given equal training FLOPs, counted by `train_flops`: for a bias-free linear
    layer of 16 → 8 that is 2·16·8 forward, and as much again for each of the input's and the
    weight's gradients (only the weight's when the input needs none)."""
    from papercli.recipes.latent_diffusion import train_flops

    layer = torch.nn.Linear(16, 8, bias=False, device="meta")
    x = torch.empty(1, 16, device="meta", requires_grad=True)
    assert train_flops(layer, x) == 3 * 2 * 16 * 8
    assert train_flops(layer, torch.empty(1, 16, device="meta")) == 2 * 2 * 16 * 8
