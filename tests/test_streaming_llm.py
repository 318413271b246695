"""StreamingLLM recipe: the four ways of reading a stream agree where they must (before the cache
evicts anything), the paper-scale config is a Llama-2-7B-shaped model on the meta device, and a
short run through the CLI writes the perplexity-vs-position table but does not reproduce."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import torch
from conftest import two_step_control
from test_reproduce_cli import papercli

from papercli.models.transformer import KVCache, Transformer
from papercli.recipes._llama_block import MINI_LLAMA
from papercli.recipes.streaming_llm import (
    SinkTokenLM,
    first_token_attention,
    read_cached,
    read_recomputed,
)

W = 8


def tiny_lm() -> Transformer:
    torch.manual_seed(0)
    return Transformer(replace(MINI_LLAMA, vocab_size=50, dim=32, ff_dim=64, layers=2, heads=2))


def test_the_four_readings_agree_until_the_cache_evicts_and_then_differ():
    lm, stream = tiny_lm().eval(), torch.randint(0, 50, (2, 4 * W))
    none = stream[:, :0]
    dense = read_cached(lm, stream, none, KVCache())
    window = read_cached(lm, stream, none, KVCache(window=W))
    sinks = read_cached(lm, stream, none, KVCache(window=W, sinks=4))
    recompute = read_recomputed(lm, stream, none, W)
    # nll[:, t] scores token t + 1 from tokens 0 … t: up to t = W − 1 every reading sees them all
    for r in (window, sinks, recompute):
        torch.testing.assert_close(r.nll[:, :W], dense.nll[:, :W], atol=1e-5, rtol=1e-5)
    # afterwards a window drops the first tokens; recompute re-runs exactly the last W tokens
    assert (window.nll[:, W:] - dense.nll[:, W:]).abs().max() > 1e-4
    assert (sinks.nll[:, W:] - window.nll[:, W:]).abs().max() > 1e-4
    one = lm(stream[:, 2 * W - W + 1 : 2 * W + 1])[:, -1].log_softmax(-1)
    torch.testing.assert_close(
        recompute.nll[:, 2 * W], -one.gather(1, stream[:, 2 * W + 1, None])[:, 0]
    )
    # memory: the rolling caches hold W − 1 tokens, the dense one the whole stream
    assert sinks.cache_bytes == window.cache_bytes < dense.cache_bytes
    assert dense.cache_bytes == window.cache_bytes * (4 * W - 1) // (W - 1)
    assert recompute.seconds_per_token > 0 and sinks.seconds_per_token > 0


def test_sink_token_arm_prepends_its_own_token_and_keeps_the_targets():
    torch.manual_seed(0)
    arm = SinkTokenLM(replace(MINI_LLAMA, vocab_size=50, dim=32, ff_dim=64, layers=1, heads=2))
    x = torch.randint(0, 50, (3, 10))
    logits = arm(x)
    assert logits.shape == (3, 10, 50)  # the sink's own prediction and logit are dropped
    full = arm.lm(torch.cat([torch.full((3, 1), 50), x], dim=1))
    torch.testing.assert_close(logits, full[:, 1:, :50])


def test_first_token_attention_is_the_uniform_share_when_queries_are_blind():
    lm = tiny_lm().eval()
    x = torch.randint(0, 50, (3, 16))
    trained = first_token_attention(lm, x)
    assert trained.shape == (2,) and ((trained > 0) & (trained < 1)).all()
    for block in lm.decoder:  # every score 0: each query spreads attention evenly
        torch.nn.init.zeros_(block.attn.q.weight)
    uniform = sum(1 / (t + 1) for t in range(8, 16)) / 8
    torch.testing.assert_close(first_token_attention(lm, x), torch.full((2,), uniform))


def test_paper_scale_is_llama_2_7b_with_table_1_cache():
    plan = json.loads(
        papercli("reproduce", "streaming-llm", "--scale", "paper", "--dry-run", "--json").stdout
    )
    assert plan["arm_params"] == {"vanilla": {"total": 6_738_415_616, "trainable": 6_738_415_616}}
    assert plan["config"]["cache_window"] == 1024 and plan["config"]["sinks"] == 4
    assert plan["config"]["stream_tokens"] >= 10 * 1024


def test_cache_window_beyond_the_training_context_is_refused():
    proc = papercli(
        "reproduce", "streaming-llm", "--dry-run", "--set", "context=32", "--set", "cache_window=64"
    )
    assert proc.returncode == 2, proc.stderr
    assert "exceeds the training context" in proc.stderr and "Traceback" not in proc.stderr


def test_short_run_writes_the_curves_and_two_steps_do_not_reproduce(runner, tmp_path):
    out = tmp_path / "control"
    failed = two_step_control(
        runner, "streaming-llm", out,
        "vocab_size=512", "context=32", "cache_window=16", "stream_tokens=80",
        "eval_streams=1", "eval_sequences=8", "plot_bin=16",
    )  # fmt: skip
    assert "vanilla_window_over_recompute" in failed  # an untrained model has no sink to lose
    assert "vanilla_streaming_ppl" in failed  # the absolute floor
    metrics = json.loads((out / "result.json").read_text())["metrics"]
    for arm in ("vanilla", "sink"):
        for method in ("dense", "window", "recompute", "streaming"):
            assert 100 < metrics[f"{arm}_{method}_ppl"] < 2000  # untrained: near the vocabulary
        assert 0 < metrics[f"{arm}_first_token_attention"] < 1
    rows = list(csv.DictReader((out / "ppl_vs_position.csv").open()))
    assert {(r["arm"], r["method"]) for r in rows} == {
        (a, m) for a in ("vanilla", "sink") for m in ("dense", "window", "recompute", "streaming")
    }
    assert [int(r["first_position"]) for r in rows[:5]] == [1, 17, 33, 49, 65]
    assert (out / "ppl_vs_position.png").stat().st_size > 5000
