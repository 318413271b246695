"""The Fréchet distance against closed forms, and the cached feature classifier on real digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from papercli.data import registry as datasets
from papercli.metrics.frechet import (
    FrechetScorer,
    feature_net,
    frechet_distance,
    gaussian_stats,
    metric_name,
)


def test_commuting_gaussians_match_the_closed_form():
    # Σ₁ = Q diag(a) Qᵀ, Σ₂ = Q diag(b) Qᵀ commute, so d² = ‖Δμ‖² + Σᵢ (√aᵢ − √bᵢ)²
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = np.array([1.0, 2.0, 3.0, 0.5, 4.0]), np.array([2.0, 2.0, 1.0, 0.25, 9.0])
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    d2 = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert d2 == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, q @ np.diag(a) @ q.T, mu1, q @ np.diag(a) @ q.T) == pytest.approx(
        0.0, abs=1e-9
    )


def test_one_dimensional_case_and_sample_estimate():
    # 1-D: d² = (μ₁ − μ₂)² + (σ₁ − σ₂)²
    assert frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[1.0]])
    ) == pytest.approx(9.0 + 1.0)
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, size=(20000, 3))
    y = rng.normal(1.0, 2.0, size=(20000, 3))
    d2 = frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
    assert d2 == pytest.approx(3 * (1.0 + 1.0), rel=0.05)


def test_feature_classifier_is_cached_and_separates_real_from_noise(papercli_home):
    d = datasets.get("digits").load()
    net = feature_net("digits", d["train_x"], d["train_y"], 10, steps=40)
    cached = list((papercli_home / "cache" / "frechet").glob("digits-*.safetensors"))
    assert len(cached) == 1
    again = feature_net("digits", d["train_x"], d["train_y"], 10, steps=40)
    for p, q in zip(net.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)  # loaded, not retrained with another result
    other_labels = (d["train_y"] + 1) % 10  # other data -> another checksum -> another file
    feature_net("digits", d["train_x"], other_labels, 10, steps=40)
    assert len(list((papercli_home / "cache" / "frechet").glob("digits-*.safetensors"))) == 2

    real_test = torch.from_numpy(d["test_x"]).float().div(255).unsqueeze(1)
    real_train = torch.from_numpy(d["train_x"][:297]).float().div(255).unsqueeze(1)
    noise = torch.rand(297, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    score = FrechetScorer(net, real_test)
    assert score(real_train) < 0.2 * score(noise)
    assert metric_name("fashion-mnist") == "fd_fmnist_classifier"


def test_damaged_cache_is_retrained(papercli_home):
    d = datasets.get("digits").load()
    feature_net("digits", d["train_x"], d["train_y"], 10, steps=20)
    (path,) = (papercli_home / "cache" / "frechet").glob("digits-*.safetensors")
    path.write_bytes(b"not a checkpoint")
    net = feature_net("digits", d["train_x"], d["train_y"], 10, steps=20)
    assert net.features.weight.shape == (64, 128) and path.stat().st_size > 1000


def test_paper_scale_inception_fid_asks_for_its_weights_and_library(tmp_path):
    """The real FID is computed only from weights the user points to, never downloaded; a
    missing file or a missing torch-fidelity stops the run with one line, before training."""
    import importlib.util

    from test_reproduce_cli import papercli

    base = ["reproduce", "vae", "--steps", "1", "--out", str(tmp_path / "run"), "--set",
            "dataset=digits", "--set", "fd_classifier_steps=5", "--set", "fd_samples=100"]  # fmt: skip
    missing = papercli(*base, "--set", f"inception_weights={tmp_path / 'nope.pth'}")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "no such Inception weights file" in missing.stderr
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"not checked before the library")
    if importlib.util.find_spec("torch_fidelity") is None:
        no_lib = papercli(*base, "--set", f"inception_weights={weights}")
        assert no_lib.returncode != 0 and "Traceback" not in no_lib.stderr
        assert "pip install 'papercli[fid]'" in no_lib.stderr
