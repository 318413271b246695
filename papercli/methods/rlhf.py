"""RLHF's pieces, as InstructGPT (Ouyang et al. 2022) and learning to summarise (Stiennon et al.
2020) use them on a decoder-only language model (models/transformer.py):

- `sample`: responses sampled from the LM (temperature 1, no top-k, so the log-probabilities are
  the policy's own), with each response token's log-probability;
- `ScalarModel`: the LM's trunk with a scalar head, a reward model; the value function is a
  scalar head on the policy's own trunk (`logprobs_and_values`);
- `reward_model_loss`: the pairwise loss −log σ(r(x, y_w) − r(x, y_l)) (InstructGPT Eq. 1);
- `kl_rewards`, `gae`, `ppo_losses`: PPO (Schulman et al. 2017) with the per-token KL penalty
  −β·log(π(y_t)/π_SFT(y_t)) against the frozen SFT model and the reward model's score added at the
  last token (InstructGPT Eq. 2, learning to summarise Eq. 1), generalised advantage estimation
  (Schulman et al. 2015) and the clipped surrogate (PPO Eq. 7); PPO-ptx's pre-training term is the
  recipe's (an LM loss on the plays, weighted by γ).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from papercli.models.transformer import Transformer


@torch.no_grad()
def sample(
    model: Transformer, prompts: torch.Tensor, length: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt + `length` sampled tokens (B, P + L), log-probabilities of the sampled tokens
    (B, L)); fixed-length responses (no end-of-text token)."""
    tokens = model.generate(prompts, length, temperature=1.0, generator=generator)
    return tokens, response_logprobs(model, tokens, length)


def response_logprobs(model: Transformer, tokens: torch.Tensor, length: int) -> torch.Tensor:
    """log π(y_t | x, y_<t) of the last `length` tokens of each sequence (B, L)."""
    return logprobs_and_values(model, None, tokens, length)[0]


def logprobs_and_values(
    model: Transformer, value_head: nn.Module | None, tokens: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Response log-probabilities (B, L) and, with a value head on the policy's own trunk (as
    trl's value-head models do: one forward pass for both), the value of the state before each
    response token (B, L)."""
    states = model.decode(tokens[:, :-1])[:, -length:]
    logits = model.logits(states).float()
    logp = torch.gather(logits.log_softmax(-1), 2, tokens[:, -length:, None])[..., 0]
    return logp, None if value_head is None else value_head(states.float())[..., 0]


class ScalarModel(nn.Module):
    """A reward model: an LM trunk with a linear head to a scalar (InstructGPT Sec. 3.5: the SFT
    model with its unembedding layer replaced by a scalar output). `shift` and `scale` normalise
    the reward (InstructGPT: "normalized … so that the labeler demonstrations achieve a mean score
    of 0 before doing RL"); they are buffers, so checkpoints keep them."""

    def __init__(self, lm: Transformer):
        super().__init__()
        self.trunk = copy.deepcopy(lm)
        self.trunk.head = nn.Identity()  # the trunk's states, not vocabulary logits
        self.score_head = nn.Linear(lm.cfg.dim, 1)
        nn.init.zeros_(self.score_head.weight)
        nn.init.zeros_(self.score_head.bias)
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, tokens: torch.Tensor, length: int) -> torch.Tensor:
        """The raw score of each sequence (B,): the head's mean over the last `length` (response)
        positions — a tiny trunk learns a mean of per-token scores far more readily than a score
        read at one position, which is what the papers' 1.3B–6B reward models do."""
        return self.score_head(self.trunk.decode(tokens)[:, -length:].float()).mean((1, 2))

    def reward(self, tokens: torch.Tensor, length: int) -> torch.Tensor:
        """The normalised score of each sequence (B,)."""
        return (self(tokens, length) - self.shift) / self.scale


def reward_model_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """InstructGPT Eq. 1: −E log σ(r(x, y_w) − r(x, y_l)) over comparison pairs."""
    return -F.logsigmoid(chosen - rejected).mean()


def kl_rewards(
    score: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-token rewards (B, L): −β·(log π − log π_SFT) at every token, plus the reward model's
    score at the last one (the sum over tokens is InstructGPT Eq. 2's objective for a sample)."""
    rewards = -beta * (logprobs - ref_logprobs)
    rewards[:, -1] += score
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a finished episode (the value after the last token
    is 0): δ_t = r_t + γV_{t+1} − V_t, A_t = δ_t + γλA_{t+1}; returns (advantages, A + V)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        following = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * following - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    return advantages, advantages + values


def ppo_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip: float = 0.2,
) -> dict[str, torch.Tensor]:
    """PPO's clipped surrogate −E min(ρA, clip(ρ, 1 − ε, 1 + ε)A), ρ = π/π_old (Schulman et al.
    2017, Eq. 7), and the value loss ½ E max((V − R)², (V_clipped − R)²) with V kept within ε of
    the rollout's values (as the implementations of both papers do)."""
    ratio = torch.exp(logprobs - old_logprobs)
    surrogate = torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    value_loss = torch.max((values - returns) ** 2, (clipped_values - returns) ** 2)
    return {"policy": -surrogate.mean(), "value": 0.5 * value_loss.mean()}


def whiten(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / (x.std() + 1e-8)
