"""T5 recipe: the released sizes on the meta device, span corruption, T5's transformer options
(relative position bias, RMSNorm, no biases), text-to-text scoring, a 2-step run that must not
reproduce."""

from __future__ import annotations

import json
from dataclasses import replace

import torch
from test_reproduce_cli import papercli

from papercli.data import plays
from papercli.methods import t5_objectives
from papercli.methods.span_corruption import corrupt, noise_mask
from papercli.models import create_model
from papercli.models.transformer import KVCache
from papercli.recipes.t5 import MINI, T5Recipe
from papercli.reproduce.recipe import Context


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_released_t5_sizes_on_meta():
    # the released v1 checkpoints (Table 14 shapes; t5-large's TF log shows 737,668,096)
    released = {
        "t5-small": 60_506_624,
        "t5-base": 222_903_552,
        "t5-large": 737_668_096,
        "t5-3b": 2_851_598_336,
        "t5-11b": 11_307_321_344,
    }
    with torch.device("meta"):
        assert {name: n_params(create_model(name)) for name in released} == released
        small = create_model("t5-small")
    assert not any(m.bias is not None for m in small.modules() if isinstance(m, torch.nn.Linear))
    assert all(isinstance(n, torch.nn.RMSNorm) for n in small.encoder[0].norms)
    assert small.enc_bias.bias.weight.shape == (32, 8)  # one table per stack, 32 buckets
    assert small.head.weight is small.embed.weight  # v1 ties the output layer


def test_paper_scale_is_the_baseline_of_section_3_1():
    plan = json.loads(papercli("reproduce", "t5", "--scale", "paper", "--dry-run", "--json").stdout)
    assert {n: c["total"] for n, c in plan["arm_params"].items()} == {
        "pretrained": 222_903_552,  # T5-base, 32,000 pieces + 28 unused + 100 sentinels
        "scratch": 222_903_552,
    }
    cfg = plan["config"]
    assert round(cfg["steps"] * cfg["pretrain_fraction"]) == 2**19  # then 2^18 fine-tuning
    assert (cfg["batch_size"], cfg["context"], cfg["optimizer"]) == (128, 512, "adafactor")
    assert (cfg["noise_density"], cfg["mean_span"]) == (0.15, 3.0)


def test_span_corruption_drops_15_percent_in_spans_of_mean_3_and_is_invertible():
    g = torch.Generator().manual_seed(0)
    masks = torch.stack([noise_mask(512, 0.15, 3.0, g) for _ in range(50)])
    assert (masks.sum(1) == 77).all()  # round(512 · 0.15)
    starts = masks & ~torch.cat([torch.zeros(50, 1, dtype=torch.bool), masks[:, :-1]], 1)
    assert (starts.sum(1) == 26).all()  # round(77 / 3) spans: mean length ~3
    assert masks[:, 0].any() and masks[:, -1].any() and not masks[:, -1].all()

    tokens = torch.randint(0, 100, (8, 40), generator=g)
    sentinels = list(range(1000, 1010))
    inputs, targets = corrupt(tokens, sentinels, eos=7, generator=g)
    assert inputs.shape == (8, 40 - 6 + 2) and targets.shape == (8, 6 + 2 + 1)
    for row, inp, tgt in zip(tokens, inputs, targets, strict=True):
        assert tgt[-1] == 7 and tgt[0] == 1000
        # put each sentinel's span back into the input: the original row
        spans, sentinel = {}, None
        for t in tgt[:-1].tolist():
            if t >= 1000:
                sentinel = t
                spans[t] = []
            else:
                spans[sentinel].append(t)
        restored = [u for t in inp.tolist() for u in (spans[t] if t >= 1000 else [t])]
        assert restored == row.tolist()


