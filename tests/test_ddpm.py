"""DDPM recipe: the paper's configuration and sizes on the meta device, a tiny real run through the
CLI (both arms, EMA, samples and reverse-process strip), and a 2-step run that must NOT reproduce."""

from __future__ import annotations

import json

from conftest import RESULT_KEYS, two_step_control

from papercli.cli import app

TINY = (
    "fd_samples=200",
    "fd_classifier_steps=20",
    "sample_steps=4",
    "ch=16",
    "strip_cols=4",
)


def test_paper_config_and_sizes_on_the_meta_device(runner):
    result = runner.invoke(app, ["reproduce", "ddpm", "--dry-run", "--json", "--scale", "paper"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    # two arms (L_simple, L_vlb), each the 35.7M CIFAR-10 U-Net (Appendix B)
    assert {arm: c["total"] for arm, c in plan["arm_params"].items()} == {
        "simple": 35_746_307,
        "vlb": 35_746_307,
    }
    assert plan["params"] == 2 * 35_746_307
    c = plan["config"]
    assert (c["dataset"], c["batch_size"], c["steps"], c["lr"]) == ("cifar10", 128, 800_000, 2e-4)
    assert (c["warmup"], c["ema_decay"], c["grad_clip"], c["dropout"]) == (5000, 0.9999, 1.0, 0.1)
    assert (c["T"], c["beta_1"], c["beta_T"], c["sample_steps"]) == (1000, 1e-4, 0.02, 1000)
    mini = json.loads(runner.invoke(app, ["reproduce", "ddpm", "--dry-run", "--json"]).stdout)
    assert mini["config"]["T"] == 1000 and mini["config"]["sample_steps"] < 1000
    bad = runner.invoke(app, ["reproduce", "ddpm", "--dry-run", "--set", "arms=simple,hybrid"])
    assert bad.exit_code == 2 and "unknown arm(s) hybrid" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_tiny_real_run_through_the_cli(runner, tmp_path):
    out = tmp_path / "ddpm"
    args = ["reproduce", "ddpm", "--steps", "4", "--out", str(out), "--set", "eval_every=2"]
    for s in TINY:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    record = json.loads((out / "result.json").read_text())
    assert set(record) >= RESULT_KEYS and record["steps"] == 4
    assert set(record["arm_params"]) == {"simple", "vlb"}
    m = record["metrics"]
    assert m["fd_digits_classifier"] > 0 and m["vlb_fd_digits_classifier"] > 0
    assert m["fd_gain"] == m["vlb_fd_digits_classifier"] - m["fd_digits_classifier"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert {"train_simple", "train_vlb"} <= set(rows[0])
    # the EMA weights move: the held-out L_simple of the sampling network changes
    assert rows[0]["simple_test_loss_simple"] != rows[1]["simple_test_loss_simple"]
    for png in ("samples.png", "samples_vlb.png", "reverse_process.png"):
        assert (out / png).stat().st_size > 5000


def test_two_steps_do_not_reproduce(runner, tmp_path):
    settings = ("fd_classifier_steps=20", "fd_samples=200", "sample_steps=5")
    failed = two_step_control(runner, "ddpm", tmp_path / "control", *settings)
    assert "simple_test_loss_simple" in failed  # the absolute floor: 2 steps learn nothing
