"""Llama 2: Open Foundation and Fine-Tuned Chat Models (Touvron et al., 2023; arXiv 2307.09288).

The Llama block (Sec. 2.2: "pre-normalization using RMSNorm, the SwiGLU activation function, and
rotary positional embeddings") and the paper's grouped-query attention ablation (Sec. 2.2, Appendix
A.2.1, Table 18): GQA keeps multi-head attention's quality while its key/value cache, what bounds
inference memory, shrinks by heads / kv_heads.

Claim checked at mini scale: three Llama decoders trained side by side on identical batches of the
plays — multi-head (`mha`, a key/value head per query head), grouped-query (`gqa`, heads / 4
key/value heads) and multi-query (`mqa`, one) — with the feed-forward widened in the GQA and MQA
arms so the three have the same parameter count (A.2.1: "we increase the dimension of the
feed-forward layers to compensate for the reduction in the attention layers"). GQA's held-out loss
is within a margin of MHA's, and its KV cache, measured with `KVCache.bytes()` after the same
held-out prompt, is smaller by the head ratio.

    mini   d 128, 3 layers, 8 heads (head dim 16), SwiGLU hidden 352 for MHA (~8/3 d, Llama's ratio)
           widened to keep parameters equal; 1,024-token BPE, 64-token context, 250 AdamW steps of 32
    paper  llama-2-7b / 13b / 70b (6.74B / 13.0B / 69.0B; Table 1, GQA only in 70B), 4,096-token
           context, 4M tokens per batch, 32,000-token BPE; text from --data PATH (a folder of .txt
           files); --set arms=llama-2-7b for one size
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from papercli.models.transformer import SIZES, KVCache, Transformer, TransformerConfig
from papercli.recipes._llama_block import LLAMA2_PRETRAINING
from papercli.recipes.gpt2 import GPT2Config, GPT2Recipe
from papercli.reproduce.config import bounded
from papercli.reproduce.engine import run

# Table 1's block, without the 7B sizes: pre-norm RMSNorm, SwiGLU, RoPE, no biases, untied output
LLAMA_BLOCK = replace(SIZES["llama-2-7b"], dim=128, layers=3, heads=8, ff_dim=352)
ATTENTION_ARMS = ("mha", "gqa", "mqa")


@dataclass
class Llama2Config(GPT2Config):
    arms: tuple[str, ...] = ATTENTION_ARMS  # or llama-2-7b / 13b / 70b
    dim: int = bounded(LLAMA_BLOCK.dim, ge=8)
    layers: int = bounded(LLAMA_BLOCK.layers, ge=1)
    heads: int = bounded(LLAMA_BLOCK.heads, ge=1)
    ff_dim: int = bounded(LLAMA_BLOCK.ff_dim, ge=1)  # SwiGLU hidden of the MHA arm
    gqa_kv_heads: int = bounded(2, ge=1)  # heads / 4 (the 70B model: 64 heads, 8 kv heads)
    prompt_tokens: int = bounded(64, ge=1)  # the KV cache is measured after this prompt


MINI = Llama2Config(steps=250, batch_size=32, eval_every=125, log_every=25, grad_clip=1.0)
PAPER = Llama2Config(
    arms=("llama-2-7b", "llama-2-13b", "llama-2-70b"),
    context=4096,
    batch_size=1024,  # Sec. 2.2: "a global batch-size of 4M tokens"
    eval_every=5000,
    eval_sequences=512,
    prompt_tokens=4096,
    # 2T tokens (Sec. 2.1) at 4M a step; lr 3e-4 for 7B/13B (Table 1: 1.5e-4 for 34B/70B);
    # "warmup of 2000 steps", cosine decay (Sec. 2.2)
    **LLAMA2_PRETRAINING,
)


def kv_heads_of(arm: str, cfg: Llama2Config) -> int:
    return {"mha": cfg.heads, "gqa": cfg.gqa_kv_heads, "mqa": 1}[arm]


def widened_ff(block: TransformerConfig, kv_heads: int) -> int:
    """The SwiGLU hidden width that gives back the parameters fewer key/value heads save: each
    layer loses 2 · dim · (heads − kv_heads) · head_dim in its key/value projection, and each
    hidden unit of a bias-free SwiGLU costs 3 · dim (gate, value and output weights)."""
    saved = 2 * block.dim * (block.heads - kv_heads) * block.head_dim
    return block.ff_dim + round(saved / (3 * block.dim))


class Llama2Recipe(GPT2Recipe):
    paper = "llama-2"
    config_class = Llama2Config
    scales = {"mini": MINI, "paper": PAPER}
    cfg: Llama2Config

    def mini_block(self) -> TransformerConfig:
        """The Llama block at this run's mini size (before the arm's attention)."""
        cfg = self.cfg
        return replace(
            LLAMA_BLOCK, dim=cfg.dim, layers=cfg.layers, heads=cfg.heads, ff_dim=cfg.ff_dim
        )

    def base_arm(self, name: str) -> TransformerConfig:
        if name in ATTENTION_ARMS:
            block, kv = self.mini_block(), kv_heads_of(name, self.cfg)
            return replace(block, kv_heads=kv, ff_dim=widened_ff(block, kv))
        if name.startswith("llama-2-") and name in SIZES:
            return SIZES[name]
        raise ValueError(
            f"unknown Llama 2 arm '{name}' (mini: {', '.join(ATTENTION_ARMS)}; llama-2-*)"
        )

    # --- the KV cache after one prompt ----------------------------------------------------------
    @torch.no_grad()
    def kv_cache_bytes(self, arm: Transformer) -> int:
        """Bytes of keys and values an arm caches after the first `prompt_tokens` held-out tokens."""
        n = min(self.cfg.prompt_tokens, self.cfg.context)
        prompt = self.held_windows.tokens[:n][None].to(self.ctx.device)
        cache = KVCache()
        arm.eval()(prompt, cache=cache)
        return cache.bytes()

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        params = {}
        for name, arm in model.items():
            m[f"{name}_kv_cache_bytes"] = float(self.kv_cache_bytes(arm))
            params[name] = sum(p.numel() for p in arm.parameters())
        # the comparison is fair only if the arms are the same size (A.2.1)
        m["arm_param_spread"] = max(params.values()) / min(params.values()) - 1
        if "mha" in model:
            for name in ("gqa", "mqa"):
                if name in model:
                    m[f"{name}_minus_mha_loss"] = m[f"{name}_heldout_loss"] - m["mha_heldout_loss"]
                    m[f"{name}_kv_cache_shrink"] = (
                        m["mha_kv_cache_bytes"] / m[f"{name}_kv_cache_bytes"]
                    )
        return m


if __name__ == "__main__":
    run(Llama2Recipe)
