"""BERT recipe: the family's BERT options and the released networks' exact sizes on the meta
device, the input format, masked-LM and left-to-right phase 1, a real run through the CLI and a
2-step run that must not reproduce."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest
import torch
from test_reproduce_cli import papercli

from papercli.data import plays
from papercli.methods.masking import IGNORE
from papercli.models.transformer import SIZES, Transformer, TransformerConfig, transformer
from papercli.recipes.bert import MINI, BERTRecipe
from papercli.reproduce.loop import Trainer, optimizer_slots
from papercli.reproduce.recipe import Context

# the released models' counts (BertModel / RobertaModel: embeddings, encoder, pooler; e.g.
# bert-base-uncased sums to 109,482,240, google-research/bert#1225); the masked-LM head is extra
RELEASED = {
    "bert-base": 109_482_240,
    "bert-large": 335_141_888,
    "roberta-base": 124_645_632,
    "roberta-large": 355_359_744,
}


def mlm_head(dim: int, vocab: int) -> int:
    return dim * dim + dim + 2 * dim + vocab  # dense, LayerNorm, output bias (weights tied)


def test_released_network_sizes_on_the_meta_device():
    totals = {}
    for name, released in RELEASED.items():
        with torch.device("meta"):
            model = transformer(name)
        totals[name] = sum(p.numel() for p in model.parameters())
        assert totals[name] == released + mlm_head(model.cfg.dim, model.cfg.vocab_size), name
    # the papers' rounded sizes (with the masked-LM head): BERT 110M / 340M (Sec. 3)
    assert round(totals["bert-base"] / 1e6) == 110
    assert abs(totals["bert-large"] / 340e6 - 1) < 0.02


def test_paper_scale_dry_run_counts_every_arm():
    plan = json.loads(
        papercli("reproduce", "bert", "--scale", "paper", "--dry-run", "--json").stdout
    )
    # 30,519 BPE ids + [CLS], [SEP], [MASK] = 30,522; + the classifier (768 → 6 classes)
    arm = RELEASED["bert-base"] + mlm_head(768, 30522) + 768 * 6 + 6
    assert {n: c["total"] for n, c in plan["arm_params"].items()} == {
        "bidirectional": arm,
        "left_to_right": arm,
        "scratch": arm,
    }
    cfg = plan["config"]  # Appendix A.2
    assert (cfg["lr"], cfg["warmup_steps"], cfg["weight_decay"], cfg["dropout"]) == (
        1e-4, 10_000, 0.01, 0.1,
    )  # fmt: skip
    assert (cfg["batch_size"], cfg["context"], round(cfg["steps"] * cfg["pretrain_fraction"])) == (
        256, 512, 1_000_000,
    )  # fmt: skip
    assert cfg["finetune_lr"] in (5e-5, 3e-5, 2e-5) and cfg["finetune_batch_size"] == 32


def test_bert_options_of_the_transformer_family():
    cfg = TransformerConfig(vocab_size=50, dim=16, layers=1, heads=2, ff_dim=32, max_len=8)
    plain = Transformer(replace(cfg, arch="encoder"))
    assert not any(
        hasattr(plain, n) and getattr(plain, n) is not None
        for n in ("segment", "embed_norm", "pooler", "head_transform", "head_bias")
    )
    bert = Transformer(
        replace(SIZES["bert-base"], vocab_size=50, dim=16, layers=1, heads=2, ff_dim=32, max_len=8)
    ).eval()
    tokens = torch.randint(0, 50, (2, 8))
    a = bert.encode(tokens)
    assert torch.equal(a, bert.encode(tokens, segments=torch.zeros_like(tokens)))  # A by default
    assert not torch.allclose(a, bert.encode(tokens, segments=torch.ones_like(tokens)))
    # the embedding LayerNorm: each position's embedding sum is normalised
    emb = bert.embed_tokens(tokens)
    assert torch.allclose(emb.mean(-1), torch.zeros(2, 8), atol=1e-5)
    pooled = bert.pool(a[:, 0])
    assert pooled.shape == (2, 16) and pooled.abs().max() < 1  # tanh
    logits = bert.logits(a)
    assert logits.shape == (2, 8, 50)
    expected = bert.head(bert.head_transform(a)) + bert.head_bias
    assert torch.equal(logits, expected) and bert.head.weight is bert.embed.weight


@pytest.fixture(scope="module")
def _bpe_home(tmp_path_factory):
    """One PAPERCLI_HOME per test module, so the plays' BPE is trained once, not per test."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture
def plays_home(_bpe_home, monkeypatch):
    monkeypatch.setenv("PAPERCLI_HOME", str(_bpe_home))
    return _bpe_home


