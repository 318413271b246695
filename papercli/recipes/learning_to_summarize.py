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

    mini   the pipeline of recipes/_alignment.py with 64 comparison prompts (8 samples each; still
           few: SFT samples rarely repeat, so the reward model cannot learn the repeat cost),
           β = 0.002 and PPO lr 1.5e-4 (pushed hard on purpose), 150 steps (≤ 10 min on 2 CPU cores)
    paper  1.3B (--set base_arch=gpt3-6.7b for 6.7B) GPT-3-shaped policies on TL;DR (Reddit
           posts, 512-token context, 48-token summaries) — --dry-run counts; a run needs
           --set base=PATH; the paper's β = 0.05 (Sec. 3.4 / Appendix B) and PPO settings as we
           read them (batch 512, lr 1.5e-5, clip 0.2, γ = 1, λ = 0.95)

Measured (the mini at 32 comparison prompts, load ~10): seed 0 reproduces the curve — true score SFT 0.55, peak 1.47 at KL 61,
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

Measured again on the current code (issue 17; the mini base retrained on first use; one-thread
user CPU, 2 shared cores): with 32 prompts seed 1 now fails on the RM curve instead — RM 72 %,
SFT 0.66, true peak 1.95 at KL 45 (+1.29), 0.97 at KL 52, but ρ(KL, RM) 0.19 (107 s). PPO lr
1e-4 (seed 1): peak +1.38, fall 0.30, ρ 0.36: fails (109 s). PPO lr 7.5e-5: seed 1 passes only
through a late recovery (peak 1.71 at KL 57, 1.30 at KL 59, ρ 0.83; ~110 s after the base's
one-off training) and seed 0 fails (peak 1.31 at KL 5.5, ρ 0.62; 106 s). 64 comparison prompts
(the mini now): seed 0 RM 67 %, SFT 0.65, peak 1.81 at KL 51 (+1.16), 0.70 at KL 55 (−1.11),
ρ 0.95 (107 s); seed 1 RM 70 %, SFT 0.66, peak 1.50 at KL 19 (+0.84), −0.08 at KL 59 (−1.59),
ρ 0.83 (110 s): both reproduce. The true score along KL is jagged, not one hump — seed 0 at 64
rises to 1.57 at KL 23, dips to 0.04 at KL 43 and recovers before the last fall — so the peak
check reads the best checkpoint, not a smooth curve.
Seed 2 at 64 also reproduces (RM 63 %, SFT 0.58, peak 2.03 at KL 65 (+1.45), 1.81 at KL 69
(−0.22), ρ 0.81; 108 s). Controls at 32 prompts on the current code: seed 0 passes (peak 1.73 at
KL 65, fall 0.76, ρ 1.00; 106 s), seed 2 passes (peak 2.25 at KL 37, fall 0.49, ρ 0.79; 106 s):
32 failed only seed 1, 64 passes seeds 0, 1 and 2.
"""

from __future__ import annotations

import torch
from torch import nn

from papercli.reproduce.engine import run

from ._alignment import MINI_RUN, PAPER_RUN, AlignmentConfig, AlignmentRecipe

MINI = AlignmentConfig(**MINI_RUN, rm_prompts=64, beta=0.002, lr=1.5e-4)
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
