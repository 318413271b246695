"""Learning to summarize from human feedback (Stiennon et al. 2020, arXiv 2009.01325).

Claim checked at mini scale (Sec. 4.3, Fig. 5: "optimizing against our reward model" too hard
"causes the policy to overfit": as the KL from the supervised policy grows, the reward model's
score keeps rising while the labelers' preference rises, then falls): a reward model trained on
few comparisons, then RL against it with a weak KL penalty; the run's evaluations are checkpoints
along one run, ordered by their KL from the SFT policy (the paper sweeps β instead; one run is
what fits in a mini). Checked: the TRUE score (the fixed rule of recipes/_alignment.py, never
shown to the policy) peaks at an interior checkpoint — above the SFT policy's, then down by a
stated margin at the largest-KL one — while the reward model's score keeps rising with KL (rank correlation,
stated tolerance). A small reward model that saw few comparisons of SFT samples, where repeats
are rare, cannot know the rule's repeat cost, so the policy learns to repeat warm words: that is
the point.

    mini   the pipeline of recipes/_alignment.py with 32 comparison prompts (8 samples each),
           β = 0.002 and PPO lr 1.5e-4 (pushed hard on purpose), 150 steps (≤ 10 min on 2 CPU cores)
    paper  1.3B (--set base_arch=gpt3-6.7b for 6.7B) GPT-3-shaped policies on TL;DR (Reddit
           posts, 512-token context, 48-token summaries) — --dry-run counts; a run needs
           --set base=PATH; the paper's β = 0.05 (Sec. 3.4 / Appendix B) and PPO settings as we
           read them (batch 512, lr 1.5e-5, clip 0.2, γ = 1, λ = 0.95)

Measured (mini, load ~10): seed 0 reproduces the curve — true score SFT 0.55, peak 1.47 at KL 61,
down to −0.04 at KL 73 (0.75 below the peak at the largest KL) while the RM score rises 1.73 →
2.06 (Spearman 0.71) — but seed 1 does not: the policy over-optimises within the first 15 PPO
steps (true 0.39 at KL 32, SFT 0.64), so the rising part falls between two checkpoints (peak only
+0.07 over SFT; Spearman 0.60). Wall 709 s / 712 s at that load, 155 s of CPU time.
Denser checkpoints do not rescue seed 1 (`--set eval_every=5`, 31 points, 145 s one-thread user
CPU): the true score peaks at KL 4.0, only +0.08 over SFT (0.72 vs 0.64; the check wants 0.1),
then falls 0.61 by KL 63 while the RM score rises (Spearman 0.76). So the rise is not hidden
between checkpoints: seed 1's reward model (61 % held-out accuracy) barely points the policy
towards the rule before it starts rewarding repeats. A lower PPO lr or more comparison prompts
are what is left to try.
"""

from __future__ import annotations

import torch
from torch import nn

from papercli.reproduce.engine import run

from ._alignment import MINI_RUN, PAPER_RUN, AlignmentConfig, AlignmentRecipe

MINI = AlignmentConfig(**MINI_RUN, rm_prompts=32, beta=0.002, lr=1.5e-4)
PAPER = AlignmentConfig(
    **PAPER_RUN,
    prompt_tokens=512,
    response_tokens=48,
    beta=0.05,
    lr=1.5e-5,
    batch_size=512,
    ppo_minibatches=8,
    steps=2000,
    eval_every=100,
)


def rank_correlation(a: list[float], b: list[float]) -> float:
    """Spearman's ρ (no tie correction): the Pearson correlation of the ranks."""
    ra = torch.tensor(a).argsort().argsort().float()
    rb = torch.tensor(b).argsort().argsort().float()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / ((ra.norm() * rb.norm()).clamp(min=1e-12)))


class SummarizeRecipe(AlignmentRecipe):
    paper = "learning-to-summarize"
    config_class = AlignmentConfig
    scales = {"mini": MINI, "paper": PAPER}
    policies = {"ppo": ("rm", False)}

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        """The over-optimisation curve: checkpoints along PPO (KL, reward-model score, true)."""
        m = dict(last_eval)
        points = sorted(self.curve, key=lambda p: p["ppo_kl"])  # Fig. 5's x-axis: KL
        if len(points) < 2:  # a run too short to have a curve
            return m
        true = [p["ppo_true_score"] for p in points]
        rm = [p["ppo_rm_score"] for p in points]
        kl = [p["ppo_kl"] for p in points]
        peak = max(range(len(true)), key=true.__getitem__)
        m["true_peak"] = true[peak]
        m["true_peak_minus_sft"] = true[peak] - m["sft_true_score"]
        m["true_peak_minus_last"] = true[peak] - true[-1]
        m["true_peak_position"] = peak / (len(true) - 1)  # 1: the largest-KL checkpoint
        m["kl_at_true_peak"], m["kl_last"] = kl[peak], kl[-1]
        m["rm_kl_rank_correlation"] = rank_correlation(kl, rm)
        m["rm_last_minus_at_true_peak"] = rm[-1] - rm[peak]
        return m


if __name__ == "__main__":
    run(SummarizeRecipe)
