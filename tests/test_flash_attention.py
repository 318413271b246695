"""FlashAttention 1/2: the tiled algorithms equal standard attention (outputs and gradients, causal
or not, N not a multiple of the block); a tiled attention without the online-softmax rescaling
is caught by the same exactness measure; the recipe runs through the CLI at tiny N with memory
slopes that separate linear from quadratic; the Triton kernels are exact under Triton's CPU
interpreter where Triton is installed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from test_reproduce_cli import one_line_error, papercli

from papercli.methods import attention_bench as bench
from papercli.methods.flash_attention import flash_attention, flash_attention_2

BOUND = 1e-5  # the registry's max_abs_error check


@pytest.mark.parametrize("algorithm", ["flash", "flash2"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "dim", "block"), [(200, 64, 64), (97, 40, 32), (33, 8, 16)])
def test_tiled_attention_equals_standard_attention(algorithm, causal, n, dim, block):
    p = bench.Point(algorithm, n, heads=3, dim=dim, causal=causal, block=block, batch=2)
    errors = bench.attention_errors(bench.attention_fn(algorithm, block), p)
    assert set(errors) == {"out", "dq", "dk", "dv"}
    assert max(errors.values()) <= BOUND, errors


def test_unequal_query_and_key_blocks_and_lengths():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 70, 16, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 45, 16, generator=g, dtype=torch.float64) for _ in "kv")
    want = torch.softmax(q @ k.transpose(-2, -1) / 4.0, -1) @ v
    for fn in (flash_attention, flash_attention_2):
        got = fn(q, k, v, False, None, 32, 16)
        assert (got - want).abs().max() < 1e-12


def test_without_the_online_softmax_rescaling_exactness_fails():
    """Each K/V block's softmax on its own, averaged: what tiling gives without FA's running max
    and sum (Alg. 1 l. 11-12). The measure the recipe checks must see it."""

    def no_rescale(q, k, v, causal, block=32):
        outs = []
        for j in range(0, k.shape[-2], block):
            s = q @ k[..., j : j + block, :].transpose(-2, -1) / q.shape[-1] ** 0.5
            outs.append(torch.softmax(s, -1) @ v[..., j : j + block, :])
        return sum(outs) / len(outs)

    errors = bench.attention_errors(no_rescale, bench.Point("broken", 100, heads=2, dim=16))
    assert max(errors.values()) > 100 * BOUND, errors


def test_bad_block_size_is_a_value_error():
    q = torch.randn(1, 8, 4)
    with pytest.raises(ValueError, match="block sizes"):
        flash_attention(q, q, q, False, None, 0, 4)


def test_loglog_slope():
    ns = [1, 2, 4, 8]
    assert bench.loglog_slope(ns, [3 * n for n in ns]) == pytest.approx(1.0)
    assert bench.loglog_slope(ns, [5 * n * n for n in ns]) == pytest.approx(2.0)


def test_recipe_through_the_cli_at_tiny_n(tmp_path):
    out = tmp_path / "fa"
    proc = papercli(
        "reproduce", "flash-attention", "--out", str(out), "--json", "--steps", "2",
        "--set", "seq_lens=1024,4096", "--set", "exact_n=150", "--set", "block=64",
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    record = json.loads(proc.stdout)
    m = record["metrics"]
    assert m["max_abs_error"] <= BOUND
    # the tiled algorithm's peak grows about linearly, standard attention's about quadratically:
    # had the recipe's algorithm been standard attention, tiled_memory_slope <= 1.2 would fail
    memory = {k: v for k, v in m.items() if "mib" in k or "slope" in k}
    assert m["flash_memory_slope"] <= 1.2 < 1.8 <= m["standard_memory_slope"], memory
    assert m["standard_mib_4096"] > 4 * m["flash_mib_4096"]
    assert m["flash_ms_1024"] > 0 and m["standard_ms_4096"] > 0
    checks = {c["metric"]: c["passed"] for c in record["checks"]}
    assert checks["max_abs_error"] and checks["tiled_memory_slope"]
    assert "speedup_over_standard_at_longest" not in checks  # a GPU (paper-scale) check
    table = (out / "attention.md").read_text()
    assert "| 4096 |" in table and "flash MiB" in table
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["train_standard_mib"] > 0


def test_dry_run_and_usage_errors():
    plan = json.loads(papercli("reproduce", "flash-attention-2", "--dry-run", "--json").stdout)
    assert plan["params"] == 0 and plan["config"]["algorithms"] == ["flash2", "standard"]
    assert plan["config"]["seq_lens"] == [1024, 2048, 4096, 8192, 16384]
    paper = json.loads(
        papercli("reproduce", "flash-attention-2", "--scale", "paper", "--dry-run", "--json").stdout
    )
    assert paper["config"]["algorithms"][:2] == ["triton_fa2", "triton_fa1"]
    one_line_error(papercli("reproduce", "flash-attention", "--steps", "9"), 2, "one sequence")
    proc = papercli("reproduce", "flash-attention", "--scale", "paper", "--steps", "1")
    one_line_error(proc, 2, "--gpu")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_kernels_are_exact():
    """The Triton kernels compiled for the GPU where there is one, else under Triton's CPU
    interpreter (TRITON_INTERPRET=1, set before triton is imported). Triton 3.6's interpreter fails
    on NumPy ≥ 2.5 (it turns 1-element arrays into ints), so a CUDA machine runs the real thing."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    script = (
        "import json; from papercli.methods import attention_bench as b\n"
        "print(json.dumps({f'{a} {c}': max(b.attention_errors(b.attention_fn(a, 16),"
        f" b.Point(a, 45, heads=2, dim=24, causal=c), device='{device}').values())"
        " for a in ('triton_fa1', 'triton_fa2') for c in (False, True)}))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert proc.returncode == 0, proc.stderr
    errors = json.loads(proc.stdout)
    assert len(errors) == 4 and max(errors.values()) <= BOUND, errors
