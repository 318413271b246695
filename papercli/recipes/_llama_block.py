"""The Llama-era decoder block shared by the StreamingLLM and Mistral recipes: pre-norm RMSNorm,
SwiGLU, rotary positions, no biases (Touvron et al. 2023, Sec. 2.2), at a mini size or one of the
paper sizes in SIZES."""

from __future__ import annotations

from dataclasses import replace

from papercli.models.transformer import SIZES, TransformerConfig

# GPT-2 mini's largest size with Llama's block; SwiGLU's hidden width at 2/3 of 4·d (Llama, Sec. 2.2)
MINI_LLAMA = TransformerConfig(
    dim=128,
    layers=4,
    heads=4,
    ff_dim=352,
    positions="rope",
    norm_type="rms",
    activation="swiglu",
    bias=False,
)


def llama_block(size: str, *, vocab_size: int, context: int, dropout: float, **overrides):
    """`size` "mini" (MINI_LLAMA) or a rotary-position model of SIZES, for this vocabulary and
    training context; `overrides` change any other field (window, kv_heads …)."""
    if size == "mini":
        base = MINI_LLAMA
    elif size in SIZES and SIZES[size].positions == "rope":
        base = SIZES[size]
    else:
        rope = ", ".join(n for n, c in SIZES.items() if c.positions == "rope")
        raise ValueError(f"unknown size '{size}' (mini, or one of {rope})")
    return replace(base, vocab_size=vocab_size, max_len=context, dropout=dropout, **overrides)