def test_table_4_objectives_prefix_lm_bert_style_and_deshuffling():
    # Sec. 3.3.1: each objective's first target token depends on the input, unlike span
    # corruption's, which is always <extra_id_0>
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 100, (64, 40), generator=g)
    x, y = t5_objectives.prefix_lm(tokens, eos=7, generator=g)
    assert 1 <= x.shape[1] <= 39 and (y[:, -1] == 7).all()
    assert torch.equal(torch.cat([x, y[:, :-1]], 1), tokens)  # input, then its continuation

    x, y = t5_objectives.bert_style(tokens, mask_id=1000, eos=7, random_vocab=100, generator=g)
    assert torch.equal(y, torch.cat([tokens, torch.full((64, 1), 7)], 1))  # the original text
    changed = x != tokens
    masked = x == 1000
    assert 0.12 < (changed | masked).float().mean() < 0.18  # 15 % corrupted
    assert 0.85 < masked.sum() / (changed | masked).sum() < 0.95  # 90 % of them the mask

    x, y = t5_objectives.deshuffle(tokens, eos=7, generator=g)
    assert torch.equal(x.sort(1).values, tokens.sort(1).values) and not torch.equal(x, tokens)
    assert torch.equal(y[:, :-1], tokens)


def test_t5_initialisation_follows_mesh_tf():
    # embeddings N(0, 1), fan-in weights, q carrying 1/sqrt(d_kv), tied logits read states · d^-0.5
    torch.manual_seed(0)
    model = create_model("t5-small", vocab_size=2000, layers=1)
    d, kv = 512, 64
    std = {
        "embed": model.embed.weight,
        "q": model.encoder[0].attn.q.weight,
        "kv": model.encoder[0].attn.kv.weight,
        "o": model.encoder[0].attn.out.weight,
        "wi": model.encoder[0].ff.up.weight,
        "wo": model.encoder[0].ff.down.weight,
    }
    want = {"embed": 1.0, "q": (d * kv) ** -0.5, "kv": d**-0.5, "o": d**-0.5, "wi": d**-0.5,
            "wo": 2048**-0.5}  # fmt: skip
    for name, w in std.items():
        assert abs(w.std().item() / want[name] - 1) < 0.05, name
    states = torch.randn(4, 3, d)
    torch.testing.assert_close(model.logits(states), states @ model.embed.weight.T * d**-0.5)
    assert 0.9 < model.logits(states).std().item() < 1.1  # unit-variance logits at init


def test_relative_bias_decoder_with_cache_matches_full_decoding():
    model = create_model(
        "t5-small", vocab_size=50, dim=32, heads=4, ff_dim=64, layers=2, attn_dim=0
    ).eval()
    with torch.no_grad():
        model.dec_bias.bias.weight.normal_()  # make positions matter
        src, tgt = torch.randint(0, 50, (2, 9)), torch.randint(0, 50, (2, 6))
        memory = model.encode(src)
        full = model.decode(tgt, memory=memory)
        cache = KVCache()
        steps = [model.decode(tgt[:, i : i + 1], memory=memory, cache=cache) for i in range(6)]
        torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
        # causal: changing a later target token leaves earlier states alone
        changed = tgt.clone()
        changed[:, 4] = (changed[:, 4] + 1) % 50
        later = model.decode(changed, memory=memory)
        torch.testing.assert_close(later[:, :4], full[:, :4])
        assert not torch.allclose(later[:, 4], full[:, 4])
    bucket = model.enc_bias.bucket(torch.arange(-200, 201))
    assert bucket.min() == 0 and bucket.max() == 31 and bucket[200] == 0  # distance 0
    assert (bucket[:200] < 16).all() and (bucket[201:] >= 16).all()  # before / after the query


def _recipe(**overrides) -> T5Recipe:
    cfg = replace(
        MINI, vocab_size=512, context=24, dim=16, layers=1, heads=2, dropout=0.0, **overrides
    )
    recipe = T5Recipe(cfg, Context(device=torch.device("cpu"), seed=0, global_batch=4))
    recipe.ctx.split_batch(4, 0)
    recipe.setup_data()
    return recipe


def _targets(recipe: T5Recipe) -> list[str]:
    return [recipe.tokenizer.decode(r[: n - 1].tolist()) for r, n in
            zip(recipe.label_rows, recipe.label_lengths, strict=True)]  # fmt: skip


def test_the_prefix_and_the_target_text_follow_the_task():
    # Sec. 2.4: the mini's task is word order, its target the class's name as text
    for task, prefix, targets in [
        ("word_order", "word order: ", ["original", "shuffled"]),
        ("play", "which play: ", [c.replace("-", " ") for c in plays.HELD_OUT]),
    ]:
        recipe = _recipe(task=task)
        rows, _ = recipe.train_rows
        ids = recipe.tokenizer.encode(prefix).ids
        assert (rows[:, : len(ids)] == torch.tensor(ids)).all()
        assert _targets(recipe) == targets


