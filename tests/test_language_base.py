"""The language family's shared parts: the transformer family at the papers' sizes, its KV cache,
and the plays corpus with its BPE (issue 13's foundation; the recipes build on these)."""

from __future__ import annotations

import pytest
import torch

from papercli.data import plays
from papercli.data import registry as datasets
from papercli.models import create_model
from papercli.models.transformer import KVCache, sinusoidal_positions


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "expected"),
    [  # the released GPT-2 checkpoints (tied embeddings, 1024 positions, 50257 tokens)
        ("gpt2-small", 124_439_808),
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", 774_030_080),
        ("gpt2-xl", 1_557_611_200),
    ],
)
def test_gpt2_sizes_on_the_meta_device(name, expected):
    with torch.device("meta"):
        assert n_params(create_model(name)) == expected


def test_transformer_base_and_big_match_table_3():
    with torch.device("meta"):
        base, big = create_model("transformer-base"), create_model("transformer-big")
    assert abs(n_params(base) - 65e6) / 65e6 < 0.04  # Table 3: 65M (shared 37k BPE vocabulary)
    assert abs(n_params(big) - 213e6) / 213e6 < 0.02  # 213M
    assert base.cfg.norm == "post" and base.cfg.positions == "sinusoidal"


def tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, dim=32, layers=2, heads=4, ff_dim=64, max_len=64)
    return create_model("gpt2-small", **{**cfg, **kw}).eval()


def test_kv_cache_gives_the_same_logits_as_recomputing():
    model = tiny()
    x = torch.randint(0, 50, (2, 12))
    full = model(x)
    cache = KVCache()
    parts = [model(x[:, :5], cache=cache)] + [
        model(x[:, i : i + 1], cache=cache) for i in range(5, 12)
    ]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5) and cache.length == 12
    ed = tiny(arch="encoder-decoder", positions="sinusoidal", norm="post", activation="relu")
    src, tgt = torch.randint(0, 50, (2, 7)), torch.randint(0, 50, (2, 6))
    memory, cache = ed.encode(src), KVCache()
    steps = [ed.head(ed.decode(tgt[:, i : i + 1], memory=memory, cache=cache)) for i in range(6)]
    assert torch.allclose(torch.cat(steps, 1), ed(src, tgt), atol=1e-5)


def test_causality_and_bidirectionality():
    x = torch.randint(0, 50, (1, 10))
    y = x.clone()
    y[0, 7] = (y[0, 7] + 1) % 50
    dec, enc = tiny(), tiny(arch="encoder")
    assert torch.allclose(dec(x)[:, :7], dec(y)[:, :7], atol=1e-6)  # the past ignores the future
    assert not torch.allclose(enc(x)[:, :7], enc(y)[:, :7], atol=1e-6)  # an encoder sees it all


def test_generate_top_k_is_seeded_and_greedy_is_argmax():
    model = tiny()
    prompt = torch.randint(0, 50, (2, 3))
    a = model.generate(prompt, 6, top_k=5, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 6, top_k=5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 9) and torch.equal(a, b) and torch.equal(a[:, :3], prompt)
    greedy = model.generate(prompt, 1, temperature=0)
    assert torch.equal(greedy[:, -1], model(prompt)[:, -1].argmax(-1))


def test_sinusoidal_positions_follow_section_3_5():
    pe = sinusoidal_positions(50, 16)
    assert torch.allclose(pe[:, 0], torch.sin(torch.arange(50.0)))
    assert torch.allclose(pe[3, 1], torch.cos(torch.tensor(3.0)))


def test_plays_corpus_split_by_play_and_speeches():
    every = plays.load()
    train, held = plays.split()
    assert len(every) == 38 and sum(len(p.text) for p in every) > 4_500_000
    assert {p.slug for p in train}.isdisjoint(p.slug for p in held)
    assert sorted(p.genre for p in held) == sorted(set(plays.GENRES.values()))
    hamlet = next(p for p in every if p.slug == "hamlet")
    assert "HAMLET:\nTo be, or not to be: that is the question:" in hamlet.text
    assert "**" not in hamlet.text and "[Enter Ghost]" in hamlet.text
    assert "\n_" not in hamlet.text  # stage directions over several lines are bracketed too
    speakers = {s for s, _ in plays.speeches(hamlet)}
    assert {"HAMLET", "HORATIO", "OPHELIA"} <= speakers
    assert datasets.get("plays").status().present


def test_bpe_is_trained_once_cached_and_round_trips(papercli_home):
    tok = plays.bpe_tokenizer(1024)
    text = "Now is the winter of our discontent\nMade glorious summer by this sun of York;"
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text and len(ids) < len(text) / 2  # merges learned
    cached = list((papercli_home / "cache" / "tokenizers").glob("plays-bpe1024-*.json"))
    assert len(cached) == 1
    assert plays.bpe_tokenizer(1024).encode(text).ids == ids
    vocab = plays.CharVocab(text)
    assert vocab.decode(vocab.encode(text)) == text
