"""RLAIF: Scaling Reinforcement Learning from Human Feedback with AI Feedback (Lee et al. 2023,
arXiv 2309.00267).

Claim checked at mini scale (Sec. 4.1, Fig. 1: RLAIF and RLHF policies are preferred over SFT at
similar rates; "RLAIF achieves comparable performance to RLHF"): preferences labelled by a model
instead of the rule, then the same reward-model + PPO pipeline (recipes/_alignment.py). Two
reward models are trained on the same SFT samples — `rm` on the rule's rankings (RLHF), `rm_ai` on
the AI labeler's (RLAIF) — and a policy is trained against each. Checked: the labeler agrees with
the rule on most comparison pairs (reported; the paper's AI labeler alignment, Sec. 3.2), both
policies beat SFT on the TRUE score, and the RLAIF policy's true score is within a stated margin
of the RLHF policy's.

The AI labeler: the base LM read through a linear probe — logistic regression on the mean and the
max over a response of the base's final hidden states and of its input embeddings (tokens and
positions; `ai_labeler_reads`), fitted to `ai_labeler_examples` (256: all samples of the first 32
comparison prompts) SFT samples labelled by the rule (score > 0 or not), the only rule labels it
ever sees (a few-shot labeler, as the paper's prompted PaLM 2 sees a preamble and exemplars). It
then scores every sample of the comparisons. As in the paper, the AI relabels the preference
dataset the humans labelled (Sec. 3: the same TL;DR / HH comparisons): `rm_ai` learns the same
pairs as `rm`, those the rule orders (`ai_pairs=rule`), and it learns the labeler's preference
distribution, soft labels σ(s_i − s_j) of the probe's scores, by cross-entropy (Sec. 3.3;
`soft_labels`), where `rm` learns the rule's hard choices (Eq. 1). Its agreement with the rule is
measured on the training comparisons' pairs the rule orders. The final true scores are measured
on 1,024 held-out prompts (`final_eval_prompts`; the evaluations during training use 128), one
sample each, the same prompts and sampling seed for SFT and both policies: the paper compares
policies on many examples, and on 128 the gap alone has a standard error near 0.1 (below).

    mini   the pipeline of recipes/_alignment.py (β = 0.05), two policies, 150 steps, final scores
           on 1,024 held-out prompts (≤ 10 min on 2 CPU cores)
    paper  PaLM 2 XS-shaped policies are not public: GPT-3 1.3B shapes for --dry-run counts; a run
           needs --set base=PATH; the paper's RL settings as we read them (Appendix: β = 0.05,
           batch 128, lr 1e-5 for the policy), the labeler is papercli's probe, not PaLM 2 L

Measured before issue 17's second round (final states only, all pairs, hard labels; mini, seed 0; user seconds of `/usr/bin/time`, OMP_NUM_THREADS=1): 216 s (wall 631 s at
load ~6). The labeler agrees with the rule on 77.0% of the training pairs (72.8% on the prompts
none of whose samples it was fitted to) — the paper's PaLM 2 labeler aligns ~78% with humans. Yet
the reward model trained on its labels orders only 59% of held-out pairs (the rule-labelled one
70%); RLHF's policy reaches true 1.19 (+0.64 over SFT's 0.55), RLAIF's 0.81 (+0.27): both beat SFT,
but RLAIF trails RLHF by 0.38, so the "RLAIF ≈ RLHF" check (within 0.2) fails: NOT reproduced.
Seed 1 (207 s user, wall 400 s): agreement 74.3% (70.4% unseen), reward models 74% (labeler's)
vs 77% (rule's) on held-out pairs; SFT 0.64, RLHF +1.15, RLAIF +0.76: RLAIF trails by 0.38 again.
Labelers tried (agreement on all training pairs, seeds 0 / 1, on the comparisons of the runs): mean state, 64 samples 65% / – (the previous labeler); 256 samples 73% / 70%; mean and
max, 64: 70% / 63%; mean and max, 256: 77% / 74% (chosen); the SFT model's states instead of the
base's: 1–3 points lower; token-embedding mean, 256: 74–76% / –; a pairwise probe on feature
differences of the rule-ordered pairs of 32 prompts (565 pairs): 79% / 75%, no better than the
pointwise probe on the same 256 rule scores. The bottleneck is the reward model, not the labeler:
offline, 22 reward-model steps on seed 0's comparisons order 72% of held-out pairs with the rule's
labels, 60% with the labeler's (hard), 61% with its soft labels σ(s_i − s_j), 59–60% when only its
most confident 50–70% of pairs are kept, and 63% even on exactly the pairs the rule orders.
The paper's d-RLAIF (the labeler scores PPO samples directly, no reward model; a probe run of a
third policy, not part of the recipe): on seed 0 it matched RLHF at step 90 (true 1.17, KL 9.2),
then hacked the probe (step 120: true −0.54 at KL 45; the probe cannot see that repeats cost), so
it is no stable fix either.
More comparisons (issue 17, after learning-to-summarize reproduced with 64 prompts instead of 32):
`--set rm_prompts=256` (the mini: 128), one thread, idle machine, ~196 s user / 214 s wall each.
Seed 0: agreement 73.9 %, reward models 70.1 % (rule) / 69.5 % (labeler's) on held-out pairs —
the labeler's RM no longer trails — RLHF +0.82, RLAIF +0.86 over SFT: RLAIF +0.04, every check
passes. Seed 1: agreement 72.5 %, RMs 72.4 / 67.1 %, RLHF +0.94, RLAIF +0.68: trails by 0.27,
fails. `--set rm_prompts=512` (~208 s user): agreement 72.2 / 74.2 %, RMs 73.3 / 66.7 % and
73.0 / 65.2 % (rule / labeler's), RLHF +0.94 / +0.96, RLAIF +0.68 / +0.46: trailing 0.25 / 0.50.
So more comparisons help the rule's reward model as much as the labeler's, and seed 0's pass at
256 is within the spread: not reproduced, the mini keeps 128.
Issue 17, second round (user seconds one-thread; wall 900–1,450 s on a machine at load 8–17, so
the wall-clock `seconds` check failed on every run below for the load alone). Three changes,
each an option, now the defaults. (1) `ai_pairs=rule`: the labeler's reward model learned ALL 28
pairs of a prompt, 38–39% of which the rule ties (noise with respect to the true score), while the
rule's learned only the ordered ones. (2) `soft_labels`. (3) `ai_labeler_reads=embeddings`.
Offline, 22 reward-model steps on the comparisons of the full runs (held-out accuracy, seeds
0 / 1): rule 71.6 / 67.4 %, labeler all pairs hard (the old recipe) 68.6 / 61.2 %, same pairs
hard ~69 / 62 %, all pairs soft ~69 / 62 %, same pairs soft 71.6 / 62.8 %. Both reward models are
undertrained at 22 steps (66 steps: rule 87.4 / 83.9 %, labeler's soft 72.3 / 73.1 %, hard all
pairs 70.3 / 71.3 %: more steps widen the gap, the labeler's reward model stops near its 72–76%
agreement, so the mini keeps 22). Probes (agreement on all training pairs / on prompts ≥ 64, n
exemplars): final states 75.2 / 70.2 % (seed 0) and 76.3 / 71.9 % (seed 1); with embeddings 77.8 /
71.1 and 77.1 / 72.6 %; all four layers' states 76.3 / 69.5 and 76.6 / 70.9 %; layer 2 or 3
alone 1–2.5 points lower than the final states; 512 exemplars: +2–5 points on all pairs (half of
them seen), ≤ +3 unseen; regressing the rule's score instead of score > 0: no better (its
agreement on pairs where both samples score > 0, 20% of the pairs, stays 56–66%). Full runs
(rlaif − rlhf true score; RMs' held-out accuracy rule / labeler's; user s):
  (1)+(2), 128 prompts: seed 0 +0.16 (71.6 / 71.6 %, 204 s), seed 1 −0.40 (67.4 / 62.8 %, RLHF
  +0.91, RLAIF +0.51, its reward score stalls at 1.28 from step 105; 202 s), seed 2 −0.01
  (67.9 / 64.4 %, 207 s).
  (1)+(2), `rm_prompts=256`: seed 0 −0.02 (70.1 / 71.3 %, 211 s), seed 1 −0.26 (72.4 / 70.2 %,
  RLHF +0.94, RLAIF +0.68; 211 s), seed 2 −0.06 (71.2 / 65.6 %, 215 s).
  (1)+(2)+(3), 128 prompts (the mini): seed 0 +0.02 (agreement 77.8 %, 73.0 % unseen; RMs
  71.6 / 71.8 %; RLHF +0.88, RLAIF +0.90; 206 s), seed 1 −0.22 (77.1 / 72.6 %; 67.4 / 65.4 %;
  RLHF +0.91, RLAIF +0.69; 206 s), seed 2 +0.09 (78.6 / 72.7 %; 67.9 / 64.0 %; RLHF +0.78,
  RLAIF +0.87; 203 s); the defaults, at load ~5: seed 3 −0.08 (75.3 / 69.2 %; 75.2 / 72.4 %;
  RLHF +1.17, RLAIF +1.09; 199 s, wall 558 s: every check passes), seed 4 −0.25 (76.1 / 69.3 %;
  69.3 / 71.7 %; RLHF +1.06, RLAIF +0.81; 201 s). Over seeds 0–4 RLAIF − RLHF averages −0.09
  (3 of 5 within 0.2).
Every other check passed on every seed (agreement ≥ 60 %, both policies ≥ +0.5 over SFT), but
seed 1 trailed by 0.22 > 0.2: not reproduced after two rounds. The labeler tells "some warm word"
from "none" on ~80% of such pairs but 2 warm words from 1 on only ~60%, and the rule is a
noiseless rater where the paper's human labels are themselves noisy, so RLHF here has an oracle
the paper's did not.
Issue 17, third round: the noise floor of the comparison. A probe run (not part of the recipe;
344 s user) added a third policy, a second RLHF policy on the same reward model `rm` whose PPO
rollouts are sampled after the others' (its own sampling stream; the two mini policies are
unchanged), and scored the final states on the evaluations' 128 prompts under 16 sampling seeds
(1234, the evaluations', and 1–15) and on all 1,873 held-out prompts × 2 samples (standard error
0.011–0.018 per policy). A response's true score has a standard deviation of ~1.0 (SFT's ~0.73),
so a 128-prompt mean carries a standard error of 0.05–0.10, and the RLAIF − RLHF gap on the
check's 128 prompts moves with the sampling seed alone by sd 0.10 (seed 1) / 0.08 (seed 4).
Seed 1: −0.22 at seed 1234 (16 seeds: mean −0.10, lowest −0.31); on all held-out prompts −0.14
(SFT 0.65, RLHF 1.50, RLAIF 1.36). Seed 4: −0.25 at seed 1234, the lowest of the 16 (mean
−0.13); on all prompts −0.15 (0.55, 1.59, 1.44). The second RLHF policy, same reward model,
other PPO samples: 0.21 below the first on seed 1 (1.29 on all prompts; −0.36 on the check's 128)
and 0.02 below on seed 4 — PPO's sampling alone moves a policy by as much as the 0.2 margin, and
on seed 1 RLAIF beats that second RLHF policy by 0.07. So the mini now measures its final scores
on 1,024 held-out prompts (`final_eval_prompts`; the gap's standard error ≈ 0.045), the same for
SFT and both policies; training is unchanged. Full runs (user s one-thread; seeds 0–3 wall
754–824 s at load 6–9, so the wall-clock `seconds` check failed for the load alone):
  seed 0 −0.10 (SFT 0.63; RLHF +0.95, RLAIF +0.85; agreement 77.8 %; RMs 71.6 / 71.8 %; 221 s),
  seed 1 −0.13 (0.62; +0.87, +0.74; 77.1 %; 67.4 / 65.4 %; 221 s), seed 2 −0.00 (0.56; +0.85,
  +0.85; 78.6 %; 67.9 / 64.0 %; 223 s), seed 3 −0.03 (0.62; +0.96, +0.93; 75.3 %; 75.2 / 72.4 %;
  222 s), seed 4 −0.17 (0.56; +1.02, +0.86; 76.1 %; 69.3 / 71.7 %; 208 s, wall 355 s at a lighter
  load: every check passes, `seconds` too). Every claim check passes on all five seeds (RLAIF −
  RLHF mean −0.09, from −0.17 to −0.00; RLAIF +0.74..+0.93 over SFT, RLHF +0.85..+1.02):
  reproduced — RLAIF comes within 0.2 of RLHF, though it trails it on every seed (Fig. 1 has it
  71 % vs 73 % over SFT); seed 4's −0.17 is within one standard error (0.045) of the margin, and
  two RLHF runs alone can differ by as much as the margin (0.21 above).
  Timed as a user runs it (2 idle cores, default threads): seed 1 −0.12, 142 s wall; seed 5
  −0.01 (agreement 76.1 %), 129 s: reproduced. Seed 6 does NOT: −0.42 (SFT 0.62; RLHF +0.95,
  RLAIF +0.53; agreement 77.5 %), 128 s — its labeler's reward model orders only 63.8 % of
  held-out pairs against the rule's 73.3 % (the widest gap of any seed), and the RLAIF policy
  stops at KL 8.4 where RLHF's goes to 15.4. So 6 of seeds 0–6 pass; the verdict fails where the
  labeler's reward model falls far behind, the paper's own caveat (Sec. 4.4: RLAIF's quality
  follows the labeler's alignment).
History: with the mean-state probe on 64 samples (load ~10, wall 1,296 s) agreement was 65.5%,
RLHF +0.64, RLAIF +0.22 (trailing by 0.42).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from papercli.reproduce.engine import run

from ._alignment import MINI_RUN, PAPER_RUN, AlignmentConfig, AlignmentRecipe, pair_agreement


@dataclass
class RLAIFConfig(AlignmentConfig):
    # the pairs the labeler's reward model learns: "all" pairs of a prompt's K samples, or "rule":
    # the pairs the rule orders, the same pairs as the rule's reward model (Sec. 3: the AI labels
    # the preference dataset the humans labelled, no other pairs)
    ai_pairs: Literal["all", "rule"] = "rule"
    # Sec. 3.3: the reward model learns the labeler's preference distribution (cross-entropy on
    # soft labels σ(s_i − s_j) of its scores) instead of its hard choice
    soft_labels: bool = True
    # what the labeler's probe reads of the base over a response (mean and max of each): its
    # "final" states, or its input "embeddings" (tokens and positions) as well
    ai_labeler_reads: Literal["final", "embeddings"] = "embeddings"


# the labeler sees the rule's scores of 256 samples (32 comparison prompts × 8): 64 left it at 65%;
# the final scores on 1,024 held-out prompts: on the evaluations' 128 the RLAIF − RLHF gap alone
# has a standard error near 0.1 (issue 17's third round), half the check's margin
MINI = RLAIFConfig(**MINI_RUN, ai_labeler_examples=256, final_eval_prompts=1024)
PROBE_L2 = 0.1  # the probe's weight decay (0.01 and 0.1 tried; 0.1 agreed more on both seeds)
PAPER = RLAIFConfig(
    **PAPER_RUN,
    prompt_tokens=512,
    response_tokens=128,
    beta=0.05,
    lr=1e-5,
    batch_size=128,
    ppo_minibatches=4,
    steps=8000,
    eval_every=500,
)


class RLAIFRecipe(AlignmentRecipe):
    paper = "rlaif"
    config_class = RLAIFConfig
    scales = {"mini": MINI, "paper": PAPER}
    reward_models = {"rm": "rule", "rm_ai": "ai"}
    policies = {"rlhf": ("rm", False), "rlaif": ("rm_ai", False)}
    cfg: RLAIFConfig

    def label(self, labeler: str, model: nn.Module, comparisons: dict) -> torch.Tensor:
        """The AI labeler's scores of the training comparisons (prompts, K)."""
        tokens = comparisons["train_tokens"]
        base, length = model["base"], self.cfg.response_tokens
        with torch.no_grad():  # the base's states over each response: mean and max
            read = [base.decode(tokens.flatten(0, 1))[:, -length:]]
            if self.cfg.ai_labeler_reads == "embeddings":
                read.append(base.embed_tokens(tokens.flatten(0, 1))[:, -length:])
            x = torch.cat([v for s in read for v in (s.float().mean(1), s.float().amax(1))], 1)
        n = self.cfg.ai_labeler_examples
        y = (comparisons["train_rule"].flatten()[:n] > 0).float()
        mean, std = x.mean(0), x.std(0) + 1e-6
        x = (x - mean) / std
        w = torch.zeros(x.shape[1], requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=100)

        def closure():
            opt.zero_grad()
            fit = F.binary_cross_entropy_with_logits(x[:n] @ w + b, y)
            loss = fit + PROBE_L2 * w.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        return (x @ w + b).detach().view(tokens.shape[:2])

    def preference_loss(self, labeler: str, rewards: torch.Tensor, idx: torch.Tensor):
        """The labeler's reward model: cross-entropy of each pair's preference, hard (1 for the
        higher-scored sample: Eq. 1) or soft (σ(s_i − s_j), Sec. 3.3), over the pairs `ai_pairs`
        names; the rule's reward model is the shared Eq. 1 on the rule's rankings."""
        c = self.cfg
        if labeler != "ai" or (c.ai_pairs == "all" and not c.soft_labels):
            return super().preference_loss(labeler, rewards, idx)
        ai, rule = self.comparisons["train_ai"][idx], self.comparisons["train_rule"][idx]
        k = ai.shape[1]
        pairs = torch.ones(k, k, dtype=torch.bool).triu(1).expand(len(idx), k, k)  # each once
        if c.ai_pairs == "rule":
            pairs = pairs & (rule[:, :, None] != rule[:, None, :])
        gap = ai[:, :, None] - ai[:, None, :]
        target = torch.sigmoid(gap) if c.soft_labels else (gap > 0).float()
        diff = (rewards[:, :, None] - rewards[:, None, :])[pairs]
        if not pairs.any():
            return rewards.sum() * 0.0
        return F.binary_cross_entropy_with_logits(diff, target[pairs])

    @torch.no_grad()
    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = super().final_metrics(model, last_eval)
        if "train_ai" in self.comparisons:
            ai, rule = self.comparisons["train_ai"], self.comparisons["train_rule"]
            m["labeler_agreement"] = pair_agreement(ai, rule)
            # on the prompts none of whose samples were the labeler's exemplars
            seen = -(-self.cfg.ai_labeler_examples // ai.shape[1])
            if seen < len(ai):
                m["labeler_agreement_unseen"] = pair_agreement(ai[seen:], rule[seen:])
        for name in self.policies:
            m[f"{name}_minus_sft_true_score"] = m[f"{name}_true_score"] - m["sft_true_score"]
        m["rlaif_minus_rlhf_true_score"] = m["rlaif_true_score"] - m["rlhf_true_score"]
        return m


if __name__ == "__main__":
    run(RLAIFRecipe)
