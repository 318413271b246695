"""FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness (Dao et al., 2022).

Claims checked (Sec. 3.1, Theorem 1; Fig. 3): tiling with an online softmax computes *exact*
attention, and with recomputation in the backward pass it needs O(N) extra memory where standard
attention's S and P need O(N²). The mini measures, on the CPU, FlashAttention's Algorithm 1 (forward)
and Algorithm 4 (backward) in plain PyTorch (`papercli/methods/flash_attention.py`) against
standard attention: outputs and gradients equal it to ≤ 1e-5 in fp32, and peak memory of forward +
backward over N = 1k…16k grows linearly (log-log slope ≈ 1) while standard attention's grows
quadratically (slope ≈ 2). No training: see `_flash_attention.py` for how the run is measured.

    mini   CPU, N = 1k, 2k, 4k, 8k, 16k, 1 head, d = 64, blocks 128 × 128, fp32
    paper  --gpu: the Triton kernel (FA1's parallelism over batch × heads) against naive attention
           and F.scaled_dot_product_attention, N = 128…16k, fp16, 16 heads × d 64, 16k tokens per
           batch (Fig. 3, left); the table is attention.md in the run directory
"""

from __future__ import annotations

from papercli.recipes._flash_attention import AttentionBenchRecipe, mini_config, paper_config
from papercli.reproduce.engine import run


class FlashAttentionRecipe(AttentionBenchRecipe):
    paper = "flash-attention"
    scales = {
        "mini": mini_config("flash"),
        "paper": paper_config(("triton_fa1", "sdpa", "standard")),
    }


if __name__ == "__main__":
    run(FlashAttentionRecipe)
