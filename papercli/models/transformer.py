"""One transformer family for the language papers, built from named options (torchtune's component
builders, nanoGPT's readability): decoder-only (GPT, GPT-2), encoder-only (BERT, RoBERTa) and
encoder-decoder (the Transformer of Vaswani et al., T5) are the same blocks arranged differently.

Options: learned or sinusoidal positions (Attention Is All You Need, Sec. 3.5) or T5's relative
position bias (Raffel et al. 2019, Sec. 2.1), pre- or post-norm (the original Transformer and BERT
normalise after each residual sum; GPT-2 moves LayerNorm to each block's input, Radford et al.
2019, Sec. 2.3), LayerNorm or RMSNorm (T5: scale only, no mean subtraction, no bias), GELU or ReLU
feed-forward, bias-free dense layers, tied input/output embeddings, and a KV cache for generation.
BERT's extras (Devlin et al. 2018, Sec. 3 and the released code) are options too: segment
(token-type) embeddings, a LayerNorm over the embedding sum, the tanh pooler over one position,
and the masked-LM head's transform (dense, GELU, LayerNorm) with an output bias. The Llama-era
options: rotary positions (RoPE, Su et al. 2021), the SwiGLU feed-forward (Shazeer 2020),
grouped-query attention (Ainslie et al. 2023: `kv_heads` < `heads`), sliding-window attention
with a rolling KV cache (Mistral 7B, Sec. 2), attention sinks in that cache (StreamingLLM,
Xiao et al. 2023, Sec. 3.2) and sparse mixtures of experts with top-k routing (Mixtral, Sec. 2.1).

Attention runs through `F.scaled_dot_product_attention` (fused kernels on GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Init = Literal["normal", "unit-scaling", "t5"]  # TransformerConfig.init


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = 50257
    dim: int = 768  # d_model
    layers: int = 12  # per stack (encoder and decoder each, for encoder-decoder)
    heads: int = 12
    ff_dim: int = 3072  # d_ff
    max_len: int = 1024  # context length (learned positions)
    arch: Literal["decoder", "encoder", "encoder-decoder"] = "decoder"
    positions: Literal["learned", "sinusoidal", "relative", "rope"] = "learned"
    norm: Literal["pre", "post"] = "pre"
    norm_type: Literal["layer", "rms"] = "layer"  # LayerNorm, or RMSNorm (T5, Llama)
    activation: Literal["gelu", "relu", "swiglu"] = "gelu"
    dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = True  # output projection = token embedding (GPT-2; Vaswani Sec. 3.4)
    norm_eps: float = 1e-5
    segments: int = 0  # token-type embeddings (BERT: 2 for sentence A/B; RoBERTa keeps 1)
    embed_norm: bool = False  # LayerNorm over token + position (+ segment) embeddings (BERT)
    pooler: bool = False  # tanh(W h + b) over one position, for classifiers (BERT's [CLS])
    mlm_head: bool = False  # dense + GELU + LayerNorm before the output layer, + output bias
    attn_dim: int = 0  # heads × d_kv where that differs from dim (T5-3B/11B); 0: dim
    relative_buckets: int = 32  # positions="relative": buckets per stack (T5, Sec. 2.1)
    relative_max_distance: int = 128  # beyond it, all distances share the last bucket
    kv_heads: int = (
        0  # grouped-query attention: key/value heads shared by groups of queries; 0: heads
    )
    rope_theta: float = 10000.0  # positions="rope": the base of the rotation frequencies
    window: int = 0  # sliding-window attention: each token sees itself and window − 1 before it
    experts: int = 0  # a sparse mixture of this many feed-forward experts per block; 0: dense
    experts_per_token: int = 2  # top-k routing (Mixtral: 2 of 8)
    # "normal": every weight N(0, 0.02) (GPT-2, BERT). "unit-scaling": the Transformer's
    # released code (tensor2tensor's transformer_base: uniform_unit_scaling, gain 1) — dense
    # weights uniform in ±√(3 / fan_in), variance 1 / fan_in, and token embeddings N(0, d^-0.5),
    # which the √d_model scaling of Sec. 3.4 brings to unit variance beside the sinusoids.
    # "t5": Mesh TensorFlow's T5 (transformer_layers.py / the released checkpoints; Hugging
    # Face's T5 `_init_weights` copies it) — token embeddings N(0, 1); per layer q N(0,
    # (d·d_kv)^-0.5), k and v N(0, d^-0.5), o N(0, (heads·d_kv)^-0.5), FFN in N(0, d^-0.5) and
    # out N(0, d_ff^-0.5); relative position biases N(0, d^-0.5); attention logits q·k with no
    # 1/√d_kv (folded into q's init); a tied output layer reads the final states times d^-0.5, so
    # the unit-variance embeddings give unit-variance logits
    init: Init = "normal"

    @property
    def head_dim(self) -> int:
        return (self.attn_dim or self.dim) // self.heads

    @property
    def key_value_heads(self) -> int:
        return self.kv_heads or self.heads


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, per decoder layer: each new token attends to
    them instead of recomputing the whole prefix (generation costs O(n) per token, not O(n²)).

    `window` > 0 makes it a rolling buffer (Mistral 7B, Sec. 2, Fig. 2): a token sees at most
    `window` keys including its own, and keys no later token can see are evicted, so the cache
    never holds more than `window` − 1 tokens. `sinks` keeps the first tokens forever
    (StreamingLLM's attention sinks, Sec. 3.2): a token then sees the sinks and the most recent
    `window` − `sinks` tokens. With rotary positions the keys are cached before rotation and
    rotated by their place in the cache, so distances never exceed the window (StreamingLLM:
    "positions within the cache rather than those in the original text").

    `capacity` > 0 (no window) preallocates room for that many tokens and writes each new key and
    value in place: O(1) work per token instead of a `torch.cat` that copies the whole cache, which
    made feeding a long sequence token by token O(n²) (the arithmetic decoder of lm-compression)."""

    window: int = 0
    sinks: int = 0
    capacity: int = 0
    keys: list[torch.Tensor | None] = field(default_factory=list)
    values: list[torch.Tensor | None] = field(default_factory=list)
    positions: list[torch.Tensor | None] = field(default_factory=list)  # absolute, per key
    seen: int = 0  # tokens fed so far (the next token's absolute position)

    def __post_init__(self) -> None:
        if self.sinks and not self.window:
            raise ValueError("attention sinks need a window")
        if self.window and self.window <= self.sinks:
            raise ValueError(f"window {self.window} must exceed sinks {self.sinks}")
        if self.capacity and self.window:
            raise ValueError("a preallocated cache (capacity) cannot also be a rolling window")

    @property
    def length(self) -> int:
        """Tokens held now (bounded by the window when there is one)."""
        if self.capacity:
            return self.seen
        return 0 if not self.keys or self.keys[0] is None else self.keys[0].shape[2]

    def write(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A preallocated cache: store the new keys and values (B, h, t, d) after the `seen`
        ones; views of all of them so far."""
        start, end = self.seen, self.seen + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"{end} tokens exceed the cache's capacity of {self.capacity}")
        if self.keys[layer] is None:
            shape = (k.shape[0], k.shape[1], self.capacity, k.shape[3])
            self.keys[layer], self.values[layer] = k.new_empty(shape), v.new_empty(shape)
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def bytes(self) -> int:
        """Memory the cached keys and values take."""
        held = [t for t in (*self.keys, *self.values) if t is not None]
        return sum(t.numel() * t.element_size() for t in held)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(…)  (Vaswani et al., Sec. 3.5)."""
    return sinusoidal_embedding(torch.arange(length, dtype=torch.float32), dim)


def sinusoidal_embedding(pos: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(…, dim) sin/cos features of real-valued positions `pos` (…): channel 2i is
    sin(pos / base^(2i/dim)), channel 2i + 1 the cosine of the same angle. DETR's 2-D encoding
    applies it to normalised row and column coordinates (Carion et al. 2020, Sec. 3.2)."""
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))
    angle = pos.float()[..., None] * inv.to(pos.device)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2)


def make_norm(cfg: TransformerConfig) -> nn.Module:
    """LayerNorm, or RMSNorm: x / rms(x) · g, no mean subtraction and no bias (T5's layer norm,
    Raffel et al. Sec. 2.1: "a simplified version of layer normalization")."""
    if cfg.norm_type == "rms":
        return nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)


def rotate(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding (RoPE; Su et al. 2021, Eq. 34): each pair of channels of a query or
    key at position m turns by the angle m·θ_i, θ_i = theta^(−2i/d), so q·k depends only on the
    distance between them. Pairs are (i, i + d/2), the GPT-NeoX / Hugging Face Llama layout;
    computed in fp32, the angles in fp64 (fp32 loses ~m·6e-8 rad at position m; not on MPS).
    x (B, H, T, d), positions (T,)."""
    half = x.shape[-1] // 2
    wide = torch.float32 if x.device.type == "mps" else torch.float64
    inv = theta ** (-torch.arange(half, device=x.device, dtype=wide) / half)
    angle = positions.to(device=x.device, dtype=wide)[:, None] * inv
    cos, sin = angle.cos().float(), angle.sin().float()
    x1, x2 = x.float()[..., :half], x.float()[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


def visible(
    query_pos: torch.Tensor, key_pos: torch.Tensor, window: int = 0, sinks: int = 0
) -> torch.Tensor:
    """(queries, keys) True where a query may attend a key: causal, and within the window
    (the `sinks` first tokens stay visible to every later token)."""
    q, k = query_pos[:, None], key_pos[None, :]
    allowed = k <= q
    if window:
        allowed &= (q - k < window - sinks) | (k < sinks)
    return allowed


class RelativePositionBias(nn.Module):
    """T5's position encoding (Raffel et al. 2019, Sec. 2.1): a learned scalar per head and
    relative-distance bucket, added to the attention logits; one table per stack, shared by its
    layers. Buckets are exact for short distances and logarithmic up to `relative_max_distance`;
    the encoder's (bidirectional) table splits them between keys before and after the query."""

    def __init__(self, cfg: TransformerConfig, *, bidirectional: bool):
        super().__init__()
        self.buckets, self.max_distance = cfg.relative_buckets, cfg.relative_max_distance
        self.bidirectional = bidirectional
        self.bias = nn.Embedding(cfg.relative_buckets, cfg.heads)

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        """Bucket of each (key − query) distance."""
        buckets, out = self.buckets, torch.zeros_like(relative)
        if self.bidirectional:
            buckets //= 2
            out = (relative > 0).long() * buckets
            distance = relative.abs()
        else:  # a causal decoder only looks back
            distance = (-relative).clamp(min=0)
        exact = buckets // 2
        log = (
            exact
            + (
                torch.log(distance.float().clamp(min=1) / exact)
                / math.log(self.max_distance / exact)
                * (buckets - exact)
            ).long()
        )
        return out + torch.where(distance < exact, distance, log.clamp(max=buckets - 1))

    def forward(self, queries: int, keys: int, offset: int = 0) -> torch.Tensor:
        """Additive bias (1, heads, queries, keys); the queries sit at offset … offset+queries−1."""
        dev = self.bias.weight.device
        q = torch.arange(offset, offset + queries, device=dev)[:, None]
        relative = torch.arange(keys, device=dev)[None, :] - q
        return self.bias(self.bucket(relative)).permute(2, 0, 1)[None]


class Attention(nn.Module):
    """Multi-head attention (Sec. 3.2.2): self-attention, or cross-attention to `memory`. With
    `kv_heads` < `heads`, each key/value head serves a group of query heads (grouped-query
    attention, Ainslie et al. 2023), which shrinks the KV cache by heads / kv_heads.

    `embed` / `memory_embed` are position embeddings added to the inputs of the queries and keys
    only, never to the values, in every layer (DETR, Carion et al. 2020, Sec. 3.2 and Fig. 10:
    spatial encodings on the encoder's and cross-attention's keys, object queries on the
    decoder's queries)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.heads, self.kv_heads, self.dropout = cfg.heads, cfg.key_value_heads, cfg.dropout
        if self.heads % self.kv_heads:
            raise ValueError(f"{self.heads} heads cannot share {self.kv_heads} key/value heads")
        self.q = nn.Linear(cfg.dim, cfg.heads * cfg.head_dim, bias=cfg.bias)
        self.kv = nn.Linear(cfg.dim, 2 * self.kv_heads * cfg.head_dim, bias=cfg.bias)
        self.out = nn.Linear(cfg.heads * cfg.head_dim, cfg.dim, bias=cfg.bias)

    def _split(self, x: torch.Tensor, heads: int) -> torch.Tensor:  # (B, T, h·d) -> (B, h, T, d)
        b, t, d = x.shape
        return x.view(b, t, heads, d // heads).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        *,
        memory: torch.Tensor | None = None,
        causal: bool = False,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        offset: int = 0,
        embed: torch.Tensor | None = None,
        memory_embed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cfg = self.cfg
        q = self._split(self.q(x if embed is None else x + embed), self.heads)
        source = x if memory is None else memory
        key_embed = embed if memory is None else memory_embed
        if key_embed is None:
            kv = self.kv(source).chunk(2, dim=-1)
        else:  # the keys see the positions, the values do not
            wk, wv = self.kv.weight.chunk(2)
            bk, bv = (None, None) if self.kv.bias is None else self.kv.bias.chunk(2)
            kv = F.linear(source + key_embed, wk, bk), F.linear(source, wv, bv)
        k, v = (self._split(t, self.kv_heads) for t in kv)
        t = q.shape[2]
        if cache is not None:
            offset = cache.seen
        q_pos = torch.arange(offset, offset + t, device=x.device)
        k_pos = q_pos if memory is None else torch.arange(k.shape[2], device=x.device)
        preallocated = cache is not None and cache.capacity > 0
        if preallocated:  # write in place (see KVCache.capacity)
            k, v = cache.write(layer, k, v)
            k_pos = torch.arange(k.shape[2], device=x.device)
        elif cache is not None and cache.keys[layer] is not None:  # append to the layer's cache
            k = torch.cat([cache.keys[layer], k], dim=2)
            v = torch.cat([cache.values[layer], v], dim=2)
            k_pos = torch.cat([cache.positions[layer], k_pos])
        window = cache.window if cache is not None else cfg.window
        sinks = cache.sinks if cache is not None else 0
        # one new token after a full cache sees every key: no mask to build
        sees_all = preallocated and t == 1 and mask is None
        if causal and not sees_all and (window or q.shape[2] != k.shape[2]):
            allowed = visible(q_pos, k_pos, window, sinks)
            mask = allowed if mask is None else _biased(mask, allowed)
        if cache is not None and not preallocated:
            # keep only what a later token can still see (all of it without a window)
            keep = visible(q_pos[-1:] + 1, k_pos, window, sinks)[0]
            kept = keep.all()
            cache.keys[layer] = k if kept else k[:, :, keep]
            cache.values[layer] = v if kept else v[:, :, keep]
            cache.positions[layer] = k_pos if kept else k_pos[keep]
        if cfg.positions == "rope" and memory is None:
            if cache is not None:  # rotate by place in the cache (see KVCache)
                q = rotate(q, torch.arange(k.shape[2] - t, k.shape[2]), cfg.rope_theta)
                k = rotate(k, torch.arange(k.shape[2]), cfg.rope_theta)
            else:
                q, k = rotate(q, q_pos, cfg.rope_theta), rotate(k, k_pos, cfg.rope_theta)
        if mask is not None and mask.is_floating_point():  # a position bias, in q's precision
            mask = mask.to(q.dtype)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal and mask is None and not sees_all, enable_gqa=self.kv_heads != self.heads,
            scale=1.0 if cfg.init == "t5" else None,  # T5: 1/√d_kv lives in q's init
        )  # fmt: skip
        b, h, t, hd = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * hd))


class FeedForward(nn.Module):
    """FFN(x) = act(x W1 + b1) W2 + b2  (Sec. 3.3), or SwiGLU (Shazeer 2020, Eq. 6; Llama):
    FFN(x) = (Swish(x W) ⊙ x V) W2, its first layer twice as wide (gate and value halves)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.gated = cfg.activation == "swiglu"
        width = 2 * cfg.ff_dim if self.gated else cfg.ff_dim
        self.up = nn.Linear(cfg.dim, width, bias=cfg.bias)
        self.down = nn.Linear(cfg.ff_dim, cfg.dim, bias=cfg.bias)
        self.act = {"gelu": nn.GELU(approximate="tanh"), "relu": nn.ReLU(), "swiglu": nn.SiLU()}[
            cfg.activation
        ]
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.gated:
            gate, value = h.chunk(2, dim=-1)
            return self.drop(self.down(self.act(gate) * value))
        return self.drop(self.down(self.act(h)))


class MixtureOfExperts(nn.Module):
    """A sparse mixture of feed-forward experts (Mixtral, Sec. 2.1, Eq. 1–2): a router picks the
    top-k of n experts per token, y = Σ softmax(TopK(x W_g))_i · E_i(x), so each token pays for k
    experts while the layer holds n. The load-balancing loss of Switch Transformers (Fedus et al.
    2021, Eq. 4), n · Σ_i f_i · P_i with f_i the share of routed slots and P_i the mean router
    probability of expert i, is kept in `aux_loss` for the recipe to add; `load` holds the f_i."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.k = cfg.experts_per_token
        if not 0 < self.k <= cfg.experts:
            raise ValueError(f"cannot route to {self.k} of {cfg.experts} experts")
        self.router = nn.Linear(cfg.dim, cfg.experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(cfg) for _ in range(cfg.experts))
        self.aux_loss = torch.zeros(())
        self.load = torch.zeros(cfg.experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        logits = self.router(flat).float()
        top, chosen = logits.topk(self.k, dim=-1)  # (N, k)
        weights = top.softmax(dim=-1).to(x.dtype)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = (chosen == e).nonzero(as_tuple=True)
            if token.numel():
                out.index_add_(0, token, expert(flat[token]) * weights[token, slot, None])
        n = len(self.experts)
        share = torch.bincount(chosen.flatten(), minlength=n).float() / chosen.numel()
        self.load = share.detach()
        self.aux_loss = n * (share * logits.softmax(dim=-1).mean(dim=0)).sum()
        return out.view_as(x)


class Block(nn.Module):
    """Self-attention, (cross-attention,) feed-forward; each a residual sum, normalised before
    (pre-norm) or after (post-norm, LayerNorm(x + Sublayer(x)) of Sec. 3.1)."""

    def __init__(self, cfg: TransformerConfig, *, cross: bool = False):
        super().__init__()
        self.pre = cfg.norm == "pre"
        self.attn = Attention(cfg)
        self.cross = Attention(cfg) if cross else None
        self.ff = MixtureOfExperts(cfg) if cfg.experts else FeedForward(cfg)
        n = 3 if cross else 2
        self.norms = nn.ModuleList(make_norm(cfg) for _ in range(n))
        self.drop = nn.Dropout(cfg.dropout)

    def _residual(self, x: torch.Tensor, i: int, sublayer) -> torch.Tensor:
        if self.pre:
            return x + self.drop(sublayer(self.norms[i](x)))
        return self.norms[i](x + self.drop(sublayer(x)))

    def forward(
        self,
        x,
        *,
        causal=False,
        mask=None,
        memory=None,
        memory_mask=None,
        cache=None,
        layer=0,
        offset=0,
        pos=None,
        memory_pos=None,
    ):
        """`pos` / `memory_pos`: position embeddings of x / memory for the queries and keys of
        every attention (see `Attention`; DETR)."""
        x = self._residual(
            x,
            0,
            lambda h: self.attn(
                h, causal=causal, mask=mask, cache=cache, layer=layer, offset=offset, embed=pos
            ),
        )
        if self.cross is not None:
            x = self._residual(
                x,
                1,
                lambda h: self.cross(
                    h, memory=memory, mask=memory_mask, embed=pos, memory_embed=memory_pos
                ),
            )
        return self._residual(x, len(self.norms) - 1, self.ff)


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"dim {cfg.dim} is not divisible by {cfg.heads} heads")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        if cfg.positions == "learned":
            self.pos = nn.Embedding(cfg.max_len, cfg.dim)
        elif cfg.positions == "sinusoidal":
            self.register_buffer("pe", sinusoidal_positions(cfg.max_len, cfg.dim), persistent=False)
        self.segment = nn.Embedding(cfg.segments, cfg.dim) if cfg.segments else None
        self.embed_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps) if cfg.embed_norm else None
        self.drop = nn.Dropout(cfg.dropout)
        enc = cfg.arch in ("encoder", "encoder-decoder")
        dec = cfg.arch in ("decoder", "encoder-decoder")
        self.encoder = nn.ModuleList(Block(cfg) for _ in range(cfg.layers)) if enc else None
        cross = cfg.arch == "encoder-decoder"
        self.decoder = (
            nn.ModuleList(Block(cfg, cross=cross) for _ in range(cfg.layers)) if dec else None
        )
        # pre-norm stacks end with a LayerNorm (GPT-2: "an additional layer normalization was added
        # after the final self-attention block"); post-norm blocks already end normalised
        final = cfg.norm == "pre"
        self.enc_norm = make_norm(cfg) if final and enc else None
        self.dec_norm = make_norm(cfg) if final and dec else None
        relative = cfg.positions == "relative"
        self.enc_bias = RelativePositionBias(cfg, bidirectional=True) if relative and enc else None
        self.dec_bias = RelativePositionBias(cfg, bidirectional=False) if relative and dec else None
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.pooler = nn.Linear(cfg.dim, cfg.dim) if cfg.pooler else None
        self.head_transform = (
            nn.Sequential(
                nn.Linear(cfg.dim, cfg.dim),
                nn.GELU(approximate="tanh") if cfg.activation == "gelu" else nn.ReLU(),
                nn.LayerNorm(cfg.dim, eps=cfg.norm_eps),
            )
            if cfg.mlm_head
            else None
        )
        self.head_bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if cfg.mlm_head else None
        self.apply(self._init)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    def _init(self, m: nn.Module) -> None:
        if self.cfg.init == "t5":
            self._init_t5(m)
            return
        if self.cfg.init == "unit-scaling" and isinstance(m, nn.Linear):
            bound = math.sqrt(3 / m.in_features)
            nn.init.uniform_(m.weight, -bound, bound)
        elif self.cfg.init == "unit-scaling" and m is self.embed:
            nn.init.normal_(m.weight, std=self.cfg.dim**-0.5)
        elif isinstance(m, nn.Linear | nn.Embedding):  # N(0, 0.02), GPT-2 / BERT
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def _init_t5(self, m: nn.Module) -> None:
        """Mesh TF T5's initialisation (see `TransformerConfig.init`): every weight N(0, 1/fan_in)
        but q, which also carries attention's 1/√d_kv, and the embeddings, N(0, 1)."""
        cfg = self.cfg
        if isinstance(m, Attention):
            nn.init.normal_(m.q.weight, std=(cfg.dim * cfg.head_dim) ** -0.5)
            nn.init.normal_(m.kv.weight, std=cfg.dim**-0.5)
            nn.init.normal_(m.out.weight, std=m.out.in_features**-0.5)
        elif isinstance(m, FeedForward):
            nn.init.normal_(m.up.weight, std=cfg.dim**-0.5)
            nn.init.normal_(m.down.weight, std=cfg.ff_dim**-0.5)
        elif isinstance(m, RelativePositionBias):
            nn.init.normal_(m.bias.weight, std=cfg.dim**-0.5)
        elif m is self.embed or (m is self.head and not cfg.tie_embeddings):
            nn.init.normal_(m.weight, std=1.0)
        elif isinstance(m, nn.Linear):  # apply() visits children first: Attention, FFN override
            nn.init.normal_(m.weight, std=m.in_features**-0.5)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def embed_tokens(
        self, tokens: torch.Tensor, offset: int = 0, segments: torch.Tensor | None = None
    ) -> torch.Tensor:
        t = tokens.shape[1]
        x = self.embed(tokens)
        if self.cfg.positions in ("relative", "rope"):  # positions enter inside attention instead
            return self.drop(x)
        if offset + t > self.cfg.max_len:
            raise ValueError(f"sequence of {offset + t} tokens exceeds max_len {self.cfg.max_len}")
        if self.cfg.positions == "sinusoidal":
            x = x * math.sqrt(self.cfg.dim) + self.pe[offset : offset + t]  # Sec. 3.4
        else:
            x = x + self.pos(torch.arange(offset, offset + t, device=tokens.device))
        if self.segment is not None:  # segment A (0) unless told otherwise
            x = x + (self.segment.weight[0] if segments is None else self.segment(segments))
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return self.drop(x)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of states (through the masked-LM transform when there is one)."""
        if self.cfg.init == "t5" and self.cfg.tie_embeddings:  # Mesh TF: x · d^-0.5, then E^T
            states = states * self.cfg.dim**-0.5
        if self.head_transform is None:
            return self.head(states)
        return self.head(self.head_transform(states)) + self.head_bias

    def pool(self, states: torch.Tensor) -> torch.Tensor:
        """BERT's pooler: tanh(W h + b) of one state per sequence (B, D), e.g. [CLS]'s."""
        return torch.tanh(self.pooler(states))

    def encode(
        self,
        tokens: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Bidirectional encoder states (B, T, D); pad_mask (B, T) True where a token is real;
        segments (B, T) the token types when the model has segment embeddings."""
        mask = pad_mask[:, None, None, :] if pad_mask is not None else None
        if self.enc_bias is not None:
            t = tokens.shape[1]
            mask = _biased(self.enc_bias(t, t), mask)
        x = self.embed_tokens(tokens, segments=segments)
        for block in self.encoder:
            x = block(x, mask=mask)
        return self.enc_norm(x) if self.enc_norm is not None else x

    def decode(
        self,
        tokens: torch.Tensor,
        *,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Causal decoder states (B, T, D), attending to `memory` when there is an encoder."""
        offset = cache.seen if cache is not None else 0
        if cache is not None and not cache.keys:
            if cache.window and self.cfg.positions not in ("rope", "learned", "sinusoidal"):
                raise ValueError("a rolling KV cache needs rotary or absolute positions")
            cache.keys = [None] * len(self.decoder)
            cache.values = [None] * len(self.decoder)
            cache.positions = [None] * len(self.decoder)
        mm = memory_mask[:, None, None, :] if memory_mask is not None else None
        mask = None
        if self.dec_bias is not None:  # the bias carries the causal mask too
            t = tokens.shape[1]
            seen = torch.ones(t, offset + t, dtype=torch.bool, device=tokens.device)
            mask = _biased(self.dec_bias(t, offset + t, offset), seen.tril(diagonal=offset))
        x = self.embed_tokens(tokens, offset)
        for i, block in enumerate(self.decoder):
            x = block(
                x, causal=True, mask=mask, memory=memory, memory_mask=mm, cache=cache, layer=i
            )
        if cache is not None:
            cache.seen += tokens.shape[1]
        return self.dec_norm(x) if self.dec_norm is not None else x

    def _experts(self) -> list[MixtureOfExperts]:
        return [m for m in self.modules() if isinstance(m, MixtureOfExperts)]

    def aux_loss(self) -> torch.Tensor:
        """The mixture-of-experts load-balancing losses of the last forward pass, summed over
        layers (0 for a dense model)."""
        return sum((m.aux_loss for m in self._experts()), torch.zeros(()))

    def expert_load(self) -> torch.Tensor:
        """(layers, experts): each expert's share of the routed token slots in the last pass."""
        return torch.stack([m.load for m in self._experts()])

    def active_parameters(self) -> int:
        """Parameters one token passes through: all of them, less the experts a token's router
        did not pick (Mixtral: 12.9B active of 46.7B). Works on the meta device."""
        total = sum(p.numel() for p in self.parameters())
        moes = self._experts()
        if not moes:
            return total
        idle = self.cfg.experts - self.cfg.experts_per_token
        per_expert = sum(p.numel() for p in moes[0].experts[0].parameters())
        return total - len(moes) * idle * per_expert

    def forward(
        self,
        tokens: torch.Tensor,
        target: torch.Tensor | None = None,
        *,
        pad_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits over the vocabulary. decoder: next-token logits of `tokens`; encoder: per-token
        logits (masked-LM head); encoder-decoder: `tokens` is the source, `target` the shifted
        target sequence."""
        if self.cfg.arch == "decoder":
            return self.logits(self.decode(tokens, cache=cache))
        if self.cfg.arch == "encoder":
            return self.logits(self.encode(tokens, pad_mask))
        memory = self.encode(tokens, pad_mask)
        return self.logits(self.decode(target, memory=memory, memory_mask=pad_mask, cache=cache))

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        steps: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample `steps` tokens after `prompt` (B, T) with the KV cache; top-k sampling
        (GPT-2, Sec. 3.6 samples with k = 40); temperature 0 means greedy."""
        if self.cfg.arch != "decoder":
            raise ValueError("generate() is for decoder-only models")
        cache, tokens, nxt = KVCache(), prompt, prompt
        for _ in range(steps):
            logits = self.forward(nxt, cache=cache)[:, -1].float()
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = logits.softmax(-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(prompt.device)
            tokens = torch.cat([tokens, nxt], dim=1)
        return tokens


def _biased(bias: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """A relative position bias as an additive attention mask, −inf where `allowed` is False."""
    return bias if allowed is None else torch.where(allowed, bias, float("-inf"))


# The papers' sizes. GPT-2: Radford et al. 2019, Table 2 (117M/345M/762M/1542M as reported; the
# released models count 124M/355M/774M/1558M with tied embeddings and 1024 positions).
# Transformer: Vaswani et al. 2017, Table 3 (base 65M, big 213M with a shared 37k BPE vocabulary).
SIZES: dict[str, TransformerConfig] = {
    # GPT: Radford et al. 2018, Sec. 4.1 — 12 layers, 768 wide, 12 heads, 3072 inner, GELU,
    # learned positions over 512 tokens, 40,000 BPE merges (40,478 tokens as released); LayerNorm
    # after each residual sum as in Vaswani et al. (GPT-2 moved it to the block input)
    "gpt": TransformerConfig(vocab_size=40478, max_len=512, norm="post", dropout=0.1),
    "gpt2-small": TransformerConfig(dim=768, layers=12, heads=12, ff_dim=3072),
    "gpt2-medium": TransformerConfig(dim=1024, layers=24, heads=16, ff_dim=4096),
    "gpt2-large": TransformerConfig(dim=1280, layers=36, heads=20, ff_dim=5120),
    "gpt2-xl": TransformerConfig(dim=1600, layers=48, heads=25, ff_dim=6400),
    "transformer-base": TransformerConfig(
        vocab_size=37000,
        dim=512,
        layers=6,
        heads=8,
        ff_dim=2048,
        max_len=1024,
        arch="encoder-decoder",
        positions="sinusoidal",
        norm="post",
        activation="relu",
        dropout=0.1,
    ),
    "transformer-big": TransformerConfig(
        vocab_size=37000,
        dim=1024,
        layers=6,
        heads=16,
        ff_dim=4096,
        max_len=1024,
        arch="encoder-decoder",
        positions="sinusoidal",
        norm="post",
        activation="relu",
        dropout=0.3,
    ),
}
# BERT: Devlin et al. 2018, Sec. 3 — BASE (L 12, H 768, A 12, 110M) and LARGE (L 24, H 1024, A 16,
# 340M), d_ff 4H, 30,522 WordPiece tokens, 512 positions, 2 segments; post-norm, LayerNorm ε 1e-12
# in the released code. RoBERTa (Liu et al. 2019, Sec. 4.4 / Appendix) keeps the network: a 50,265
# token byte-level BPE, 514 positions (fairseq offsets them past the padding index), 1 token type.
_BERT = TransformerConfig(
    vocab_size=30522,
    max_len=512,
    arch="encoder",
    norm="post",
    dropout=0.1,
    norm_eps=1e-12,
    segments=2,
    embed_norm=True,
    pooler=True,
    mlm_head=True,
)
_ROBERTA = replace(_BERT, vocab_size=50265, max_len=514, segments=1, norm_eps=1e-5)
_LARGE = {"dim": 1024, "layers": 24, "heads": 16, "ff_dim": 4096}
SIZES.update(
    {
        "bert-base": _BERT,
        "bert-large": replace(_BERT, **_LARGE),
        "roberta-base": _ROBERTA,
        "roberta-large": replace(_ROBERTA, **_LARGE),
    }
)
# T5: Raffel et al. 2019, Sec. 3.7 / Table 14 sizes (d_model, d_ff, d_kv, heads, layers per stack),
# the released v1 checkpoints: 32,128-token SentencePiece vocabulary shared by both stacks and tied
# to the output layer, pre-norm RMSNorm (eps 1e-6) without bias, no biases in dense layers, ReLU,
# relative position biases (32 buckets) shared across each stack's layers, dropout 0.1, and Mesh
# TF's initialisation (init="t5": attention's 1/sqrt(d_kv) folded into q's init, the tied output
# layer reading the states times d_model^-0.5).
_T5 = TransformerConfig(
    vocab_size=32128,
    max_len=512,
    arch="encoder-decoder",
    positions="relative",
    norm="pre",
    norm_type="rms",
    activation="relu",
    dropout=0.1,
    bias=False,
    norm_eps=1e-6,
    init="t5",
)
for _name, (_dim, _ff, _kv, _heads, _layers) in {
    "t5-small": (512, 2048, 64, 8, 6),
    "t5-base": (768, 3072, 64, 12, 12),
    "t5-large": (1024, 4096, 64, 16, 24),
    "t5-3b": (1024, 16384, 128, 32, 24),
    "t5-11b": (1024, 65536, 128, 128, 24),
}.items():
    SIZES[_name] = replace(
        _T5, dim=_dim, ff_dim=_ff, attn_dim=_kv * _heads, heads=_heads, layers=_layers
    )


# Llama 2: Touvron et al. 2023, Sec. 2.2 and Table 1 — pre-norm RMSNorm (eps 1e-5), SwiGLU, RoPE,
# 4,096-token context, 32,000-token vocabulary, no biases, untied output layer; grouped-query
# attention (8 key/value heads) only in the 70B model. FFN widths are the released checkpoints'.
_LLAMA = TransformerConfig(
    vocab_size=32000,
    max_len=4096,
    positions="rope",
    norm_type="rms",
    activation="swiglu",
    bias=False,
    tie_embeddings=False,
)
# Mistral 7B: Jiang et al. 2023, Table 1 — dim 4096, 32 layers, head_dim 128, 32 heads, 8 kv heads,
# hidden 14336, window 4096, context 8192, vocab 32000. Mixtral 8x7B: Jiang et al. 2024, Table 1 —
# the same block with 8 experts, top-2, 32k context, rope theta 1e6 (the released config).
_MISTRAL = replace(_LLAMA, dim=4096, layers=32, heads=32, kv_heads=8, ff_dim=14336, max_len=8192)
SIZES.update(
    {
        "llama-2-7b": replace(_LLAMA, dim=4096, layers=32, heads=32, ff_dim=11008),
        "llama-2-13b": replace(_LLAMA, dim=5120, layers=40, heads=40, ff_dim=13824),
        "llama-2-70b": replace(_LLAMA, dim=8192, layers=80, heads=64, kv_heads=8, ff_dim=28672),
        "mistral-7b": replace(_MISTRAL, window=4096),
        "mixtral-8x7b": replace(
            _MISTRAL, max_len=32768, rope_theta=1e6, experts=8, experts_per_token=2
        ),
    }
)
# which registry paper each size belongs to, where the name's first word is not its id
_PAPER_OF = {"gpt2": "gpt-2", "llama": "llama-2", "mistral": "mistral-7b", "mixtral": "mixtral"}


def transformer(name: str | None = None, **overrides) -> Transformer:
    cfg = SIZES[name] if name else TransformerConfig()
    return Transformer(replace(cfg, **overrides))


def _register() -> None:
    from papercli.models import register_model

    for name in SIZES:
        first = name.split("-")[0]
        paper = _PAPER_OF.get(first, first)
        register_model(name, transformer, paper=paper, name=name)


_register()
