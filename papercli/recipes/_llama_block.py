"""The Llama-era decoder block shared by the StreamingLLM and Mistral recipes: pre-norm RMSNorm,
SwiGLU, rotary positions, no biases (Touvron et al. 2023, Sec. 2.2), at a mini size or one of the
paper sizes in SIZES."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from papercli.models.transformer import SIZES

# GPT-2 mini's largest size with Llama's block; SwiGLU's hidden width at 2/3 of 4·d (Llama, Sec. 2.2)
# and, with a 1,024-token vocabulary, tied embeddings
MINI_LLAMA = replace(
    SIZES["llama-2-7b"], dim=128, layers=4, heads=4, ff_dim=352, tie_embeddings=True
)
# the training both recipes share: at mini scale GPT-2 mini's (no samples written); at paper scale
# Llama 2's pre-training (Sec. 2.2, Table 1: AdamW 3e-4, 2,000 warm-up steps, 2T tokens in batches
# of 4M tokens), which Mistral does not disclose
MINI_TRAINING: dict[str, Any] = dict(
    batch_size=32, log_every=50, grad_clip=1.0, lr=3e-3, warmup_steps=30, sample_tokens=0
)
# Llama 2's pre-training as the paper states it (Sec. 2.1–2.2, Table 1): 2T tokens at 4M tokens
# per step, AdamW 3e-4 (7B/13B), 2,000 warm-up steps then cosine, clipping at 1.0; also llama-2's
# own paper scale
LLAMA2_PRETRAINING: dict[str, Any] = dict(
    dataset="text",
    vocab_size=32000,
    steps=500_000,
    micro_batch_size=1,
    lr=3e-4,
    warmup_steps=2000,
    log_every=100,
    grad_clip=1.0,
)
# ... and how the streaming-llm and mistral-7b recipes evaluate on top of it
LLAMA2_TRAINING: dict[str, Any] = dict(
    **LLAMA2_PRETRAINING, eval_every=2000, eval_sequences=256, sample_tokens=0, eval_streams=1
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
