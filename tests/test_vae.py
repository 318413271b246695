"""VAE (AEVB vs wake-sleep): the bound of Eq. 10, the estimators' gradients, paper sizes on the
meta device, a tiny real run through the CLI, and a 2-step run that must NOT reproduce."""

from __future__ import annotations

import json

import torch
from conftest import RESULT_KEYS, two_step_control

from papercli.cli import app
from papercli.recipes.vae import GaussianMLPVAE, wake_sleep_loss


def test_closed_form_kl_of_eq_10_matches_torch_distributions():
    torch.manual_seed(0)
    m = GaussianMLPVAE(pixels=16, hidden=8, latent=3, init_std=0.5)
    x = (torch.rand(5, 16) > 0.5).float()
    mu, logvar = m.encode(x)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    kl = torch.distributions.kl_divergence(q, p).sum(1)
    eps = torch.randn(5, 3)
    z = mu + torch.exp(0.5 * logvar) * eps
    log_px = torch.distributions.Bernoulli(logits=m.decoder(z)).log_prob(x).sum(1)
    assert torch.allclose(m.elbo(x, eps), log_px - kl, atol=1e-5)


def test_reparameterisation_reaches_the_encoder_but_wake_sleep_splits_its_phases():
    torch.manual_seed(0)
    m = GaussianMLPVAE(pixels=16, hidden=8, latent=3, init_std=0.5)
    x = (torch.rand(5, 16) > 0.5).float()
    # AEVB: the decoder's likelihood term back-propagates through z = μ + σ ε into the encoder
    m.zero_grad()
    (-m.decoder(m.encode(x)[0] + torch.randn(5, 3)).sum()).backward()
    assert m.mu.weight.grad.abs().sum() > 0
    # wake-sleep: the encoder learns only from dreams, the decoder only from the data
    m.zero_grad()
    wake_sleep_loss(m, x, torch.Generator().manual_seed(0)).backward()
    enc_grad = m.encoder[0].weight.grad.clone()
    m.zero_grad()
    wake_sleep_loss(m, torch.zeros_like(x), torch.Generator().manual_seed(0)).backward()
    assert torch.equal(enc_grad, m.encoder[0].weight.grad)  # the data never reaches the encoder


def test_paper_sizes_on_the_meta_device(runner):
    result = runner.invoke(app, ["reproduce", "vae", "--dry-run", "--json", "--scale", "paper"])
    plan = json.loads(result.stdout)

    def mlp_vae(pixels, hidden, latent):
        return (
            (pixels + 1) * hidden
            + 2 * (hidden + 1) * latent
            + (latent + 1) * hidden
            + (hidden + 1) * pixels
        )

    assert plan["params"] == 2 * mlp_vae(784, 500, 20) + mlp_vae(784, 500, 2)
    assert plan["config"]["batch_size"] == 100 and plan["config"]["steps"] == 1_000_000
    bad = runner.invoke(app, ["reproduce", "vae", "--dry-run", "--set", "arms=aevb,vqvae"])
    assert bad.exit_code == 2 and "unknown arm(s) vqvae" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_tiny_real_run_through_the_cli(runner, tmp_path):
    out = tmp_path / "vae"
    args = ["reproduce", "vae", "--steps", "6", "--out", str(out)]
    for s in (
        "dataset=digits",
        "eval_every=3",
        "hidden=32",
        "fd_samples=200",
        "fd_classifier_steps=20",
    ):
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    record = json.loads((out / "result.json").read_text())
    assert set(record) >= RESULT_KEYS and record["steps"] == 6
    m = record["metrics"]
    for arm in ("aevb", "wake_sleep", "manifold"):
        assert -64 * 0.9 < m[f"{arm}_test_elbo"] < 0  # nats per 8x8 binary image (untrained: −44)
    assert m["elbo_gain"] == m["aevb_test_elbo"] - m["wake_sleep_test_elbo"]
    assert m["fd_digits_classifier"] > 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert rows[1]["aevb_test_elbo"] > rows[0]["aevb_test_elbo"]  # it learns
    for png in ("samples.png", "manifold.png"):
        assert (out / png).stat().st_size > 5000


def test_two_steps_do_not_reproduce(runner, tmp_path):
    failed = two_step_control(runner, "vae", tmp_path / "control", "fd_classifier_steps=10")
    assert "aevb_test_elbo" in failed  # the absolute floor: 2 steps learn nothing
