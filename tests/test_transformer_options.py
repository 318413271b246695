"""The Llama-era options of the transformer family: rotary positions, grouped-query attention,
SwiGLU, sliding windows with a rolling KV cache, attention sinks and mixtures of experts — each
checked against a property it must have, on real (tiny) models."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from papercli.models.transformer import (
    SIZES,
    KVCache,
    MixtureOfExperts,
    Transformer,
    TransformerConfig,
    rotate,
    visible,
)
from papercli.reproduce.params import meta_counts

TINY = TransformerConfig(
    vocab_size=50,
    dim=32,
    layers=2,
    heads=4,
    ff_dim=48,
    max_len=64,
    positions="rope",
    norm_type="rms",
    activation="swiglu",
    bias=False,
    tie_embeddings=False,
)


def _model(**options) -> Transformer:
    torch.manual_seed(0)
    return Transformer(replace(TINY, **options)).eval()


def _stream(model: Transformer, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits of feeding tokens one at a time through the cache."""
    return torch.cat([model(tokens[:, i : i + 1], cache=cache) for i in range(tokens.shape[1])], 1)


def test_rope_scores_depend_only_on_distance():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(m: int, n: int) -> float:
        qm = rotate(q, torch.tensor([m]), 10000.0)
        kn = rotate(k, torch.tensor([n]), 10000.0)
        return (qm * kn).sum().item()

    assert score(3, 1) == pytest.approx(score(40, 38), abs=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)
    # a rotation keeps the norm
    assert rotate(q, torch.tensor([7]), 10000.0).norm() == pytest.approx(q.norm().item(), rel=1e-6)


def test_rope_angles_stay_exact_at_long_positions():
    # fp32 angles m·θ_i lose ~m·6e-8 rad (2e-3 at m = 30,000: Mixtral's context), which broke the
    # equality of a rolling cache (small positions) and one pass (absolute positions) beyond 1e-4
    x = torch.randn(1, 1, 1, 16)
    m, half = 30_001, 8
    angle = [m * 10000.0 ** (-i / half) for i in range(half)]
    cos = torch.tensor([math.cos(a) for a in angle])
    sin = torch.tensor([math.sin(a) for a in angle])
    x1, x2 = x[..., :half], x[..., half:]
    exact = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    torch.testing.assert_close(rotate(x, torch.tensor([m]), 10000.0), exact, atol=1e-6, rtol=0)


@pytest.mark.parametrize("options", [{}, {"kv_heads": 2}, {"window": 5}])
def test_cached_decoding_equals_the_full_forward(options):
    model = _model(**options)
    tokens = torch.randint(0, 50, (2, 20))
    full = model(tokens)
    streamed = _stream(model, tokens, KVCache(window=model.cfg.window))
    assert torch.allclose(streamed, full, atol=1e-5)


def test_rolling_cache_memory_is_bounded_by_the_window():
    """Mistral's rolling buffer: the cache never holds more than the window, however long the
    stream, and its outputs equal recomputing the sliding-window model over the whole prefix."""
    model = _model(window=6)
    tokens = torch.randint(0, 50, (1, 40))
    cache = KVCache(window=6)
    streamed = _stream(model, tokens, cache)
    assert cache.length == 5 and cache.seen == 40
    assert torch.allclose(streamed, model(tokens), atol=1e-5)
    # without the window the same stream keeps every token
    full = KVCache()
    _stream(model, tokens, full)
    assert full.length == 40 and full.bytes() == 8 * cache.bytes()


def test_the_window_changes_what_a_token_sees():
    tokens = torch.randint(0, 50, (1, 20))
    windowed, dense = _model(window=4)(tokens), _model()(tokens)
    assert torch.allclose(windowed[:, :4], dense[:, :4], atol=1e-5)  # nothing evicted yet
    assert not torch.allclose(windowed[:, 10:], dense[:, 10:], atol=1e-3)


def test_sinks_stay_in_the_cache():
    model = _model()
    cache = KVCache(window=8, sinks=2)
    _stream(model, torch.randint(0, 50, (1, 30)), cache)
    assert cache.length == 7
    assert cache.positions[0].tolist() == [0, 1, 25, 26, 27, 28, 29]
    allowed = visible(torch.tensor([29]), torch.arange(30), window=8, sinks=2)[0]
    assert allowed.nonzero().flatten().tolist() == [0, 1, 24, 25, 26, 27, 28, 29]
    with pytest.raises(ValueError, match="sinks"):
        KVCache(sinks=4)


def test_grouped_query_attention_is_multi_head_with_shared_keys():
    """A GQA model equals the multi-head model whose key/value heads are copies per group; its
    KV cache is smaller by heads / kv_heads (Ainslie et al. 2023)."""
    gqa = _model(kv_heads=2)
    mha = _model()
    state = gqa.state_dict()
    hd, d = TINY.head_dim, TINY.dim
    for name, weight in list(state.items()):
        if name.endswith("attn.kv.weight"):  # (2 · kv_heads · hd, d) -> (2 · heads · hd, d)
            k, v = weight.view(2, 2, hd, d)
            state[name] = torch.cat([t.repeat_interleave(2, dim=0).reshape(-1, d) for t in (k, v)])
    mha.load_state_dict(state)
    tokens = torch.randint(0, 50, (2, 12))
    assert torch.allclose(gqa(tokens), mha(tokens), atol=1e-5)
    small, big = KVCache(), KVCache()
    gqa(tokens, cache=small)
    mha(tokens, cache=big)
    assert big.bytes() == 2 * small.bytes()


def test_mixture_of_experts_routing_and_balance_loss():
    cfg = replace(TINY, experts=4, experts_per_token=2)
    torch.manual_seed(0)
    moe = MixtureOfExperts(cfg)
    x = torch.randn(3, 5, cfg.dim)
    # by hand: each token's two best experts, weighted by the softmax over their logits
    logits = moe.router(x.reshape(-1, cfg.dim))
    top, chosen = logits.topk(2, dim=-1)
    weights = top.softmax(-1)
    expected = torch.stack(
        [
            sum(w * moe.experts[e](row) for w, e in zip(weights[i], chosen[i], strict=True))
            for i, row in enumerate(x.reshape(-1, cfg.dim))
        ]
    ).view_as(x)
    assert torch.allclose(moe(x), expected, atol=1e-5)
    assert moe.load.sum().item() == pytest.approx(1.0)
    # a router that cannot tell experts apart has P_i = 1/n, so the loss is exactly 1
    torch.nn.init.zeros_(moe.router.weight)
    moe(x)
    assert moe.aux_loss.item() == pytest.approx(1.0)
    model = Transformer(replace(cfg, layers=3))
    model(torch.randint(0, 50, (2, 7)))
    assert model.expert_load().shape == (3, 4) and model.aux_loss().item() >= 1.0 - 1e-6


@pytest.mark.parametrize(
    ("name", "total", "active"),
    [
        ("llama-2-7b", 6_738_415_616, None),  # Touvron et al. 2023, Table 1: 7B (6.7B released)
        ("llama-2-13b", 13_015_864_320, None),
        ("llama-2-70b", 68_976_648_192, None),  # 69B with GQA
        ("mistral-7b", 7_241_732_096, None),  # Jiang et al. 2023: 7.24B
        ("mixtral-8x7b", 46_702_792_704, 12_879_925_248),  # 46.7B total, 12.9B active
    ],
)
def test_paper_sizes_count_on_the_meta_device(name, total, active):
    assert meta_counts(Transformer, SIZES[name])["total"] == total
    with torch.device("meta"):
        model = Transformer(SIZES[name])
    assert model.active_parameters() == (active or total)
