"""LoRA: adapters that start at the base exactly, train only A and B, merge into W with the same
outputs; the trainable-parameter counts on the meta device (the mini's arms with their head, GPT-2
Medium at paper scale); tiny runs through the CLI on a tiny base (the mini's classification task
and the language-modelling one), and a 2-step run that must not reproduce."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from test_base_model import TINY
from test_reproduce_cli import papercli

from papercli.methods import lora
from papercli.models.transformer import Transformer, TransformerConfig
from papercli.reproduce.base_model import ensure_mini_base

SMALL = TransformerConfig(vocab_size=64, dim=32, layers=2, heads=4, ff_dim=64, max_len=16)
# the tiny runs: a short context the tiny base reads, few held-out windows; the 2-step control
# keeps the mini's warm-up (the tiny base is so raw that any full-rate step would adapt it)
CONTROL = ("context=16", "eval_sequences=8")
TINY_RUN = (*CONTROL, "eval_every=4", "warmup_steps=1")
# the mini's task (word order) at a tiny size: few labelled texts, a third of the test set
TASK = ("labelled_per_class=16", "eval_texts=200")
TINY_DIM, TINY_LAYERS = 32, 2  # the tiny base: the gpt-2 recipe's d32 arm


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> str:
    """A tiny base (seconds to train), shared by the CLI tests through --set base=PATH."""
    home = tmp_path_factory.mktemp("tiny-base-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAPERCLI_HOME", str(home))
        return str(ensure_mini_base(TINY, log=lambda *_: None))


def tiny_run(paper: str, out, base: str, *settings: str) -> dict:
    """8 steps of `paper` on the tiny base through the CLI: its result record."""
    sets = [a for s in (f"base={base}", *TINY_RUN, *settings) for a in ("--set", s)]
    proc = papercli(
        "reproduce", paper, "--steps", "8", "--batch-size", "8", "--out", str(out), "--json",
        *sets,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def _train(model: torch.nn.Module, steps: int = 20) -> None:
    """A few real Adam steps on next-token prediction of random tokens."""
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        x = torch.randint(0, SMALL.vocab_size, (4, SMALL.max_len + 1), generator=g)
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_adapters_start_at_the_base_train_alone_and_merge_with_the_same_outputs():
    torch.manual_seed(0)
    base = Transformer(SMALL).eval()
    x = torch.randint(0, SMALL.vocab_size, (2, SMALL.max_len))
    adapted = lora.apply_lora(copy.deepcopy(base), ("q", "v"), rank=4, alpha=8.0).eval()
    with torch.no_grad():
        assert torch.equal(adapted(x), base(x))  # B = 0: exactly the base's outputs

    trainable = {n: p.numel() for n, p in adapted.named_parameters() if p.requires_grad}
    assert all(".A." in n or ".B." in n for n in trainable)
    # per layer: q (A 4×32, B 32×4) and v (A 4×32, B 32×4, the v half of the packed kv)
    assert sum(trainable.values()) == SMALL.layers * 2 * (4 * 32 + 32 * 4)

    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    _train(adapted)
    for key, value in frozen.items():  # W0 never moved
        name = key.replace("attn.q.", "attn.q.base.").replace("attn.kv.", "attn.kv.base.")
        assert torch.equal(adapted.state_dict()[name], value)
    with torch.no_grad():
        tuned = adapted(x)
        assert not torch.allclose(tuned, base(x), atol=1e-3)  # it did learn something
        merged = lora.merge(copy.deepcopy(adapted))
        assert torch.allclose(merged(x), tuned, atol=1e-5, rtol=1e-5)
    kv = merged.decoder[0].attn.kv.base.weight
    d = SMALL.dim
    assert torch.equal(kv[:d], frozen["decoder.0.attn.kv.weight"][:d])  # k rows untouched
    assert not torch.equal(kv[d:], frozen["decoder.0.attn.kv.weight"][d:])  # v rows absorbed BA
    state = lora.trained_state(adapted)
    assert set(state) == {n for n in trainable}


def test_unknown_target_and_rank_are_refused():
    with pytest.raises(ValueError, match="unknown LoRA target"):
        lora.apply_lora(Transformer(SMALL), ("w_q",))
    with pytest.raises(ValueError, match="rank"):
        lora.apply_lora(Transformer(SMALL), rank=0)


def test_paper_scale_counts_gpt2_medium_with_r4_on_wq_wv():
    plan = json.loads(
        papercli("reproduce", "lora", "--scale", "paper", "--dry-run", "--json").stdout
    )
    arms = plan["arm_params"]
    # 24 layers × (Wq + Wv) × (A: 4 × 1024 + B: 1024 × 4); Table 3 prints 0.35M (see the recipe)
    assert arms["lora"]["trainable"] == 24 * 2 * (4 * 1024 + 1024 * 4) == 393_216
    assert arms["full"]["trainable"] == arms["base"]["total"] == 354_823_168  # GPT-2 Medium
    assert arms["base"]["trainable"] == 0


def test_tiny_run_on_the_task_reports_sizes_and_two_steps_do_not_reproduce(
    tmp_path, tiny_base, runner
):
    from conftest import two_step_control

    out = tmp_path / "run"
    m = tiny_run("lora", out, tiny_base, *TASK)["metrics"]
    head = TINY_DIM * 2 + 2  # the new linear head: 2 classes (in order / shuffled)
    assert m["head_trainable_params"] == head
    assert m["full_trainable_params"] == m["base_params"] + head
    # per layer: A (4 × d) and B (d × 4) on Wq and on Wv, plus the head
    assert m["lora_trainable_params"] == TINY_LAYERS * 2 * 2 * 4 * TINY_DIM + head
    for arm in ("head", "full", "lora"):
        assert 0 <= m[f"{arm}_test_acc"] <= 1
        assert m[f"{arm}_optimizer_bytes"] == 2 * 4 * m[f"{arm}_trainable_params"]  # Adam's moments
    assert m["lora_minus_full_acc"] == m["lora_test_acc"] - m["full_test_acc"]
    assert m["lora_minus_head_acc"] == m["lora_test_acc"] - m["head_test_acc"]
    assert m["chance_acc"] == 0.5
    assert (out / "lora_adapter.safetensors").stat().st_size == m["lora_checkpoint_bytes"]
    assert (out / "head_only.safetensors").stat().st_size == m["head_checkpoint_bytes"]
    assert m["lora_checkpoint_bytes"] < m["full_checkpoint_bytes"] / 5
    assert m["lora_merge_max_abs_diff"] <= 1e-5

    failed = two_step_control(
        runner, "lora", tmp_path / "control", f"base={tiny_base}", *CONTROL, *TASK
    )
    assert "lora_test_acc" in failed  # two steps leave every arm near chance


def test_tiny_run_of_the_language_modelling_task_still_adapts(tmp_path, tiny_base):
    out = tmp_path / "run"
    m = tiny_run("lora", out, tiny_base, "task=lm")["metrics"]
    assert m["full_trainable_params"] == m["base_params"] > m["lora_trainable_params"] > 0
    assert m["lora_optimizer_bytes"] == 2 * 4 * m["lora_trainable_params"]  # Adam's two moments
    assert m["full_optimizer_bytes"] == 2 * 4 * m["full_trainable_params"]
    assert m["lora_checkpoint_bytes"] < m["full_checkpoint_bytes"] / 5
    assert (out / "lora_adapter.safetensors").stat().st_size == m["lora_checkpoint_bytes"]
    assert m["lora_merge_max_abs_diff"] <= 1e-5
    assert m["full_heldout_loss"] < m["base_heldout_loss"]  # eight steps already adapt
    assert "lora_minus_full_loss" in m and "base_minus_lora_loss" in m


def test_the_mini_counts_the_head_in_every_arm_and_lora_under_one_percent():
    plan = json.loads(papercli("reproduce", "lora", "--dry-run", "--json").stdout)
    arms = plan["arm_params"]
    base = 932_608  # the d128 mini base (tied embedding and output layer once)
    head = 128 * 2 + 2
    assert arms["head"]["trainable"] == head
    assert arms["full"]["trainable"] == base + head
    assert arms["lora"]["trainable"] == 4 * 2 * (4 * 128 + 128 * 4) + head == 8_450
    assert arms["lora"]["trainable"] / base < 0.01


def test_each_task_refuses_the_other_task_s_reference_arm():
    proc = papercli("reproduce", "lora", "--dry-run", "--set", "arms=base,lora")
    assert proc.returncode != 0 and "not one of task word_order's arms" in proc.stderr
    proc = papercli("reproduce", "lora", "--dry-run", "--set", "task=lm", "--set", "arms=head")
    assert proc.returncode != 0 and "not one of task lm's arms" in proc.stderr


def test_a_base_that_is_not_a_model_is_a_clear_error(tmp_path):
    proc = papercli("reproduce", "lora", "--set", f"base={tmp_path}", "--out", str(tmp_path / "r"))
    assert proc.returncode != 0
    assert "not a base model folder" in proc.stderr and "Traceback" not in proc.stderr

    texts = tmp_path / "texts"
    texts.mkdir()
    for name in ("a", "b"):
        (texts / f"{name}.txt").write_text("Some words to read. " * 20)
    proc = papercli(
        "reproduce", "lora", "--scale", "paper", "--data", str(texts), "--out", str(tmp_path / "p")
    )
    assert proc.returncode != 0 and "pass --set base=PATH" in proc.stderr  # never trains one


def test_a_new_play_is_cut_into_adaptation_and_held_out_text_at_line_ends():
    from papercli.data import plays
    from papercli.recipes.lora import new_play_parts

    text = plays.split()[1][0].text
    adapt, held = new_play_parts(text, 0.2, 1.0)
    assert adapt + held == text and held.startswith("\n")
    assert len(held) == pytest.approx(0.2 * len(text), rel=0.01)
    small, held_again = new_play_parts(text, 0.2, 0.1)  # less adaptation text, same held-out
    assert held_again == held and adapt.startswith(small) and adapt[len(small)] == "\n"
    assert len(small) == pytest.approx(0.1 * len(adapt), rel=0.02)


def test_the_mini_starts_from_its_own_longer_trained_base_and_qlora_keeps_the_shared_one():
    from papercli.recipes import lora as lora_recipe
    from papercli.recipes import qlora
    from papercli.reproduce.base_model import MiniBase

    assert lora_recipe.MINI.base_steps == 4000 > MiniBase().steps == qlora.MINI.base_steps
    assert lora_recipe.LoRAConfig().base_steps == MiniBase().steps  # the default is shared
    names = {
        MiniBase(steps=lora_recipe.MINI.base_steps).name,
        MiniBase(steps=qlora.MINI.base_steps).name,
    }
    assert len(names) == 2  # two cache keys: the shared base is not retrained or replaced
