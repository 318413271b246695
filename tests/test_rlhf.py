"""The alignment layer (methods/rlhf.py, recipes/_alignment.py) against hand computations, and a
fast CLI run of each alignment recipe on a tiny base; 2-step runs do not reproduce."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from test_lora import tiny_base  # noqa: F401  (the session's tiny base, a fixture)
from test_reproduce_cli import papercli

from papercli.methods import rlhf
from papercli.models.transformer import Transformer, TransformerConfig
from papercli.recipes._alignment import pair_agreement, pairwise_loss, true_score

SMALL = TransformerConfig(vocab_size=50, dim=16, layers=1, heads=2, ff_dim=32, max_len=16)
# tiny pipelines: prompts of 4 tokens, responses of 8, few samples everywhere
TINY = (
    "context=16", "prompt_tokens=4", "response_tokens=8", "sft_prompts=16", "sft_candidates=2",
    "rm_prompts=8", "rm_heldout_prompts=8", "rank_k=4", "rm_batch_prompts=4", "eval_prompts=16",
    "ai_labeler_examples=16", "eval_every=4", "final_eval_prompts=32",
)  # fmt: skip


def test_reward_model_loss_is_eq1_on_a_hand_case():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    # −mean(log σ(1), log σ(−1))
    want = -(math.log(1 / (1 + math.exp(-1))) + math.log(1 / (1 + math.exp(1)))) / 2
    assert rlhf.reward_model_loss(chosen, rejected).item() == pytest.approx(want)
    # all pairs of a prompt's ranked samples: ranks (2, 1, 1) give pairs (0,1), (0,2) only
    rewards, ranks = torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[2.0, 1.0, 1.0]])
    pair = -(math.log(1 / (1 + math.exp(-2))) + math.log(1 / (1 + math.exp(-1)))) / 2
    assert pairwise_loss(rewards, ranks).item() == pytest.approx(pair)
    assert pair_agreement(torch.tensor([[3.0, 1.0, 4.0]]), ranks) == 0.5


def test_rlaif_reward_model_learns_soft_labels_on_the_rules_pairs():
    """rlaif's labeler loss: hard labels on all pairs are the shared Eq. 1 on the labeler's
    scores; `ai_pairs=rule` keeps the pairs the rule orders; soft labels are σ(s_i − s_j)."""
    import dataclasses

    from papercli.recipes.rlaif import MINI, RLAIFRecipe

    recipe = RLAIFRecipe.__new__(RLAIFRecipe)
    recipe.comparisons = {
        "train_ai": torch.tensor([[2.0, 0.0, 1.0]]),
        "train_rule": torch.tensor([[1.0, 0.0, 0.0]]),  # the rule ties samples 1 and 2
    }
    rewards, idx = torch.tensor([[0.5, 1.0, -1.0]]), torch.tensor([0])

    def loss(**sets) -> float:
        recipe.cfg = dataclasses.replace(MINI, **sets)
        return recipe.preference_loss("ai", rewards, idx).item()

    ai = recipe.comparisons["train_ai"]
    assert loss(ai_pairs="all", soft_labels=False) == pytest.approx(pairwise_loss(rewards, ai))
    # the rule's pairs (0,1), (0,2); the labeler prefers 0 in both
    hard = -(
        math.log(torch.sigmoid(torch.tensor(-0.5))) + math.log(torch.sigmoid(torch.tensor(1.5)))
    )
    assert loss(ai_pairs="rule", soft_labels=False) == pytest.approx(hard / 2)
    p01, p02 = torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(1.0))
    want = F.binary_cross_entropy_with_logits(torch.tensor([-0.5, 1.5]), torch.stack([p01, p02]))
    assert loss(ai_pairs="rule", soft_labels=True) == pytest.approx(want.item())
    # the rule's reward model is untouched: Eq. 1 on the rule's rankings
    rule = recipe.preference_loss("rule", rewards, idx)
    assert rule.item() == pairwise_loss(rewards, recipe.comparisons["train_rule"]).item()


def test_ppo_clips_the_ratio_and_the_value():
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    out = rlhf.ppo_losses(logp, old, adv, torch.full((1, 3), 2.0), old, torch.ones(1, 3))
    # min(ρA, clip(ρ)A): 1.2 (clipped), −0.8 (clipped: −0.5 > −0.8), 2.2 (inside)
    assert out["policy"].item() == pytest.approx(-(1.2 - 0.8 + 2.2) / 3)
    # V = 2 from old 0 is clipped to 0.2; max((2 − 1)², (0.2 − 1)²) = 1
    assert out["value"].item() == pytest.approx(0.5)


def test_gae_matches_a_hand_computation():
    rewards = torch.tensor([[0.0, 1.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    gamma, lam = 0.9, 0.8
    d2 = 2.0 - 1.5
    d1 = 1.0 + gamma * 1.5 - 1.0
    d0 = 0.0 + gamma * 1.0 - 0.5
    a2, a1 = d2, d1 + gamma * lam * d2
    a0 = d0 + gamma * lam * a1
    adv, ret = rlhf.gae(rewards, values, gamma, lam)
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2]]))
    assert torch.allclose(ret, adv + values)


def test_kl_penalty_is_zero_when_the_policy_is_the_reference():
    torch.manual_seed(0)
    policy = Transformer(SMALL).eval()
    prompts = torch.randint(0, 50, (4, 3))
    tokens, logp = rlhf.sample(policy, prompts, 5, torch.Generator().manual_seed(0))
    assert tokens.shape == (4, 8) and torch.equal(tokens[:, :3], prompts)
    ref = rlhf.response_logprobs(policy, tokens, 5)
    assert torch.allclose(logp, ref)
    score = torch.tensor([1.0, -1.0, 0.5, 0.0])
    rewards = rlhf.kl_rewards(score, logp, ref, beta=0.1)
    assert torch.equal(rewards[:, :-1], torch.zeros(4, 4)) and torch.equal(rewards[:, -1], score)
    other = Transformer(SMALL).eval()  # another policy: a positive KL estimate on its samples
    _, own = rlhf.sample(other, prompts, 5, torch.Generator().manual_seed(0))
    assert rlhf.kl_rewards(torch.zeros(4), own, own - 0.3, beta=0.1)[:, 0].allclose(
        torch.full((4,), -0.03)
    )


def test_the_rule_counts_distinct_warm_words_and_charges_repeats():
    assert true_score("My sweet love, my dear") == 3
    assert true_score("love love love") == 1 - 0.5 * 2
    assert true_score("Lovely? no: gloves.") == 0  # whole words only


@pytest.mark.parametrize("paper", ["instructgpt", "learning-to-summarize", "rlaif"])
def test_tiny_pipeline_through_the_cli(paper, tmp_path, tiny_base):  # noqa: F811
    sets = [a for s in (f"base={tiny_base}", *TINY) for a in ("--set", s)]
    proc = papercli(
        "reproduce", paper, "--steps", "12", "--batch-size", "8", "--out", str(tmp_path), "--json",
        *sets,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    m = json.loads(proc.stdout)["metrics"]
    assert 0.0 <= m["rm_heldout_accuracy"] <= 1.0 and m["sft_kl"] == pytest.approx(0.0, abs=1e-4)
    policies = {"instructgpt": ("ppo", "ppo_ptx"), "rlaif": ("rlhf", "rlaif")}.get(paper, ("ppo",))
    for name in policies:
        assert math.isfinite(m[f"{name}_true_score"]) and m[f"{name}_kl"] > -1.0
    if paper == "rlaif":
        assert 0.0 <= m["labeler_agreement"] <= 1.0
        assert 0.0 <= m["labeler_agreement_unseen"] <= 1.0  # prompts past its 16 exemplars
    if paper == "learning-to-summarize":
        assert 0.0 <= m["true_peak_position"] <= 1.0


@pytest.mark.parametrize(
    ("paper", "must_fail"),
    [
        ("instructgpt", {"ppo_minus_sft_true_score", "ppo_true_score"}),
        ("rlaif", {"rlhf_minus_sft_true_score", "rlaif_minus_sft_true_score"}),
        # two steps never reach PPO: no curve, so none of Fig. 5's checks can pass
        ("learning-to-summarize", {"true_peak_minus_sft", "true_peak_minus_last"}),
    ],
)
def test_two_steps_do_not_reproduce(paper, must_fail, tmp_path, tiny_base, runner):  # noqa: F811
    from conftest import two_step_control

    failed = two_step_control(runner, paper, tmp_path, f"base={tiny_base}", *TINY)
    assert must_fail <= failed


def test_summarize_mini_changes_only_its_own_settings():
    """learning-to-summarize's mini: 64 comparison prompts (with 32, seed 1 did not reproduce;
    measurements in the recipe's docstring), β 0.002, PPO lr 1.5e-4; the run shape shared with
    instructgpt and rlaif (MINI_RUN) is untouched."""
    from papercli.recipes._alignment import MINI_RUN
    from papercli.recipes.learning_to_summarize import MINI

    assert (MINI.rm_prompts, MINI.beta, MINI.lr) == (64, 0.002, 1.5e-4)
    assert MINI_RUN == {
        "steps": 150, "batch_size": 32, "eval_every": 15, "log_every": 10, "grad_clip": 1.0
    }  # fmt: skip
    assert all(getattr(MINI, k) == v for k, v in MINI_RUN.items())


def test_rlaif_mini_relabels_the_rules_pairs_with_soft_labels():
    """rlaif's mini (issue 17): the labeler reads final states and embeddings, its reward model
    learns soft labels on the pairs the rule orders; 128 comparison prompts (256 and 512 did not
    help; measurements in the recipe's docstring); the final scores on 1,024 held-out prompts."""
    from papercli.recipes.rlaif import MINI

    assert (MINI.ai_pairs, MINI.soft_labels, MINI.ai_labeler_reads) == ("rule", True, "embeddings")
    assert (MINI.rm_prompts, MINI.ai_labeler_examples) == (128, 256)
    # the final scores on 1,024 held-out prompts; the other recipes keep the evaluations' 128
    from papercli.recipes import instructgpt, learning_to_summarize

    assert (MINI.eval_prompts, MINI.final_eval_prompts) == (128, 1024)
    assert instructgpt.MINI.final_eval_prompts == learning_to_summarize.MINI.final_eval_prompts == 0


def test_paper_scale_counts_gpt3_shapes_and_a_run_needs_a_base(tmp_path):
    def dry(*sets: str) -> dict:
        args = [a for s in sets for a in ("--set", s)]
        proc = papercli(
            "reproduce", "instructgpt", "--scale", "paper", "--dry-run", "--json", *args
        )
        return json.loads(proc.stdout)["arm_params"]

    arms = dry()
    assert arms["base"]["total"] == 1_315_723_264  # GPT-3 XL, "1.3B" (tied 50,257-token BPE)
    assert arms["ppo_value"]["total"] == 2048 + 1  # a scalar head on the policy's trunk
    big = dry("base_arch=gpt3-175b", "ptx_coef=27.8")["base"]["total"]
    assert 174e9 < big < 176e9
    proc = papercli("reproduce", "instructgpt", "--scale", "paper", "--out", str(tmp_path / "r"))
    assert proc.returncode != 0 and "pass --set base=PATH" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_over_optimisation_curve_is_read_in_kl_order():
    """learning_to_summarize's verdict metrics on a hand-made curve (Fig. 5): checkpoints sorted by
    KL, the true score's peak interior and above SFT, the RM score rising; too few checkpoints
    give no curve metrics, so a too-short run cannot reproduce."""
    from papercli.recipes.learning_to_summarize import SummarizeRecipe

    recipe = object.__new__(SummarizeRecipe)  # final_metrics reads only the recorded curve
    recipe.curve = [  # recorded in step order; KL is not monotone in steps
        {"ppo_kl": 30.0, "ppo_true_score": 1.5, "ppo_rm_score": 1.2},
        {"ppo_kl": 10.0, "ppo_true_score": 0.8, "ppo_rm_score": 0.5},
        {"ppo_kl": 60.0, "ppo_true_score": 0.2, "ppo_rm_score": 2.0},
        {"ppo_kl": 45.0, "ppo_true_score": 1.0, "ppo_rm_score": 1.6},
    ]
    m = recipe.final_metrics(None, {"sft_true_score": 0.5})
    assert m["true_peak"] == 1.5 and m["kl_at_true_peak"] == 30.0 and m["kl_last"] == 60.0
    assert m["true_peak_minus_sft"] == pytest.approx(1.0)
    assert m["true_peak_minus_last"] == pytest.approx(1.3)
    assert m["true_peak_position"] == pytest.approx(1 / 3)
    assert m["rm_kl_rank_correlation"] == pytest.approx(1.0)
    assert m["rm_last_minus_at_true_peak"] == pytest.approx(0.8)
    recipe.curve = recipe.curve[:1]
    assert "true_peak_minus_sft" not in recipe.final_metrics(None, {"sft_true_score": 0.5})
