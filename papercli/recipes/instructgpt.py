"""Training language models to follow instructions with human feedback (InstructGPT; Ouyang et al.
2022, arXiv 2203.02155).

Claim checked at mini scale (Fig. 1 and Sec. 4.1: PPO models are preferred over the SFT model they
start from; Sec. 3.5: the KL penalty keeps the policy near SFT): the three steps of Fig. 2 —
supervised fine-tuning on demonstrations, a reward model from ranked comparisons (the pairwise
loss of Eq. 1), PPO against it with a per-token KL penalty to the SFT model (Eq. 2) — raise the
policy's TRUE score (the fixed rule, never the reward model) above the SFT model's while its KL
from SFT stays bounded; the reward model orders held-out comparisons better than chance; and
PPO-ptx (the same PPO plus γ × the LM loss on the plays) pays less "alignment tax" on held-out
plays than PPO (Sec. 3.5, Fig. 28's regressions).

The pipeline and the rule are recipes/_alignment.py's: the mini base (the gpt-2 recipe's d128
arm), demonstrations = best of 8 base samples per prompt under the rule, comparisons = 8 SFT
samples per prompt ranked by the rule (all pairs), PPO with β = 0.05, γ = 1 (not tuned), 32
rollouts of 32 tokens per step.

    mini   150 steps: 22 SFT, 22 reward model, 106 PPO iterations of 32 rollouts (≤ 10 min on
           2 CPU cores)
    paper  GPT-3 shapes (1.3B; --set base_arch=gpt3-6.7b|gpt3-175b) for --dry-run counts; a run
           needs --set base=PATH (a GPT-2-layout checkpoint papercli reads). The paper's PPO
           settings (Appendix C.4): β = 0.02, γ = 27.8, clip 0.2, GAE γ = 1, λ = 0.95, batch 512,
           lr 9.65e-6 as we read it; the RM and value function 6B

Measured (mini, 2 heavily shared cores at load ~10): seed 0 / seed 1 — true score base 0.15,
SFT 0.55 / 0.64, PPO 1.22 / 1.64 (+0.67 / +1.00 over SFT) at KL 15.2 / 14.6 nats per response;
reward model 70% / 77% on held-out pairs; PPO-ptx's held-out plays loss 0.50 / 0.62 nats below
PPO's (its true score only +0.21 / +0.05 over SFT at γ = 1). Every claim check passes; the time
check does not at that load (wall 1,427 s / 1,348 s; 323 s of CPU time for seed 1, so about 5.5
minutes on an idle core).
"""

from __future__ import annotations

import torch
from torch import nn

from papercli.reproduce.engine import run

from ._alignment import MINI_RUN, PAPER_RUN, AlignmentConfig, AlignmentRecipe

MINI = AlignmentConfig(**MINI_RUN)
PAPER = AlignmentConfig(
    **PAPER_RUN,
    prompt_tokens=256,
    response_tokens=256,
    beta=0.02,
    ptx_coef=27.8,
    lr=9.65e-6,
    batch_size=512,
    ppo_minibatches=8,
    steps=500,
    eval_every=50,
)


class InstructGPTRecipe(AlignmentRecipe):
    paper = "instructgpt"
    config_class = AlignmentConfig
    scales = {"mini": MINI, "paper": PAPER}
    policies = {"ppo": ("rm", False), "ppo_ptx": ("rm", True)}

    @torch.no_grad()
    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        m |= {k: v for k, v in self.measure(model, "base", None).items() if k.endswith("score")}
        g = torch.Generator().manual_seed(0)
        for name in ("sft", *self.policies):
            m[f"{name}_plays_loss"] = float(self.plays_loss(model[name], 0, g, held=True))
            if name != "sft":
                m[f"{name}_minus_sft_true_score"] = m[f"{name}_true_score"] - m["sft_true_score"]
        m["ptx_tax_saved"] = m["ppo_plays_loss"] - m["ppo_ptx_plays_loss"]
        return m


if __name__ == "__main__":
    run(InstructGPTRecipe)