def tiny(recipe_class, cfg):
    """A recipe on the real plays with a tiny config, its data set up (tokenising the plays is
    the slow part, so a module shares one)."""
    cfg = replace(cfg, vocab_size=512, context=24, dim=16, layers=1, heads=2, dropout=0.0)
    cfg = replace(cfg, task_words=min(cfg.task_words, 8))  # 8 words fit 24 tokens
    recipe = recipe_class(cfg, Context(device=torch.device("cpu"), seed=0, global_batch=4))
    recipe.ctx.split_batch(4, 0)
    recipe.setup_data()
    return recipe


@pytest.fixture(scope="module")
def recipe(_bpe_home) -> BERTRecipe:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAPERCLI_HOME", str(_bpe_home))
        return tiny(
            BERTRecipe, replace(MINI, steps=4, pretrain_fraction=0.5, finetune_batch_size=4)
        )


@pytest.fixture(scope="module")
def token_recipe(_bpe_home) -> BERTRecipe:
    """The token-level task (`--set task=replaced_word`), on the same tiny network."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAPERCLI_HOME", str(_bpe_home))
        cfg = replace(MINI, steps=4, pretrain_fraction=0.5, finetune_batch_size=4)
        return tiny(BERTRecipe, replace(cfg, task="replaced_word", task_words=16))


def test_inputs_objectives_and_what_each_phase_trains(recipe):
    rows, lengths = recipe.train_rows
    cls, sep = recipe.special["[CLS]"], recipe.special["[SEP]"]
    assert (rows[:, 0] == cls).all()  # Sec. 3: [CLS] text [SEP]
    assert (rows[torch.arange(len(rows)), lengths - 1] == sep).all()

    model = recipe.build_model()
    slots = optimizer_slots(recipe.configure_optimizers(model), model)
    trainer = Trainer(recipe, model, model, slots)
    model.eval()
    # the encoder reads both sides: its [CLS] state sees the last text token; the left-to-right
    # network's state at a token never sees what follows it
    x = rows[:2].clone()
    y = x.clone()
    y[:, lengths[:2].min() - 2] = 7
    enc, dec = model["bidirectional"].transformer, model["left_to_right"].transformer
    assert not torch.allclose(enc.encode(x)[:, 0], enc.encode(y)[:, 0])
    cut = int(lengths[:2].min()) - 2
    assert torch.allclose(dec.decode(x)[:, :cut], dec.decode(y)[:, :cut])
    model.train()

    before = {n: [p.detach().clone() for p in model[n].parameters()] for n in model}

    def changed(name: str) -> bool:
        return any(
            not torch.equal(a, b)
            for a, b in zip(before[name], model[name].parameters(), strict=True)
        )

    logged = recipe.train_step(0, trainer)  # phase 1: the two pre-training arms learn
    assert set(logged) == {"loss", "pretrain_bidirectional", "pretrain_left_to_right"}
    assert changed("bidirectional") and changed("left_to_right") and not changed("scratch")
    logged = recipe.train_step(2, trainer)  # phase 2: all three, the same labelled batch
    assert {"finetune_bidirectional", "finetune_left_to_right", "finetune_scratch"} <= set(logged)
    assert changed("scratch")


def test_readouts_mean_pool_and_cls_ignore_padding(recipe):
    """pool = mean (the mini): the classifier reads the mean of the last block's states over the
    real tokens; pool = cls (paper scale): the pooled [CLS] state, or for the left-to-right
    network its last text token. Neither reads the padding after [SEP]."""
    keep = recipe.cfg
    recipe.cfg = replace(recipe.cfg, task="word_order")  # a sentence-level head
    model = recipe.build_model().eval()
    texts = [" ".join(t.split()[: 1 + i % 3]) for i, (t, _) in enumerate(recipe.task.train[:6])]
    rows, lengths = recipe.encode_task(texts)
    assert (lengths < rows.shape[1]).all()  # every row has padding to scramble
    noisy = rows.clone()
    pad = torch.arange(rows.shape[1]) >= lengths[:, None]
    noisy[pad] = torch.randint(0, recipe.cfg.vocab_size, (int(pad.sum()),))
    for pool in ("mean", "cls"):
        recipe.cfg = replace(recipe.cfg, pool=pool)
        for name in ("bidirectional", "left_to_right"):
            logits = recipe.classify(model[name], rows, lengths)
            assert torch.allclose(logits, recipe.classify(model[name], noisy, lengths), atol=1e-5)
    recipe.cfg = replace(recipe.cfg, pool="mean")
    arm = model["bidirectional"]
    real = torch.arange(rows.shape[1]) < lengths[:, None]
    states = arm.transformer.encode(rows, real)
    mean = torch.stack([states[i, : lengths[i]].mean(0) for i in range(len(rows))])
    assert torch.allclose(recipe.classify(arm, rows, lengths), arm.classifier(mean), atol=1e-5)
    recipe.cfg = keep


def test_replaced_word_task_on_a_hand_made_play():
    words = [f"word{i:02d}" for i in range(40)]  # speeches need ≥ 80 characters
    text = "\n\n".join(["A:\n" + " ".join(words[:20]), "B:\n" + " ".join(words[20:])])
    play = plays.Play("hand-made", "Hand-made", "comedy", text)
    task = plays.replaced_word_task(words=4, test_fraction=1 / 2, source=[play])
    assert task.classes == ("0", "1", "2", "3")  # a pointer over the positions: chance 1/4
    assert len(task.train) == 4 and len(task.test) == 4  # windows of 4 + 1 (the left neighbour)
    originals = {" ".join(words[i + 1 : i + 5]) for i in range(0, 40, 5)}
    for text, at in task.train + task.test:
        shown = text.split()
        match = [
            o.split()
            for o in originals
            if sum(a != b for a, b in zip(o.split(), shown, strict=True)) == 1
        ]
        assert len(match) == 1 and match[0][at] != shown[at]  # exactly the labelled word differs
        left = words[words.index(match[0][0]) - 1 + at]
        # every word follows one other here, so the draw falls back to the unigram pool
        assert shown[at] in words and shown[at] != words[words.index(left) + 1]
    assert plays.replaced_word_task(words=4, test_fraction=1 / 2, source=[play]) == task
    full = plays.replaced_word_task(words=16)  # the real held-out plays
    assert len({t for t, _ in full.train} & {t for t, _ in full.test}) == 0
    labels = [y for _, y in full.train]
    assert (
        set(labels) == set(range(16)) and max(map(labels.count, range(16))) < 2 * len(labels) / 16
    )
    successors = {}
    for play in plays.split()[1]:
        ws = [w for _, body in plays.speeches(play) for w in body.split()]
        for a, b in itertools.pairwise(ws):
            successors.setdefault(a, set()).add(b)
    # a bigram draw: most replacements follow their left neighbour somewhere in the plays
    fits = [t.split()[y] in successors.get(t.split()[y - 1], ()) for t, y in full.test if y]
    assert sum(fits) > 0.8 * len(fits)


def test_sentence_end_task_on_a_hand_made_play():
    """plays.sentence_end_task (the mini's task): `words` + 1 words with the punctuation removed,
    exactly one of the first `words` ended a sentence; the label is its position."""
    first = "One two three four. Five six, seven eight; nine ten eleven twelve thirteen fourteen"
    second = (
        "Alpha beta gamma delta epsilon zeta eta! Theta iota kappa lambda mu nu xi omicron pi rho"
    )
    text = "\n\n".join(["A:\n" + first, "B:\n" + second])
    play = plays.Play("hand-made", "Hand-made", "comedy", text)
    task = plays.sentence_end_task(words=4, test_fraction=1 / 2, source=[play])
    assert task.classes == ("0", "1", "2", "3")  # a pointer over the positions: chance 1/4
    # windows of 4 + 1 words; only those with one sentence end among the first 4 are kept
    assert task.train == (("One two three four Five", 3),)
    assert task.test == (("zeta eta Theta iota kappa", 1),)
    full = plays.sentence_end_task(words=16)  # the real held-out plays
    assert len({t for t, _ in full.train} & {t for t, _ in full.test}) == 0
    for t, _ in full.train + full.test:
        shown = t.split()
        assert len(shown) == 17 and not any(w[-1] in ".,;:!?" for w in shown)
    labels = [y for _, y in full.train]
    assert (
        set(labels) == set(range(16)) and max(map(labels.count, range(16))) < 1.5 * len(labels) / 16
    )
    assert plays.sentence_end_task(words=16) == full  # deterministic


def test_mini_task_is_token_level_sentence_end(recipe):
    """The mini's labelled task: which word ends the sentence, one score per word (Fig. 4c/d)."""
    assert MINI.task == "sentence_end" and recipe.token_level
    assert recipe.num_classes == recipe.cfg.task_words and recipe.data_source().count("sentence")
    assert len(recipe.train_labels) > 1000  # 9 words of the tiny test setup fit 24 tokens


def test_token_level_head_scores_each_words_last_token(token_recipe):
    """task = replaced_word: one output (SQuAD's start vector) on every token's own state; a
    word's score is its last token's; the left-to-right arm stays causal at fine-tuning."""
    assert token_recipe.token_level and token_recipe.num_classes == token_recipe.cfg.task_words == 8
    assert (
        len(token_recipe.train_labels) > 1000
    )  # only the few texts that overflow 24 tokens dropped
    model = token_recipe.build_model().eval()
    assert model["bidirectional"].classifier.out_features == 1
    text = "with child, let her appear"
    rows, lengths = token_recipe.encode_task([text])
    pieces = [token_recipe.tokenizer.id_to_token(int(t)) for t in rows[0, 1 : lengths[0] - 1]]
    ends = [i + 1 for i, p in enumerate(pieces) if i + 1 == len(pieces) or pieces[i + 1][0] == "Ġ"]
    assert len(ends) == len(text.split())
    scores = torch.arange(rows.shape[1], dtype=torch.float)[None]
    got = token_recipe.word_scores(scores, rows, lengths)[0]
    assert got[: len(ends)].tolist() == ends and (got[len(ends) :] == -1e4).all()
    # the left-to-right arm's score of a word never depends on the words after it
    other = rows.clone()
    other[0, ends[1] + 1 : lengths[0] - 1] = token_recipe.tokenizer.token_to_id("Ġthe")  # new words
    ltr = model["left_to_right"]
    a, b = token_recipe.classify(ltr, rows, lengths), token_recipe.classify(ltr, other, lengths)
    assert torch.allclose(a[0, :2], b[0, :2], atol=1e-5)
    enc = model["bidirectional"]
    a, b = token_recipe.classify(enc, rows, lengths), token_recipe.classify(enc, other, lengths)
    assert not torch.allclose(a[0, :2], b[0, :2])


def test_mini_network_options_leave_the_paper_network_alone(recipe):
    """norm / positions: the mini's pre-LN and relative position bias (its deviations, measured in
    recipes/bert.py); the default config and the paper sizes keep BERT's post-LN, learned positions."""
    from papercli.recipes.bert import BERTConfig

    assert (BERTConfig().norm, BERTConfig().positions) == ("post", "learned")
    assert (MINI.norm, MINI.positions, MINI.mask_rate) == ("pre", "relative", 0.4)
    arm = recipe.build_arm("bidirectional")
    assert arm.transformer.cfg.norm == recipe.cfg.norm
    assert arm.transformer.cfg.positions == recipe.cfg.positions
    post = replace(recipe.cfg, norm="post", positions="learned")
    keep, recipe.cfg = recipe.cfg, post
    try:
        cfg = recipe.build_arm("left_to_right").transformer.cfg
        assert (cfg.norm, cfg.positions, cfg.arch) == ("post", "learned", "decoder")
    finally:
        recipe.cfg = keep


def test_masked_lm_inputs_static_and_dynamic(recipe):
    x, _ = recipe.stream.at(torch.arange(8))
    inputs, targets = recipe.mlm_inputs(x, None)
    assert (inputs[:, 0] == recipe.special["[CLS]"]).all()
    assert (inputs[:, -1] == recipe.special["[SEP]"]).all()
    chosen = targets != IGNORE
    assert chosen.any() and not chosen[:, 0].any() and not chosen[:, -1].any()
    assert (targets[chosen] == x[:, :-2][chosen[:, 1:-1]]).all()  # the original window tokens
    again = recipe.mlm_inputs(x, None)
    assert torch.equal(inputs, again[0]) and torch.equal(targets, again[1])  # static (BERT)
    assert not torch.equal(targets, recipe.mlm_inputs(x, 5)[1])  # dynamic: fresh at step 5
    arm = recipe.build_model()["bidirectional"]
    assert torch.equal(recipe.mlm_loss(arm, x, None), recipe.mlm_loss(arm, x, None))


def test_short_run_through_the_cli_and_two_steps_do_not_reproduce(tmp_path, plays_home):
    out = tmp_path / "short"
    proc = papercli(
        "reproduce", "bert", "--steps", "2", "--out", str(out), "--json", "--batch-size", "8",
        "--set", "vocab_size=512", "--set", "context=32", "--set", "dim=32", "--set", "layers=1",
        "--set", "finetune_batch_size=8", "--set", "eval_texts=120", "--set", "task_words=8",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    record = json.loads(proc.stdout)
    assert record["verdict"] == "not reproduced"
    m = record["metrics"]
    floor = next(c for c in record["checks"] if c["metric"] == "bidirectional_above_chance")
    # which of 8 words ends the sentence (task_words=8): chance 1/8
    assert m["bidirectional_above_chance"] < floor["target"] and m["chance_acc"] == 1 / 8
    assert m["bidirectional_above_chance"] == pytest.approx(
        (m["bidirectional_test_acc"] - 1 / 8) / (1 - 1 / 8)
    )
    assert m["bidirectional_over_ltr"] == m["bidirectional_test_acc"] - m["left_to_right_test_acc"]
    assert m["bidirectional_gain"] == m["bidirectional_test_acc"] - m["scratch_test_acc"]
    assert m["bidirectional_heldout_mlm_loss"] > 0 and m["left_to_right_heldout_lm_loss"] > 0
    assert not floor["passed"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "train_pretrain_bidirectional" in rows[0]
