"""Arithmetic coding: a predictive model plus this coder is a lossless compressor whose output is
within a few bits of the model's log-loss, −Σ log2 p(x_t | x_<t)  (Shannon's source coding
theorem; Delétang et al. 2023, "Language Modeling Is Compression", Sec. 2).

The coder is the integer coder of Witten, Neal & Cleary (1987, "Arithmetic coding for data
compression"): the interval [low, high] lives in `precision`-bit integers; each symbol narrows it
to its share of the cumulative frequencies, and whenever the interval sits in one half of the
range its leading bit is settled and shifted out (E1/E2 scaling); an interval straddling the
middle half is widened and the undecided bit counted as pending (E3 scaling). After scaling the
interval always spans more than a quarter of the range, so with frequency totals of at most
2^(precision − 2) every symbol of non-zero frequency keeps a non-empty sub-interval: decoding is
exact. The coder loses at most ~2 bits at termination plus ~1.44·V/2^(precision−2) bits per
symbol (V = alphabet size) to integer rounding — nothing measurable at 32-bit precision.

`quantize` turns a model's probabilities into integer frequencies that never give a symbol zero
mass (a byte the model deems impossible must still be codable), as the paper's coder does
before every symbol. Encoder and decoder must see the *same* frequencies: a model is run the same
way on both sides (see papercli.recipes.lm_compression).
"""

from __future__ import annotations

import numpy as np

PRECISION = 32  # bits of the coder's low/high registers (the paper's coder uses 32 as well)
FREQ_BITS = 24  # frequency tables sum to 2^24: probabilities keep ~7 significant digits


def quantize(probs: np.ndarray, total_bits: int = FREQ_BITS) -> np.ndarray:
    """Probabilities (..., V) -> cumulative integer frequencies (..., V + 1): cum[..., 0] = 0,
    cum[..., V] = 2**total_bits, and every symbol gets a frequency of at least 1.

    Each symbol first gets 1, then its share of the rest rounded down; the few counts the rounding
    leaves go to the most probable symbol, where they cost the least. Non-finite or all-zero rows
    become uniform."""
    p = np.asarray(probs, dtype=np.float64)
    vocab = p.shape[-1]
    total = 1 << total_bits
    if vocab > total:
        raise ValueError(f"{vocab} symbols do not fit a frequency total of 2^{total_bits}")
    p = np.where(np.isfinite(p) & (p > 0), p, 0.0)
    norm = p.sum(axis=-1, keepdims=True)
    p = np.where(norm > 0, p / np.where(norm > 0, norm, 1.0), 1.0 / vocab)
    freq = np.floor(p * (total - vocab)).astype(np.int64) + 1
    top = p.argmax(axis=-1)[..., None]
    deficit = total - freq.sum(axis=-1, keepdims=True)  # >= 0: the floors only round down
    np.put_along_axis(freq, top, np.take_along_axis(freq, top, axis=-1) + deficit, axis=-1)
    cum = np.zeros((*p.shape[:-1], vocab + 1), dtype=np.int64)
    np.cumsum(freq, axis=-1, out=cum[..., 1:])
    return cum


class _Interval:
    """The state encoder and decoder share: [low, high] in `precision`-bit integers."""

    def __init__(self, precision: int):
        if precision < 8:
            raise ValueError(f"precision must be at least 8 bits, got {precision}")
        self.precision = precision
        self.half = 1 << (precision - 1)
        self.quarter = 1 << (precision - 2)
        self.low, self.high = 0, (1 << precision) - 1

    def _narrow(self, cum: np.ndarray, symbol: int) -> None:
        """[low, high] <- the symbol's share [cum[s], cum[s+1]) of the cumulative total."""
        total, lo, hi = int(cum[-1]), int(cum[symbol]), int(cum[symbol + 1])
        if total > self.quarter:
            raise ValueError(
                f"frequency total {total} exceeds 2^{self.precision - 2}: "
                "a rare symbol could get an empty interval"
            )
        if hi <= lo:
            raise ValueError(f"symbol {symbol} has zero frequency and cannot be coded")
        span = self.high - self.low + 1
        self.high = self.low + span * hi // total - 1
        self.low = self.low + span * lo // total


class Encoder(_Interval):
    """Symbols in, bits out: `encode(cum, symbol)` per symbol, then `finish()`."""

    def __init__(self, precision: int = PRECISION):
        super().__init__(precision)
        self.pending = 0  # E3 scalings whose bit is settled by the next E1/E2 one
        self.bits: list[int] = []

    def _emit(self, bit: int) -> None:
        self.bits.append(bit)
        if self.pending:
            self.bits.extend([1 - bit] * self.pending)
            self.pending = 0

    def encode(self, cum: np.ndarray, symbol: int) -> None:
        self._narrow(cum, symbol)
        while True:
            if self.high < self.half:  # E1: in the lower half, the next bit is 0
                self._emit(0)
            elif self.low >= self.half:  # E2: in the upper half, the next bit is 1
                self._emit(1)
                self.low -= self.half
                self.high -= self.half
            elif self.low >= self.quarter and self.high < 3 * self.quarter:  # E3: middle half
                self.pending += 1
                self.low -= self.quarter
                self.high -= self.quarter
            else:
                return
            self.low, self.high = 2 * self.low, 2 * self.high + 1

    def finish(self) -> tuple[bytes, int]:
        """The code (bits packed big-endian into bytes, zero-padded) and its length in bits.
        Two more bits pick a point inside the final interval, whatever bits follow."""
        self.pending += 1
        self._emit(0 if self.low < self.quarter else 1)
        return np.packbits(np.array(self.bits, dtype=np.uint8)).tobytes(), len(self.bits)


class Decoder(_Interval):
    """Bits in, symbols out: `decode(cum)` with the same frequencies the encoder used."""

    def __init__(self, code: bytes, precision: int = PRECISION):
        super().__init__(precision)
        self._bits = np.unpackbits(np.frombuffer(code, dtype=np.uint8)).tolist()
        self._pos = 0
        self.value = 0
        for _ in range(precision):
            self.value = 2 * self.value + self._next_bit()

    def _next_bit(self) -> int:
        """The next code bit; past the end, zeros (the encoder's termination allows for it)."""
        pos, self._pos = self._pos, self._pos + 1
        return self._bits[pos] if pos < len(self._bits) else 0

    def decode(self, cum: np.ndarray) -> int:
        total = int(cum[-1])
        span = self.high - self.low + 1
        target = ((self.value - self.low + 1) * total - 1) // span
        symbol = int(np.searchsorted(cum, target, side="right")) - 1
        self._narrow(cum, symbol)
        while True:
            if self.high < self.half:
                pass
            elif self.low >= self.half:
                self.value -= self.half
                self.low -= self.half
                self.high -= self.half
            elif self.low >= self.quarter and self.high < 3 * self.quarter:
                self.value -= self.quarter
                self.low -= self.quarter
                self.high -= self.quarter
            else:
                return symbol
            self.low, self.high = 2 * self.low, 2 * self.high + 1
            self.value = 2 * self.value + self._next_bit()
