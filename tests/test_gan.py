"""GAN: the Parzen-window estimate against a closed form, maxout, paper sizes on the meta device,
a tiny real run through the CLI, and a 2-step run that must NOT reproduce."""

from __future__ import annotations

import json
import math

import torch
from conftest import RESULT_KEYS, two_step_control

from papercli.cli import app
from papercli.recipes.gan import Maxout, parzen_log_likelihood

TINY = (
    "dataset=digits",
    "fd_samples=200",
    "fd_classifier_steps=20",
    "parzen_samples=300",
    "parzen_test=200",
    "parzen_val=200",
    "noise=16",
    "g_hidden=64",
    "d_units=32",
)


def test_parzen_window_with_one_kernel_is_a_gaussian_density():
    x = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    s = torch.tensor([[0.5, 0.5]])
    sigma = 0.7
    expected = [
        -((xi - s[0]) ** 2).sum() / (2 * sigma**2) - math.log(2 * math.pi * sigma**2) for xi in x
    ]
    assert torch.allclose(parzen_log_likelihood(x, s, sigma), torch.tensor(expected).double())
    # two identical kernels: the same density (the 1/N normalisation)
    assert torch.allclose(
        parzen_log_likelihood(x, torch.cat([s, s]), sigma), parzen_log_likelihood(x, s, sigma)
    )


def test_maxout_takes_the_max_over_pieces():
    m = Maxout(3, units=2, pieces=4)
    x = torch.randn(5, 3)
    assert torch.equal(m(x), m.linear(x).view(5, 2, 4).max(-1).values)


def test_paper_sizes_on_the_meta_device(runner):
    plan = json.loads(
        runner.invoke(app, ["reproduce", "gan", "--dry-run", "--json", "--scale", "paper"]).stdout
    )
    g = 101 * 1200 + 1201 * 1200 + 1201 * 784
    d = 785 * 240 * 5 + 241 * 240 * 5 + 241
    assert plan["params"] == g + d
    assert plan["config"]["optimizer"] == "sgd" and plan["config"]["batch_size"] == 100


def test_tiny_real_run_through_the_cli(runner, tmp_path):
    out = tmp_path / "gan"
    args = ["reproduce", "gan", "--steps", "6", "--out", str(out), "--set", "eval_every=3"]
    for s in (*TINY, "optimizer=adam", "lr=2e-3"):
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    record = json.loads((out / "result.json").read_text())
    assert set(record) >= RESULT_KEYS and record["steps"] == 6
    assert set(record["arm_params"]) == {"generator", "discriminator"}
    m = record["metrics"]
    assert math.isfinite(m["parzen_ll"]) and m["fd_digits_classifier"] > 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert {"train_d_real", "train_d_fake", "train_g"} <= set(rows[0])
    # the baseline (untrained G) is fixed: gain and parzen_ll move together
    base = [r["parzen_ll"] - r["parzen_gain"] for r in rows]
    assert math.isclose(base[0], base[1], rel_tol=1e-9)
    assert (out / "samples.png").stat().st_size > 5000


def test_two_steps_do_not_reproduce(runner, tmp_path):
    settings = ("fd_classifier_steps=10", "parzen_samples=500", "parzen_test=300")
    assert "parzen_gain" in two_step_control(runner, "gan", tmp_path / "control", *settings)