def test_text_to_text_rows_and_rank_classification():
    recipe = _recipe(task="play", objective="span_corruption")
    rows, lengths = recipe.train_rows
    assert (rows[torch.arange(len(rows)), lengths - 1] == recipe.eot).all()  # end-of-sequence

    _, x, y = recipe.train_batch(0)  # phase 1: span-corrupted windows (the baseline's objective)
    assert x.shape == (4, 24 - 4 + 1) and (y[:, 0] == recipe.sentinel_ids[0]).all()
    bert = _recipe(task="play", objective="bert_style")
    windows = super(T5Recipe, bert).train_batch(0)[1]
    _, x, y = bert.train_batch(0)  # the same windows, BERT-style: the target is the original
    assert x.shape == (4, 24) and torch.equal(y[:, :-1], windows)
    assert (x == bert.sentinel_ids[0]).any() and (y[:, -1] == bert.eot).all()

    # phase 1 on shorter windows only
    short = _recipe(task="play", objective="span_corruption", pretrain_context=12)
    _, x, y = short.train_batch(0)
    assert x.shape == (4, 12 - 2 + 1) and short.train_rows[0].shape[1] == 24

    arm = recipe.build_model()["pretrained"].eval()
    labels = recipe.train_labels[:5]
    with torch.no_grad():
        scores = recipe.classify(arm, rows[:5], lengths[:5])
        loss = recipe.finetune_loss(arm, rows[:5], lengths[:5], labels)
    assert scores.shape == (5, 6) and (scores < 0).all()
    # the fine-tuning loss is the true label's text, teacher-forced: the same log-likelihood
    true = -scores[torch.arange(5), labels].sum() / recipe.label_lengths[labels].sum()
    torch.testing.assert_close(loss, true)


def test_the_mini_pretrains_bert_style_with_adafactor_at_half_the_papers_relative_step():
    # Table 4's BERT-style objective; Adafactor at 1/sqrt(max(n, k)), k = 40,000: a constant 0.005
    # through the 1,600 phase-1 steps (the paper's k = 10^4: 0.01), then the constant 1e-3 of
    # Sec. 3.1.3 for the 300 fine-tuning steps; the scratch arm has no phase 1
    recipe = _recipe()
    assert (recipe.cfg.objective, recipe.cfg.optimizer) == ("bert_style", "adafactor")
    assert (recipe.pretrain_steps, MINI.steps - recipe.pretrain_steps) == (1600, 300)
    opts = recipe.configure_optimizers(recipe.build_model())
    assert set(opts) == {"pretrained/pretrain", "pretrained/finetune", "scratch/finetune"}
    opt, schedule = opts["pretrained/pretrain"]
    assert isinstance(opt, torch.optim.Adafactor)
    assert [schedule.lr_lambdas[0](n) for n in (0, 1599)] == [0.005, 0.005]
    assert opts["scratch/finetune"].defaults["lr"] == 1e-3


def test_two_steps_through_the_cli_do_not_reproduce(tmp_path):
    proc = papercli(
        "reproduce", "t5", "--steps", "2", "--out", str(tmp_path / "run"), "--json",
        "--batch-size", "8", "--set", "vocab_size=512", "--set", "context=32", "--set", "dim=32",
        "--set", "layers=1", "--set", "finetune_batch_size=8", "--set", "eval_texts=60",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    record = json.loads(proc.stdout)
    assert record["verdict"] == "not reproduced"
    m = record["metrics"]
    assert m["pretrained_gain"] == m["pretrained_test_acc"] - m["scratch_test_acc"]
    assert not next(c for c in record["checks"] if c["metric"] == "pretrained_test_acc")["passed"]
    assert m["chance_acc"] == 0.5  # the mini's task: real vs shuffled word order
    bad = papercli("reproduce", "t5", "--dry-run", "--set", "optimizer=sgd")
    assert bad.returncode == 2 and "expected one of adamw, adafactor" in bad.stderr
