"""The arithmetic coder: exact round trips on random data under random (also very peaked, also
zero-probability) distributions, a code length within a few bits of −Σ log2 p, and frequency
tables that never give a symbol zero mass."""

from __future__ import annotations

import math

import numpy as np
import pytest

from papercli.methods.arithmetic_coding import FREQ_BITS, Decoder, Encoder, quantize


def _random_source(rng: np.random.Generator, n: int, vocab: int):
    """n distributions (Dirichlet with concentrations from 0.01, very peaked, to 10, nearly
    flat), some with exact zeros, and a symbol drawn from each."""
    alpha = rng.choice([0.01, 0.1, 1.0, 10.0], size=n)[:, None]
    probs = rng.gamma(np.broadcast_to(alpha, (n, vocab)))
    probs[rng.random((n, vocab)) < 0.05] = 0.0  # symbols the model deems impossible
    probs[np.arange(n), rng.integers(0, vocab, n)] += 1e-3  # every row has some mass
    probs /= probs.sum(axis=1, keepdims=True)
    symbols = np.array([rng.choice(vocab, p=p) for p in probs])
    return probs, symbols


def _roundtrip(cums: np.ndarray, symbols: np.ndarray, precision: int = 32):
    enc = Encoder(precision)
    for cum, s in zip(cums, symbols, strict=True):
        enc.encode(cum, int(s))
    code, nbits = enc.finish()
    dec = Decoder(code, precision)
    return [dec.decode(cum) for cum in cums], code, nbits


@pytest.mark.parametrize(("seed", "vocab"), [(0, 256), (1, 2), (2, 17), (3, 256)])
def test_random_data_round_trips_within_a_few_bits_of_the_log_loss(seed, vocab):
    rng = np.random.default_rng(seed)
    probs, symbols = _random_source(rng, 3000, vocab)
    cums = quantize(probs)
    decoded, code, nbits = _roundtrip(cums, symbols)
    assert decoded == symbols.tolist()
    assert len(code) == math.ceil(nbits / 8)
    ideal = -np.log2(probs[np.arange(len(symbols)), symbols]).sum()  # the model's log-loss
    assert ideal - 1 <= nbits <= ideal + 4, (nbits, ideal)


def test_symbols_the_model_gave_zero_probability_still_code_exactly():
    rng = np.random.default_rng(7)
    probs = np.zeros((200, 256))
    probs[:, 0] = 1.0  # the model is certain of byte 0 …
    symbols = rng.integers(1, 256, 200)  # … and every symbol is something else
    decoded, _, nbits = _roundtrip(quantize(probs), symbols)
    assert decoded == symbols.tolist()
    assert nbits <= 200 * FREQ_BITS + 2  # each surprise costs at most log2(2^24) bits


def test_certain_symbols_cost_almost_nothing_and_empty_input_codes():
    probs = np.full((1000, 4), 1e-12)
    probs[:, 2] = 1.0
    decoded, _, nbits = _roundtrip(quantize(probs), np.full(1000, 2))
    assert decoded == [2] * 1000 and nbits <= 4
    enc = Encoder()
    code, nbits = enc.finish()
    assert nbits == 2 and len(code) == 1


def test_lower_precision_round_trips_and_rejects_totals_it_cannot_hold():
    rng = np.random.default_rng(3)
    probs, symbols = _random_source(rng, 500, 50)
    decoded, _, _ = _roundtrip(quantize(probs, total_bits=10), symbols, precision=12)
    assert decoded == symbols.tolist()
    with pytest.raises(ValueError, match="exceeds"):
        Encoder(precision=16).encode(quantize(probs[0], total_bits=15), 0)


def test_quantize_never_gives_zero_mass_and_sums_to_the_total():
    rng = np.random.default_rng(5)
    probs, _ = _random_source(rng, 100, 256)
    probs[0] = 0.0  # all-zero and non-finite rows fall back to uniform
    probs[1, 3] = np.nan
    cum = quantize(probs, total_bits=16)
    freq = np.diff(cum, axis=-1)
    assert (freq >= 1).all() and (cum[:, -1] == 1 << 16).all() and (cum[:, 0] == 0).all()
    assert (freq[0] == freq[0, 0]).all()  # uniform
    # a well-specified row loses almost nothing to quantisation (KL < 0.001 bits)
    p = probs[5]
    kl = np.sum(p[p > 0] * np.log2(p[p > 0] / (freq[5][p > 0] / (1 << 16))))
    assert kl < 1e-3
    with pytest.raises(ValueError, match="do not fit"):
        quantize(np.ones(300) / 300, total_bits=8)
    with pytest.raises(ValueError, match="zero frequency"):
        Encoder().encode(np.array([0, 5, 5, 10]), 1)
