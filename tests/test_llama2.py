"""Llama 2 recipe: the 7B/13B/70B shapes on the meta device, the GQA ablation's arms at equal
parameters, and a 2-step run through the CLI that measures the KV caches but must not reproduce."""

from __future__ import annotations

import json

from conftest import two_step_control
from test_reproduce_cli import papercli

from papercli.models.transformer import TransformerConfig
from papercli.recipes.llama2 import widened_ff

# a tiny Llama: 8 heads of dimension 4, 2 layers; GQA with 2 key/value heads
TINY = ("vocab_size=300", "context=16", "dim=32", "heads=8", "layers=2", "ff_dim=48")
TINY += ("eval_sequences=4", "sample_tokens=5", "prompt_tokens=12")


def test_paper_scale_counts_the_three_released_sizes():
    plan = json.loads(
        papercli("reproduce", "llama-2", "--scale", "paper", "--dry-run", "--json").stdout
    )
    assert {name: c["total"] for name, c in plan["arm_params"].items()} == {
        "llama-2-7b": 6_738_415_616,
        "llama-2-13b": 13_015_864_320,
        "llama-2-70b": 68_976_648_192,
    }
    assert plan["config"]["context"] == 4096 and plan["global_batch"] * 4096 == 4 * 2**20


def test_gqa_and_mqa_arms_are_widened_to_the_same_size():
    plan = json.loads(papercli("reproduce", "llama-2", "--dry-run", "--json").stdout)
    sizes = [c["total"] for c in plan["arm_params"].values()]
    assert list(plan["arm_params"]) == ["mha", "gqa", "mqa"]
    assert max(sizes) / min(sizes) - 1 < 0.001
    # d 128, 8 heads of 16: one kv head fewer saves 2·128·16 weights per layer = 32/3 hidden units
    block = TransformerConfig(dim=128, heads=8, ff_dim=352)
    assert [widened_ff(block, kv) for kv in (8, 2, 1)] == [352, 352 + 64, 352 + 75]


def test_two_steps_measure_the_kv_cache_and_do_not_reproduce(runner, tmp_path):
    out = tmp_path / "control"
    failed = two_step_control(runner, "llama-2", out, *TINY)
    assert "gqa_heldout_loss" in failed  # the absolute floor: 2 steps learn nothing
    m = json.loads((out / "result.json").read_text())["metrics"]
    # keys and values, 2 layers, kv heads × 12 prompt tokens × head dim 4, fp32
    assert m["mha_kv_cache_bytes"] == 2 * 2 * 8 * 12 * 4 * 4
    assert (m["gqa_kv_cache_shrink"], m["mqa_kv_cache_shrink"]) == (4.0, 8.0)
    assert m["arm_param_spread"] < 0.01
    assert m["gqa_minus_mha_loss"] == m["gqa_heldout_loss"] - m["mha_heldout_loss"]
