"""What Swin's window attention costs against global attention as the image grows (Sec. 3.2).

    Ω(MSA)   = 4hwC² + 2(hw)²C        (1)  quadratic in the number of tokens hw
    Ω(W-MSA) = 4hwC² + 2M²hwC         (2)  linear in hw for a fixed window size M

Counted, not taken from the formulas: one (S)W-MSA sublayer of `models/swin.py`
(`SwinBlock.attend`: cyclic shift, window partition, attention with the relative position bias and
mask, reverse shift) runs on the meta device under torch's `FlopCounterMode`, which adds up every
matrix product it executes (the qkv and output projections, QKᵀ and AV; 2 FLOPs per multiply-add).
Global attention is the same sublayer with one window covering the whole map. The meta device has
shapes but no data, so a 224 x 224-token map under global attention (a 50k x 50k matrix per head)
is counted in milliseconds. `attention_seconds` times the same sublayers on real tensors, on the
CPU, where global attention still fits.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from papercli.models.swin import SwinBlock, SwinConfig


def attention_layer(side: int, dim: int, heads: int, window: int) -> SwinBlock:
    """A shifted-window block over a side x side map (window = side: global attention)."""
    return SwinBlock(SwinConfig(dim=dim, window=window), dim, heads, side, window // 2, 0.0)


def attention_flops(side: int, dim: int, heads: int, window: int) -> int:
    """FLOPs of one (S)W-MSA pass over a side x side map of `dim` channels (batch 1)."""
    with torch.device("meta"):
        layer = attention_layer(side, dim, heads, window)
        x = torch.empty(1, side, side, dim)
        with FlopCounterMode(display=False) as counter:
            layer.attend(x)
    return counter.get_total_flops()


def paper_multiply_adds(side: int, dim: int, window: int) -> int:
    """Eq. 1 (window = side) and Eq. 2 of the paper, in multiply-adds."""
    hw = side * side
    return 4 * hw * dim**2 + 2 * window**2 * hw * dim


def attention_seconds(side: int, dim: int, heads: int, window: int, repeats: int = 3) -> float:
    """Median wall time of one forward (S)W-MSA pass on the CPU, batch 1, after a warm-up."""
    layer = attention_layer(side, dim, heads, window)
    x = torch.randn(1, side, side, dim, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        layer.attend(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            layer.attend(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)
