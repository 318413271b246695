"""Chinchilla recipe: the paper's sizes (Table A9, Chinchilla 70B) on the meta device, FLOPs as
Appendix F counts them, the parabola fit, and short real runs through the CLI — a tiny sweep that
writes its plot, and a 2-step one that must not reproduce."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_reproduce_cli import papercli

from papercli.recipes.chinchilla import (
    PAPER_SIZES,
    _count,
    fit_parabola,
    flops_per_token,
    relative_position_params,
)

# a tiny sweep: three sizes, three budgets, 16-byte contexts
TINY = (
    "--set", "sizes=d16,d24,d32", "--set", "sizes_per_budget=3", "--set", "context=16",
    "--set", "budgets=3e7,6e7,1.2e8", "--set", "eval_sequences=16", "--batch-size", "8",
)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "published"),
    [
        ("chinchilla-70b", 70e9),  # Sec. 4.1 / Table 4
        ("a9-44m", 44e6),  # Table A9 rows
        ("a9-425m", 425e6),
        ("a9-1018m", 1018e6),
        ("a9-16183m", 16183e6),
    ],
)
def test_paper_sizes_match_the_paper_on_the_meta_device(name, published):
    """Built on the meta device (no weights allocated), plus the relative-position parameters this
    family lacks (Transformer-XL's W_R and u, v: d² + 2d per layer), the count is the paper's."""
    built = _count(PAPER_SIZES[name])
    total = built + relative_position_params(PAPER_SIZES[name])
    assert total == pytest.approx(published, rel=0.01)
    if name == "chinchilla-70b":
        assert built == 64_695_189_504  # what this family builds: 80 layers, d 8192, 64 heads


def test_appendix_f_flops_approach_6nd_for_large_models_not_for_tiny_ones():
    big = PAPER_SIZES["chinchilla-70b"]
    assert flops_per_token(big, 2048) / (6 * _count(big)) == pytest.approx(1.05, abs=0.02)
    tiny = PAPER_SIZES["a9-44m"]
    assert flops_per_token(tiny, 2048) / (6 * _count(tiny)) > 1.5  # attention and logits weigh


def test_parabola_vertex_and_no_valley_fallback():
    log_n = np.log([1e4, 2e4, 4e4, 8e4, 1.6e5])
    vertex, valley = fit_parabola(log_n, 0.3 * (log_n - np.log(3e4)) ** 2 + 2.0)
    assert valley and np.exp(vertex) == pytest.approx(3e4, rel=1e-6)
    vertex, valley = fit_parabola(log_n, 3.0 - 0.1 * log_n)  # falling: no minimum inside
    assert not valley and vertex == log_n[-1]


def test_paper_scale_dry_run_lists_the_sweep():
    proc = papercli("reproduce", "chinchilla", "--scale", "paper", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert len(plan["arm_params"]) == 9 * 9  # Fig. 3's nine budgets, nine sizes each
    assert plan["config"]["budgets"][0] == 6e18 and plan["config"]["budgets"][-1] == 3e21
    assert max(a["total"] for a in plan["arm_params"].values()) > 1e9


def test_tiny_sweep_through_the_cli_and_two_steps_do_not_reproduce(tmp_path):
    out = tmp_path / "sweep"
    proc = papercli("reproduce", "chinchilla", *TINY, "--out", str(out), "--json")
    assert proc.returncode in (0, 1), proc.stderr
    record = json.loads(proc.stdout)
    m = record["metrics"]
    assert m["budget_spent"] == 1.0 and len([k for k in m if k.startswith("loss_")]) == 9
    assert {"n_opt_exponent", "valleys", "n_opt_c3e07"} <= set(m)
    assert (out / "isoflop.png").stat().st_size > 10_000

    proc = papercli(
        "reproduce", "chinchilla", *TINY, "--steps", "2", "--out", str(tmp_path / "two"), "--json"
    )
    assert proc.returncode == 1, proc.stderr
    record = json.loads(proc.stdout)
    assert record["verdict"] == "not reproduced"
    failed = {c["metric"] for c in record["checks"] if not c["passed"]}
    assert {"budget_spent", "best_loss_largest_budget"} <= failed


def test_unknown_size_is_a_usage_error():
    proc = papercli("reproduce", "chinchilla", "--set", "sizes=d16,d999,d32", "--dry-run")
    assert proc.returncode == 2
    assert "unknown size(s) d999" in proc.stderr and "Traceback" not in proc.stderr
