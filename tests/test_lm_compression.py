"""LM-is-compression recipe: the model + arithmetic coder round trip on real bytes, the paper's
model size on the meta device, and a short run through the CLI that decodes exactly but, after 2
steps, does not reproduce."""

from __future__ import annotations

import json
from dataclasses import replace

import torch
from test_reproduce_cli import papercli

from papercli.models.transformer import Transformer
from papercli.recipes.lm_compression import (
    MINI,
    LMCompressionRecipe,
    classic_chunked_bytes,
    compress,
    decompress,
)


def test_model_coder_round_trip_is_exact_and_near_the_log_loss():
    torch.manual_seed(0)
    recipe = LMCompressionRecipe(replace(MINI, dim=16, layers=1, heads=2, chunk=48), None)
    model = Transformer(recipe.model_config()).eval()
    chunks = torch.tensor([list(b"To be, or not to be, that is the question: whethe"[:48])] * 2)
    chunks[1] = torch.randint(0, 256, (48,))
    codes, ideal_bits = compress(model, chunks)
    assert torch.equal(decompress(model, codes, 48, torch.device("cpu")), chunks)
    coded_bits = 8 * sum(len(c) for c in codes)
    assert ideal_bits <= coded_bits <= ideal_bits + 2 * (2 + 8)  # per chunk: 2 bits + padding


def test_classic_chunked_size_counts_the_header_once():
    import gzip

    chunks = [b"a" * 100, b"b" * 100, b"c" * 100]
    header = len(gzip.compress(b"\x00"))
    alone = sum(len(gzip.compress(c)) for c in chunks)
    assert classic_chunked_bytes(gzip.compress, chunks) == alone - 2 * header


def test_paper_scale_is_the_papers_largest_own_model():
    plan = json.loads(
        papercli("reproduce", "lm-compression", "--scale", "paper", "--dry-run", "--json").stdout
    )
    assert plan["params"] == 3_290_112  # Sec. 3.1: "3.2M"; width 256, 4 layers, bytes
    assert plan["config"]["chunk"] == 2048 and plan["config"]["compress_chunks"] == 488_281


def test_short_run_decodes_exactly_and_two_steps_do_not_reproduce(tmp_path):
    proc = papercli(
        "reproduce", "lm-compression", "--steps", "2", "--batch-size", "4",
        "--set", "chunk=64", "--set", "compress_chunks=3", "--set", "eval_chunks=2",
        "--out", str(tmp_path / "short"), "--json",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    record = json.loads(proc.stdout)
    assert record["verdict"] == "not reproduced"
    checks = {c["metric"]: c for c in record["checks"]}
    assert checks["roundtrip_exact"]["passed"]  # lossless even for an untrained model
    assert not checks["lm_bpb"]["passed"] and checks["lm_bpb"]["measured"] > 7
    m = record["metrics"]
    assert m["coded_bytes"] == 3 * 64 and m["adjusted_rate"] > m["lm_rate"]
    assert 2.0 < m["bz2_whole_bpb"] < m["gzip_whole_bpb"] < 4.0  # the whole held-out plays


def test_paper_scale_without_enwik9_is_a_clear_error(tmp_path):
    small = tmp_path / "enwik9"
    small.write_bytes(b"not enwik9")
    proc = papercli(
        "reproduce", "lm-compression", "--scale", "paper", "--data", str(small),
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert proc.returncode != 0 and "expected enwik9" in proc.stderr
    assert "Traceback" not in proc.stderr
