"""Mixtral of Experts (Jiang et al., 2024; arXiv 2401.04088), and Hugging Face's "Mixture of Experts
Explained" post (registry `moe`), which this recipe serves with its own checks.

Mixtral is Mistral 7B's block with each feed-forward layer replaced by 8 SwiGLU experts and a router
that sends every token to the top 2 (Sec. 2.1, Eq. 1–2): 46.7B parameters held, 12.9B used per
token. Claims checked at mini scale: a sparse Llama-style decoder (8 experts, top-2) beats a dense
one with the same active parameters per token — a single SwiGLU twice an expert's width, so a token
passes through as many feed-forward weights — trained side by side on the same batches and steps
(the sparse model's advantage at equal compute, Sec. 3 and Fig. 3); and, with the load-balancing
loss of Switch Transformers (Fedus et al. 2021, Eq. 4, coefficient α = 0.01) added, the router
spreads held-out tokens over the experts: every expert's share of the routed slots stays within
[0.5, 2]× uniform in every layer (the post: auxiliary losses stop the router from collapsing onto a
few experts). Total and active parameters are reported per arm.

The data. The sparse model's edge is capacity at equal compute: it shows when there is more to
learn than a dense model of that compute can store, and enough text not to overfit — the paper's
regime, web-scale pre-training. The 32 training plays are neither: on them (1,000 steps) the arms
were level within seed noise (held-out sparse − dense +0.006 / −0.033 nats, seeds 0 / 1), and at
2,000 steps sparse led by 0.054 on training loss but 0.002 held out, its extra experts overfitting.
So the mini trains on `dataset=markov` (papercli/data/markov.py), a synthetic language with
unlimited fresh samples and a known amount to learn: 8 "domains", each a random sparse Markov chain
over the same tokens (4 successors per token, Dirichlet(1) weights); a sequence opens with its
domain's tag. Predicting it means storing 8 × 1,016 (domain, token) → successors facts, keyed on a
token *and* its context, so they must live in the feed-forward layers (a first-order chain without
domains fits in the token embeddings: at 8 successors both arms reached the same loss, 0.06 nats
above the floor). No sequence is seen twice, so held-out loss measures capacity, and the source's
exact entropy is the floor: each arm also reports its loss above the true source's on the same
held-out sequences (`*_excess_loss`). `--set dataset=plays` trains on the plays as before.

    mini   d 64, 3 layers, 4 heads sharing 1 key/value head (GQA at heads / 4, as Mixtral's 32 / 8),
           RMSNorm, RoPE; sparse: 8 experts of SwiGLU hidden 88, top-2; dense: SwiGLU hidden 176;
           1,024 tokens (8 domain tags), 64-token context, 1,000 AdamW steps of 32 fresh sequences.
           Measured (seeds 0 / 1): held-out sparse 1.533 / 1.550, dense 1.832 / 1.824 nats
           (source entropy 1.176): sparse ahead by 0.299 / 0.274 nats, 0.37 / 0.39 nats above the
           true source's loss vs the dense arm's 0.67 / 0.66 (2 steps: 5.78); expert load
           [0.58, 1.55] / [0.56, 1.59]× uniform; active parameters 265,152 sparse (of 569,280),
           263,616 dense; 169 / 168 s user of one thread (OMP_NUM_THREADS=1; 578 / 594 s wall
           on the shared machine, so `seconds` failed there)
    paper  mixtral-8x7b (46.7B total, 12.9B active; Table 1), 32k context, 32,000-token BPE; text
           from --data PATH (a folder of .txt files). With --gpu the run also times one
           Mixtral-shaped MoE layer (dim 4096, 8 experts of 14336, top-2, bf16): tokens/s.
           Measured on one H200 (`--gpu`, mini): sparse ahead by 0.298 nats, load 0.66-1.64×
           uniform, 104 s; the MoE layer's forward 0.80 M tokens/s at 8,192 tokens, 0.82 M at 32,768
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from papercli.data.markov import DomainMixture, Sequences
from papercli.models.transformer import SIZES, MixtureOfExperts, Transformer, TransformerConfig
from papercli.recipes.llama2 import Llama2Config, Llama2Recipe
from papercli.reproduce.config import bounded
from papercli.reproduce.engine import run

MOE_ARMS = ("sparse", "dense")


@dataclass
class MixtralConfig(Llama2Config):
    arms: tuple[str, ...] = MOE_ARMS  # or mixtral-8x7b
    ff_dim: int = bounded(88, ge=1)  # an expert's SwiGLU hidden width (the dense arm: k times it)
    gqa_kv_heads: int = bounded(1, ge=1)  # key/value heads of both arms (Mixtral: 8 of 32)
    experts: int = bounded(8, ge=2)
    experts_per_token: int = bounded(2, ge=1)
    balance_coef: float = bounded(0.01, ge=0.0)  # α of the load-balancing loss (Switch: 0.01)
    moe_bench_tokens: int = bounded(8192, ge=1)  # --gpu: tokens per timed pass of the MoE layer
    # dataset "markov": text from fixed random sparse Markov chains (papercli/data/markov.py)
    markov_domains: int = bounded(8, ge=1)  # chains mixed, each sequence tagged with its own
    markov_branching: int = bounded(4, ge=1)  # successors per (domain, token): the facts to store
    markov_seed: int = 0  # fixes the chain; its samples are drawn from the next two seeds


# smaller and longer than the Llama mini, since the experts (each sees ~k/n of the tokens) start
# behind the dense FFN; on Markov text (see the docstring for why not the plays)
MINI = MixtralConfig(
    dataset="markov",
    dim=64,
    heads=4,
    gqa_kv_heads=1,
    ff_dim=88,
    steps=1000,
    batch_size=32,
    eval_every=250,
    log_every=50,
    grad_clip=1.0,
)
PAPER = MixtralConfig(
    dataset="text",
    arms=("mixtral-8x7b",),
    vocab_size=32000,
    context=32768,  # Sec. 2: "a context length of 32k tokens"
    steps=500_000,  # the paper gives no training budget; Llama 2's 2T tokens at 4M per step
    batch_size=128,  # 4M tokens per step at 32k tokens per sequence
    micro_batch_size=1,
    lr=3e-4,
    warmup_steps=2000,
    eval_every=5000,
    log_every=100,
    grad_clip=1.0,
    eval_sequences=64,
    prompt_tokens=4096,
    experts=8,
    experts_per_token=2,
)


def model_of(arm: nn.Module) -> Transformer:
    """The Transformer inside an arm, through DDP or torch.compile wrappers."""
    return next(m for m in arm.modules() if isinstance(m, Transformer))


@torch.no_grad()
def moe_tokens_per_s(
    cfg: TransformerConfig, tokens: int, device: torch.device, dtype: torch.dtype, repeats: int = 5
) -> float:
    """Forward throughput of one mixture-of-experts layer of shape `cfg` (router, top-k, experts)
    on `tokens` random activations: built directly on `device`, one warm-up pass, then timed."""
    with torch.device(device):
        layer = MixtureOfExperts(cfg).to(dtype).eval()
        x = torch.randn(tokens, cfg.dim, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    layer(x)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        layer(x)
    sync()
    return tokens * repeats / (time.perf_counter() - start)


class MixtralRecipe(Llama2Recipe):
    # top-2 of 8 experts per token: an expert may get no token of a micro-batch, so under DDP
    # its parameters have no gradient in that step
    ddp_find_unused = True

    paper = "mixtral"
    config_class = MixtralConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: MixtralConfig

    # --- data: the plays, a text folder, or random sparse Markov chains ------------------------
    def data_source(self) -> str:
        if self.cfg.dataset != "markov":
            return super().data_source()
        return (
            f"markov: {self.cfg.markov_domains} random sparse Markov chains over "
            f"{self.cfg.vocab_size} tokens, {self.cfg.markov_branching} successors per token "
            f"(seed {self.cfg.markov_seed}), fresh samples every step"
        )

    def dataset_name(self) -> str | None:
        # generated on the fly: nothing a machine must have
        return None if self.cfg.dataset == "markov" else super().dataset_name()

    def setup_data(self) -> None:
        cfg = self.cfg
        if cfg.dataset != "markov":
            return super().setup_data()
        self.tokenizer = None
        self.source = DomainMixture.random(
            cfg.vocab_size, cfg.markov_domains, cfg.markov_branching, cfg.markov_seed
        )
        rows = cfg.steps * cfg.batch_size  # no sequence is seen twice
        self.train_windows = Sequences(
            self.source.sample(rows, cfg.context + 1, cfg.markov_seed + 1)
        )
        held = self.source.sample(cfg.eval_sequences, cfg.context + 1, cfg.markov_seed + 2)
        self.held_windows = Sequences(held)

    def base_arm(self, name: str) -> TransformerConfig:
        cfg = self.cfg
        block = replace(self.mini_block(), kv_heads=cfg.gqa_kv_heads)
        if name == "sparse":
            k = cfg.experts_per_token
            return replace(block, experts=cfg.experts, experts_per_token=k)
        if name == "dense":  # one FFN as wide as the k experts a token passes through
            return replace(block, ff_dim=cfg.experts_per_token * cfg.ff_dim)
        if name == "mixtral-8x7b":
            return SIZES[name]
        raise ValueError(
            f"unknown Mixtral arm '{name}' (mini: {', '.join(MOE_ARMS)}; mixtral-8x7b)"
        )

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Each arm's LM loss, plus α × the load-balancing loss of every sparse arm's layers."""
        losses = super().loss(model, batch)
        for name, arm in model.items():
            net = model_of(arm)
            if net.cfg.experts:
                losses[f"{name}_balance"] = self.cfg.balance_coef * net.aux_loss()
        return losses

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out losses, and each sparse arm's expert load over the same held-out windows:
        the share of routed slots per (layer, expert), as a multiple of the uniform share."""
        loads: dict[str, list[tuple[int, torch.Tensor]]] = {}
        hooks = []
        for name, arm in model.items():
            for i, moe in enumerate(m for m in arm.modules() if isinstance(m, MixtureOfExperts)):

                def keep(mod, args, out, key=(name, i)):
                    loads.setdefault(key, []).append((args[0].shape[:-1].numel(), mod.load))

                hooks.append(moe.register_forward_hook(keep))
        try:
            m = super().evaluate(model)
        finally:
            for h in hooks:
                h.remove()
        by_arm: dict[str, list[torch.Tensor]] = {}
        for (name, _), passes in loads.items():
            tokens = sum(n for n, _ in passes)
            share = sum(n * load for n, load in passes) / tokens
            by_arm.setdefault(name, []).append(share * len(share))
        for name, ratios in by_arm.items():
            table = torch.stack(ratios)  # (layers, experts), 1 = uniform
            m[f"{name}_expert_load_max"] = table.max().item()
            m[f"{name}_expert_load_min"] = table.min().item()
        return m

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        for name, arm in model.items():
            net = model_of(arm)
            m[f"{name}_total_params"] = float(sum(p.numel() for p in net.parameters()))
            m[f"{name}_active_params"] = float(net.active_parameters())
        if {"sparse", "dense"} <= set(model):
            m["dense_minus_sparse_loss"] = m["dense_heldout_loss"] - m["sparse_heldout_loss"]
            # the comparison is fair only at equal compute per token (the router adds d × n)
            m["active_param_ratio"] = m["sparse_active_params"] / m["dense_active_params"]
            m["sparse_total_over_active"] = m["sparse_total_params"] / m["sparse_active_params"]
        if self.cfg.dataset == "markov":  # the distance from the best possible model
            floor = self.source.nll(self.held_windows.rows)
            m["source_entropy"] = self.source.entropy_per_token(self.cfg.context)
            for name in model:
                m[f"{name}_excess_loss"] = m[f"{name}_heldout_loss"] - floor
        if self.ctx.device.type == "cuda":  # Mixtral's own layer shape, in bf16
            m["moe_layer_tokens_per_s"] = moe_tokens_per_s(
                SIZES["mixtral-8x7b"], self.cfg.moe_bench_tokens, self.ctx.device, torch.bfloat16
            )
        return m

    def plots(self, model: nn.Module, run_dir) -> None:
        if self.tokenizer is not None:  # Markov text has no words to show
            super().plots(model, run_dir)


if __name__ == "__main__":
    run(MixtralRecipe)
