"""LM-is-compression recipe: the model + arithmetic coder round trip on real bytes, the paper's
model size on the meta device, and a short run through the CLI that decodes exactly but, after 2
steps, does not reproduce."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_reproduce_cli import papercli

from papercli.errors import UsageError
from papercli.models.transformer import KVCache, Transformer, TransformerConfig
from papercli.recipes.lm_compression import (
    MINI,
    LMCompressionRecipe,
    _probabilities,
    classic_chunked_bytes,
    compress,
    decompress,
)


@pytest.mark.parametrize("positions", ["relative", "sinusoidal"])
def test_model_coder_round_trip_is_exact_and_near_the_log_loss(positions):
    torch.manual_seed(0)
    cfg = replace(MINI, dim=16, layers=1, heads=2, chunk=48, positions=positions)
    model = Transformer(LMCompressionRecipe(cfg, None).model_config()).eval()
    chunks = torch.tensor([list(b"To be, or not to be, that is the question: whethe"[:48])] * 2)
    chunks[1] = torch.randint(0, 256, (48,))
    codes, ideal_bits = compress(model, chunks, incremental=True)
    assert torch.equal(decompress(model, codes, 48, torch.device("cpu")), chunks)
    coded_bits = 8 * sum(len(c) for c in codes)
    assert ideal_bits <= coded_bits <= ideal_bits + 2 * (2 + 8)  # per chunk: 2 bits + padding
    # one forward pass over the chunks (teacher forcing) predicts every byte from the same
    # prefixes: the same probabilities to float rounding, the same log-loss, and codes of the
    # same length to a byte (a last-bit difference can move a quantised count across a byte)
    with torch.no_grad():
        one = np.stack(list(_probabilities(model, chunks, incremental=False)))
        by_byte = np.stack(list(_probabilities(model, chunks, incremental=True)))
    assert np.abs(one - by_byte).max() < 1e-6
    one_pass, one_pass_bits = compress(model, chunks)
    assert one_pass_bits == pytest.approx(ideal_bits, rel=1e-5)
    for a, b in zip(one_pass, codes, strict=True):
        assert abs(len(a) - len(b)) <= 1


def test_training_windows_are_cut_from_the_training_bytes_and_fit_the_chunk():
    recipe = LMCompressionRecipe(replace(MINI, train_window=256), None)
    recipe.setup_data()
    assert recipe.train_windows.shape[1] == 256
    assert torch.equal(recipe.train_windows[1], recipe.train_bytes[256:512])
    with pytest.raises(UsageError, match="train_window"):
        LMCompressionRecipe(replace(MINI, train_window=4096), None).setup_data()


def test_preallocated_kv_cache_matches_the_growing_one_and_the_full_pass():
    """KVCache(capacity=n) writes keys in place (O(1) a token); fed token by token it gives the
    logits of the torch.cat cache and of one pass over the whole sequence."""
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=40, dim=16, layers=2, heads=2, ff_dim=32,
                                          max_len=32, positions="sinusoidal")).eval()  # fmt: skip
    tokens = torch.randint(0, 40, (3, 24))
    growing, preallocated = KVCache(), KVCache(capacity=24)
    with torch.no_grad():
        full = model(tokens)
        steps = [(model(tokens[:, :4], cache=growing), model(tokens[:, :4], cache=preallocated))]
        steps += [
            (model(tokens[:, t : t + 1], cache=growing),
             model(tokens[:, t : t + 1], cache=preallocated))
            for t in range(4, 24)
        ]  # fmt: skip
    grown, written = (torch.cat(s, dim=1) for s in zip(*steps, strict=True))
    assert torch.equal(grown, written) and preallocated.length == 24
    torch.testing.assert_close(written, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="capacity"):
        model(tokens[:, :1], cache=preallocated)


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
        "--set", "chunk=64", "--set", "train_window=32", "--set", "compress_chunks=3", "--set", "eval_chunks=2",
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
    assert m["decoded_bytes"] == 3 * 64 and m["decoded_code_bytes_gap"] == 0
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
