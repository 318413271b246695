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

Measured at paper scale on one NVIDIA H200 (torch 2.11, Triton 3.6; `--gpu --scale paper`, forward +
backward, fp16, 16 heads × d 64, batch = 16,384 / N; median of 10 CUDA-event timings, ms):
      N      FA1 kernel  FA2 kernel  SDPA    standard   standard MiB
      128        0.74        1.07      0.40      0.68        256
      1k         2.56        2.77      0.75      2.46      2,048
      2k         7.27        4.78      1.24      4.65      4,096
      4k        25.2         8.51      2.23     10.0       8,192
      8k        96.0        16.1       4.25     21.3      16,384
      16k      374          30.9       8.21     33.2      32,768
Peak extra memory stays flat with N: FA1 226 MiB, FA2 321, SDPA 99. Both kernels are exact (the
fp32 check passes on the GPU too). FA2's kernel beats FA1's (geometric mean over N: REPRODUCED,
94 s), and beats standard attention from N = 4k (1.07× at 16k); PyTorch's SDPA (cuDNN / FA kernels
tuned for Hopper) is 3.8× faster than it at 16k. FA1's kernel is NOT faster than standard attention
at long N (11× slower at 16k, 0.09× "speed-up"): with batch × heads programs only, N = 16k at
16k tokens per batch leaves 16 programs for 132 multiprocessors — exactly the weakness FA2
Sec. 3.2 names ("long sequences, which usually means small batch sizes or small number of heads")
— and Algorithm 1's loop order re-reads and re-writes O_i, ℓ_i, m_i once per K/V block. The
paper's CUDA kernel on an A100 did beat standard attention there; ours, on this setting, does not.
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
