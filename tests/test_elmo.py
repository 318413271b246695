"""ELMo recipe: the released biLM's parameter count on the meta device, what each direction of the
biLM may see, one frozen biLM read by every arm, a 2-step run that must not reproduce."""

from __future__ import annotations

import json
from dataclasses import replace

import torch
from test_reproduce_cli import papercli

from papercli.models.bilm import BiLM, BiLMConfig, char_table
from papercli.recipes.elmo import MINI, ELMoRecipe
from papercli.reproduce.recipe import Context


def test_paper_scale_is_the_released_bilm():
    plan = json.loads(
        papercli("reproduce", "elmo", "--scale", "paper", "--dry-run", "--json").stdout
    )
    bilm = plan["arm_params"]["bilm"]
    softmax = 793_471 * 512 + 793_471  # the 1B Word Benchmark's vocabulary
    assert bilm["trainable"] - softmax == 93_600_864  # the release's 93.6M (Sec. 3.4)
    assert bilm["total"] - bilm["trainable"] == 4 * 4 * 4096  # torch's second bias, frozen at 0
    assert set(plan["arm_params"]) == {"bilm", "elmo", "static"}
    assert plan["arm_params"]["elmo"]["total"] > plan["arm_params"]["static"]["total"]


def test_char_spelling_and_what_each_direction_sees():
    table = char_table(["ab", "é"], max_chars=6)
    assert table.tolist() == [[259, 98, 99, 260, 0, 0], [259, 196, 170, 260, 0, 0]]
    torch.manual_seed(0)
    cfg = BiLMConfig(vocab_size=30, dim=8, hidden=16, filters=((1, 4), (3, 4)), char_dim=4)
    bilm = BiLM(cfg).eval()
    bilm.set_spellings([f"t{i}" for i in range(30)])
    tokens = torch.randint(0, 30, (2, 7))
    lengths = torch.tensor([7, 4])
    with torch.no_grad():
        x, fwd, bwd = bilm.directions(tokens, lengths)
        changed = tokens.clone()
        changed[:, 2] = (changed[:, 2] + 1) % 30
        changed[1, 5] = (changed[1, 5] + 1) % 30  # padding of row 1
        _, fwd2, bwd2 = bilm.directions(changed, lengths)
        layers = bilm.layers(tokens, lengths)
    for j in range(2):  # forward LM: positions before 2 unchanged; backward: after 2 unchanged
        torch.testing.assert_close(fwd[j][:, :2], fwd2[j][:, :2])
        torch.testing.assert_close(bwd[j][0, 3:], bwd2[j][0, 3:])
        torch.testing.assert_close(bwd[j][1, 3:4], bwd2[j][1, 3:4])  # padding never read
        assert not torch.allclose(fwd[j][:, 2:], fwd2[j][:, 2:])
    assert layers.shape == (3, 2, 7, 16)
    torch.testing.assert_close(layers[0], torch.cat([x, x], -1))  # h_k,0 = [x_k; x_k]


def _recipe(**overrides) -> ELMoRecipe:
    cfg = replace(MINI, vocab_size=512, context=24, dim=16, hidden=24, task_hidden=8, **overrides)
    recipe = ELMoRecipe(cfg, Context(device=torch.device("cpu"), seed=0, global_batch=4))
    recipe.ctx.split_batch(4, 0)
    recipe.setup_data()
    return recipe


def test_one_frozen_bilm_is_pretrained_then_read_by_every_arm():
    from papercli.reproduce.loop import Trainer, optimizer_slots

    recipe = _recipe(steps=4, pretrain_fraction=0.5, finetune_batch_size=4,
                     arms=("elmo", "static", "last_layer"))  # fmt: skip
    model = recipe.build_model()
    slots = optimizer_slots(recipe.configure_optimizers(model), model)
    assert set(slots) == {"bilm/pretrain", "elmo/finetune", "static/finetune",
                          "last_layer/finetune"}  # fmt: skip
    trainer = Trainer(recipe, model, model, slots)

    def snapshot():
        return {n: [p.detach().clone() for p in model[n].parameters()] for n in model}

    def changed(before, name: str) -> bool:
        return any(
            not torch.equal(a, b)
            for a, b in zip(before[name], model[name].parameters(), strict=True)
        )

    before = snapshot()
    assert set(recipe.train_step(0, trainer)) == {"loss", "pretrain_bilm"}
    assert changed(before, "bilm") and not any(changed(before, n) for n in recipe.cfg.arms)
    before = snapshot()
    logged = recipe.train_step(2, trainer)  # phase 2: the biLM stays as it is
    assert set(logged) == {"loss", "finetune_elmo", "finetune_static", "finetune_last_layer"}
    assert not changed(before, "bilm") and all(changed(before, n) for n in recipe.cfg.arms)
    assert model["elmo"].w.shape == (3,) and model["last_layer"].w.shape == (1,)
    metrics = recipe.evaluate(model)
    assert {"elmo_test_acc", "static_test_acc", "last_layer_test_acc", "bilm_heldout_loss"} <= set(
        metrics
    )
    assert abs(sum(metrics[f"elmo_s{j}"] for j in range(3)) - 1) < 1e-6  # softmax-normalised


def test_two_steps_through_the_cli_do_not_reproduce(tmp_path):
    proc = papercli(
        "reproduce", "elmo", "--steps", "2", "--out", str(tmp_path / "run"), "--json",
        "--batch-size", "8", "--set", "vocab_size=512", "--set", "context=32", "--set", "dim=16",
        "--set", "hidden=32", "--set", "finetune_batch_size=8", "--set", "eval_texts=60",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    record = json.loads(proc.stdout)
    assert record["verdict"] == "not reproduced"
    m = record["metrics"]
    assert m["elmo_gain"] == m["elmo_test_acc"] - m["static_test_acc"]
    assert m["chance_acc"] == 0.5  # the mini's task: real vs shuffled word order
    assert not next(c for c in record["checks"] if c["metric"] == "elmo_test_acc")["passed"]
    bad = papercli("reproduce", "elmo", "--dry-run", "--set", "arms=elmo,glove")
    assert bad.returncode == 2 and "unknown arm(s) glove" in bad.stderr
