"""What the alignment recipes share (InstructGPT, learning to summarise, RLAIF): one run in the three
steps of InstructGPT's Fig. 2 on the mini base (reproduce/base_model.py), the phases cut from the
run's steps:

1. SFT (`sft_share` of the steps): the base fine-tuned on demonstrations — for each training
   prompt, the best of `sft_candidates` base samples under the rule (kept when it scores > 0);
   the loss is on the response tokens only.
2. Reward models (`rm_share`): K = `rank_k` samples of the SFT model per prompt, ranked by their
   labeler, every pair with different ranks used (InstructGPT Sec. 3.5: all (K choose 2) pairs of
   a prompt in one batch element), pairwise loss of Eq. 1; a model is the SFT model's trunk with a
   scalar head, normalised so that SFT samples score mean 0 and standard deviation 1. Its accuracy
   is measured on comparisons of held-out prompts, ranked by the rule.
3. PPO (the rest, one rollout per step): each policy starts as the SFT model, the frozen SFT model
   is the KL reference, the value function is a scalar head on the policy's trunk (InstructGPT
   starts a separate one from the reward model; one trunk halves the mini's cost);
   the per-token reward is −β·log(π/π_SFT) with the reward model's score at the last token; a
   `ptx` policy adds γ times the LM loss on windows of the training plays (PPO-ptx, Eq. 2).

The "human" preference is a fixed scoring rule the policy never sees, `true_score`: the rater likes
words of warmth (WARM_WORDS) and dislikes repeating them — each distinct warm word scores 1, each
repeat of one costs 0.5. The base uses a warm word in ~15% of its 32-token responses, so SFT and
RL can move it; and a reward model that only saw a few comparisons of SFT samples (where repeats
are rare) cannot know that repeats are bad, so a policy pushed far from SFT can "hack" it by
repeating one word (learning to summarise's over-optimisation, Fig. 5).

Prompts: the first `prompt_tokens` tokens of speeches ("SPEAKER:\\n" and the first words): of the
training plays for SFT, comparisons and PPO; of the six held-out plays for every evaluation.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from papercli.data import lm
from papercli.errors import PapercliError, UsageError
from papercli.methods import rlhf
from papercli.models.transformer import Transformer, TransformerConfig
from papercli.recipes.gpt2 import MINI_ARMS, arm_config
from papercli.reproduce.arms import Arms
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.loop import NonFinite
from papercli.reproduce.recipe import Recipe, TrainConfig

# the rater's words (lower case; whole words of the decoded response)
WARM_WORDS = frozenset(
    [
        "love",
        "loves",
        "loved",
        "lover",
        "sweet",
        "fair",
        "gentle",
        "dear",
        "heart",
        "kind",
        "joy",
        "grace",
        "happy",
        "kiss",
        "smile",
        "beauty",
        "tender",
        "delight",
        "friend",
        "friends",
        "bless",
        "honest",
        "true",
        "noble",
        "good",
        "hope",
        "peace",
        "merry",
        "pretty",
        "soft",
        "welcome",
        "thanks",
        "gracious",
        "virtue",
    ]
)
REPEAT_COST = 0.5


def true_score(text: str) -> float:
    """The fixed "human" preference: distinct warm words − 0.5 × repeats of them."""
    hits = [w for w in re.findall(r"[a-z]+", text.lower()) if w in WARM_WORDS]
    distinct = len(set(hits))
    return distinct - REPEAT_COST * (len(hits) - distinct)


@dataclass
class AlignmentConfig(TrainConfig):
    base: str = ""  # a base model folder (base_model.py's formats); empty: the mini base
    base_arch: str = "d128"  # the mini base's gpt-2 arm
    base_steps: int = bounded(600, ge=1)
    base_batch_size: int = bounded(32, ge=1)
    vocab_size: int = bounded(1024, ge=258)
    context: int = bounded(64, ge=8)
    prompt_tokens: int = bounded(8, ge=1)
    response_tokens: int = bounded(32, ge=1)
    sft_share: float = fraction(0.15)  # of the steps
    rm_share: float = fraction(0.15)
    sft_prompts: int = bounded(256, ge=1)
    sft_candidates: int = bounded(8, ge=1)  # best of K base samples per prompt
    sft_lr: float = bounded(5e-4, gt=0.0)
    rm_prompts: int = bounded(128, ge=1)  # comparison prompts (training)
    rm_heldout_prompts: int = bounded(64, ge=1)
    rank_k: int = bounded(8, ge=2)  # samples ranked per prompt
    rm_batch_prompts: int = bounded(16, ge=1)
    rm_lr: float = bounded(3e-4, gt=0.0)
    lr: float = bounded(3e-5, gt=0.0)  # PPO: policy and value
    beta: float = bounded(0.05, ge=0.0)  # KL penalty coefficient
    ptx_coef: float = bounded(1.0, ge=0.0)  # γ: the ptx arm's LM loss weight
    ppo_epochs: int = bounded(2, ge=1)
    ppo_minibatches: int = bounded(2, ge=1)
    clip: float = bounded(0.2, gt=0.0)
    gae_lambda: float = bounded(0.95, ge=0.0, le=1.0)
    eval_prompts: int = bounded(128, ge=1)
    # the final scores' held-out prompts: the last state re-measured on this many (0: the last
    # evaluation's `eval_prompts` stand), for a comparison of policies finer than 128 samples allow
    final_eval_prompts: int = bounded(0, ge=0)
    ai_labeler_examples: int = bounded(64, ge=1)  # rlaif: rule-labelled texts the labeler learns


# the mini's run shape, shared by the three recipes
MINI_RUN = {"steps": 150, "batch_size": 32, "eval_every": 15, "log_every": 10, "grad_clip": 1.0}

# what the paper scales share: a GPT-3-shaped policy (1.3B; --set base_arch= for the others), one
# PPO epoch over each rollout batch (InstructGPT Appendix C.4 as we read it)
PAPER_RUN = {
    "base_arch": "gpt3-1.3b", "vocab_size": 50257, "context": 2048, "ppo_epochs": 1,
    "log_every": 10, "grad_clip": 1.0,
}  # fmt: skip

# GPT-3's shapes (Brown et al. 2020, Table 2.1): 2,048-token context, GPT-2's 50,257-token BPE
GPT3 = {
    "gpt3-1.3b": TransformerConfig(dim=2048, layers=24, heads=16, ff_dim=8192, max_len=2048),
    "gpt3-6.7b": TransformerConfig(dim=4096, layers=32, heads=32, ff_dim=16384, max_len=2048),
    "gpt3-175b": TransformerConfig(dim=12288, layers=96, heads=96, ff_dim=49152, max_len=2048),
}


class AlignmentRecipe(Recipe):
    """SFT → reward models → PPO policies. Subclasses name their reward models and policies."""

    config_class = AlignmentConfig
    unit = "sequences"
    # reward model -> its labeler ("rule", or "ai" for rlaif's)
    reward_models: dict[str, str] = {"rm": "rule"}
    # policy -> (its reward model, whether it adds the ptx term)
    policies: dict[str, tuple[str, bool]] = {"ppo": ("rm", False)}
    cfg: AlignmentConfig

    # --- data and the base --------------------------------------------------------------------
    def data_source(self) -> str:
        base = self.cfg.base or f"the mini base (gpt-2 recipe arm {self.cfg.base_arch}, cached)"
        return (
            f"base: {base}; prompts: speech openings of the training plays (held-out plays for "
            "evaluation); preferences: the recipe's fixed rule (warm words, repeats cost)"
        )

    def load_base(self):
        if not hasattr(self, "_base"):
            from papercli.reproduce.base_model import MiniBase, resolve_base

            c = self.cfg
            if not c.base and c.base_arch not in MINI_ARMS:
                raise PapercliError(f"no {c.base_arch} weights: pass --set base=PATH")
            spec = MiniBase(c.base_arch, c.base_steps, c.base_batch_size, c.vocab_size, c.context)
            self._base = resolve_base(c.base or None, spec)
            if self._base.tokenizer is None:
                raise PapercliError("the base folder has no tokenizer.json (needed to read text)")
            needed = c.prompt_tokens + c.response_tokens
            if self._base.model.cfg.max_len < max(needed, c.context):
                raise PapercliError(
                    f"the base reads at most {self._base.model.cfg.max_len} tokens; prompts and "
                    f"responses need {needed}, the ptx windows {c.context}"
                )
        return self._base

    def setup_data(self) -> None:
        from papercli.data import plays

        if self.ctx.world > 1:
            raise UsageError("the alignment recipes run in one process (no --gpus N)")
        self.tokenizer = self.load_base().tokenizer
        train, held = plays.split()
        self.train_prompts = self._prompts(train)
        self.held_prompts = self._prompts(held)
        if self.cfg.final_eval_prompts > len(self.held_prompts):
            raise UsageError(
                f"final_eval_prompts: the held-out plays give {len(self.held_prompts)} prompts"
            )
        self.eval_prompts = self.held_prompts[: self.cfg.eval_prompts]
        self.demos: torch.Tensor | None = None
        self.comparisons: dict[str, torch.Tensor] = {}
        self.curve: list[dict[str, float]] = []
        self.steps_done = 0

    @functools.cached_property
    def train_windows(self) -> lm.Windows:
        """Windows of the training plays (PPO-ptx's LM term); tokenised only when asked for."""
        return self._windows(0)

    @functools.cached_property
    def held_windows(self) -> lm.Windows:
        return self._windows(1)

    def _windows(self, part: int) -> lm.Windows:
        from papercli.data import plays

        eot = self.tokenizer.token_to_id("<|endoftext|>") or 0
        texts = [p.text for p in plays.split()[part]]
        return lm.Windows(lm.token_stream(self.tokenizer, texts, eot), self.cfg.context)

    def _prompts(self, plays_) -> torch.Tensor:
        from papercli.data import plays

        n = self.cfg.prompt_tokens
        # a prompt's tokens come from a speech's first characters (at least 1 per token)
        texts = [f"{who}:\n{speech[: 8 * n]}" for p in plays_ for who, speech in plays.speeches(p)]
        rows = [e.ids[:n] for e in self.tokenizer.encode_batch(texts)]
        rows = [r for r in rows if len(r) == n]
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
        return torch.tensor(rows)[order]

    def score_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """The rule's score of each response (the last `response_tokens` tokens)."""
        responses = tokens[:, -self.cfg.response_tokens :].tolist()
        return torch.tensor([true_score(t) for t in self.tokenizer.decode_batch(responses)])

    # --- the models ---------------------------------------------------------------------------
    def base_network(self) -> Transformer:
        """The base's network; on the meta device (--dry-run, `papercli recipes`) its shape only,
        never training or reading a base where the shape is known without it."""
        c = self.cfg
        if torch.empty(0).is_meta and not c.base:
            if c.base_arch in GPT3:
                return Transformer(GPT3[c.base_arch])
            if c.base_arch in MINI_ARMS:
                return Transformer(arm_config(c.base_arch, c.vocab_size, c.context))
        if torch.empty(0).is_meta:
            with torch.device("cpu"):
                shape = self.load_base().model.cfg
            return Transformer(shape)
        return self.load_base().model

    def build_model(self) -> nn.Module:
        base = self.base_network().requires_grad_(False)
        parts: dict[str, nn.Module] = {"base": base, "sft": copy.deepcopy(base)}
        for name in self.reward_models:
            parts[name] = rlhf.ScalarModel(base)
        for name in self.policies:
            parts[name] = copy.deepcopy(base)
            parts[f"{name}_value"] = nn.Linear(base.cfg.dim, 1)  # on the policy's trunk
            nn.init.zeros_(parts[f"{name}_value"].weight)
        for name, part in parts.items():
            part.requires_grad_(name != "base")
        return Arms(parts)

    def configure_optimizers(self, model: nn.Module):
        c = self.cfg
        out = {"sft": torch.optim.AdamW(model["sft"].parameters(), lr=c.sft_lr)}
        for name in self.reward_models:
            out[name] = torch.optim.AdamW(model[name].parameters(), lr=c.rm_lr)
        for name in self.policies:
            params = [*model[name].parameters(), *model[f"{name}_value"].parameters()]
            out[name] = torch.optim.AdamW(params, lr=c.lr, eps=1e-5)
        return out

    # --- the phases ---------------------------------------------------------------------------
    def boundaries(self) -> tuple[int, int]:
        """(first reward-model step, first PPO step)."""
        steps = self.cfg.steps
        sft = round(steps * self.cfg.sft_share)
        return sft, sft + round(steps * self.cfg.rm_share)

    def train_step(self, step: int, trainer) -> dict[str, float]:
        model = trainer.model
        self.steps_done = step + 1
        rm_start, ppo_start = self.boundaries()
        if step == 0:
            self.make_demonstrations(model["base"])
        if step == rm_start:
            model["sft"].requires_grad_(False)
            self.make_comparisons(model)
            for name in self.reward_models:
                model[name].trunk.load_state_dict(model["sft"].state_dict(), strict=False)
        if step == ppo_start:
            self.start_ppo(model)
        if step < rm_start:
            return self.sft_step(step, model, trainer)
        if step < ppo_start:
            return self.rm_step(step, model, trainer)
        return self.ppo_step(step, model, trainer)

    def _update(self, step: int, trainer, name: str, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()):
            raise NonFinite(step, float(loss.detach()))
        trainer.model.zero_grad(set_to_none=True)
        loss.backward()
        trainer.step_optimizers([name])

    def _generator(self, step: int, stream: int) -> torch.Generator:
        return self.ctx.generator(step, stream)

    def make_demonstrations(self, base: Transformer) -> None:
        """Best of K base samples per training prompt, kept when the rule scores it > 0."""
        c = self.cfg
        prompts = self.train_prompts[: c.sft_prompts].to(self.ctx.device)
        g = self._generator(0, 1)
        tokens, _ = rlhf.sample(
            base, prompts.repeat_interleave(c.sft_candidates, 0), c.response_tokens, g
        )
        scores = self.score_texts(tokens).view(-1, c.sft_candidates)
        best = scores.argmax(1)
        rows = torch.arange(len(prompts)) * c.sft_candidates + best
        good = scores.max(1).values > 0
        # a base too weak to ever score (a test's tiny one) still gets its best-of-K samples
        self.demos = tokens[rows[good] if good.any() else rows]

    def sft_step(self, step: int, model, trainer) -> dict[str, float]:
        g = self._generator(step, 2)
        idx = torch.randint(len(self.demos), (self.cfg.batch_size,), generator=g)
        tokens = self.demos[idx]
        length = self.cfg.response_tokens
        loss = -rlhf.response_logprobs(model["sft"], tokens, length).mean()
        self._update(step, trainer, "sft", loss)
        return {"loss": loss.item(), "sft_loss": loss.item()}

    def make_comparisons(self, model: nn.Module) -> None:
        """K SFT samples per prompt, scored by the rule (training and held-out prompts) and by
        each reward model's labeler."""
        c = self.cfg
        start = c.sft_prompts
        parts = {
            "train": self.train_prompts[start : start + c.rm_prompts],
            "heldout": self.eval_prompts[: c.rm_heldout_prompts],
        }
        for i, (part, prompts) in enumerate(parts.items()):
            with torch.no_grad():
                tokens, _ = rlhf.sample(
                    model["sft"],
                    prompts.to(self.ctx.device).repeat_interleave(c.rank_k, 0),
                    c.response_tokens,
                    self._generator(0, 3 + i),
                )
            self.comparisons[f"{part}_tokens"] = tokens.view(len(prompts), c.rank_k, -1)
            self.comparisons[f"{part}_rule"] = self.score_texts(tokens).view(len(prompts), -1)
        for labeler in set(self.reward_models.values()) - {"rule"}:
            self.comparisons[f"train_{labeler}"] = self.label(labeler, model, self.comparisons)

    def label(self, labeler: str, model: nn.Module, comparisons: dict) -> torch.Tensor:
        """Scores of the training comparisons by a labeler other than the rule (rlaif's)."""
        raise PapercliError(f"unknown labeler '{labeler}'")

    def preference_loss(self, labeler: str, rewards: torch.Tensor, idx: torch.Tensor):
        """Eq. 1 on the labeler's rankings of the batch's prompts `idx` (rewards: (prompts, K));
        rlaif overrides it for its labeler's soft labels."""
        return pairwise_loss(rewards, self.comparisons[f"train_{labeler}"][idx])

    def rm_step(self, step: int, model, trainer) -> dict[str, float]:
        c = self.cfg
        tokens = self.comparisons["train_tokens"]
        g = self._generator(step, 4)
        idx = torch.randperm(len(tokens), generator=g)[: c.rm_batch_prompts]
        logged: dict[str, float] = {}
        for name, labeler in self.reward_models.items():
            rewards = model[name](tokens[idx].flatten(0, 1), c.response_tokens).view(len(idx), -1)
            loss = self.preference_loss(labeler, rewards, idx)
            self._update(step, trainer, name, loss)
            logged[f"{name}_loss"] = loss.item()
        logged["loss"] = sum(logged.values())
        return logged

    @torch.no_grad()
    def start_ppo(self, model) -> None:
        """Policies start as the SFT model (their value heads at 0); the reward models are
        normalised to mean 0, std 1 on SFT samples and frozen."""
        model["sft"].requires_grad_(False)
        samples = self.comparisons["train_tokens"].flatten(0, 1)
        for name in self.reward_models:
            rm = model[name].requires_grad_(False)
            raw = rm(samples, self.cfg.response_tokens)
            rm.shift.fill_(raw.mean())
            rm.scale.fill_(raw.std().clamp(min=1e-3))
        for name in self.policies:
            model[name].load_state_dict(model["sft"].state_dict())

    def ppo_step(self, step: int, model, trainer) -> dict[str, float]:
        c = self.cfg
        g = self._generator(step, 5)
        idx = torch.randint(len(self.train_prompts), (c.batch_size,), generator=g)
        prompts = self.train_prompts[idx].to(self.ctx.device)
        logged: dict[str, float] = {}
        for name, (rm_name, ptx) in self.policies.items():
            policy, value = model[name], model[f"{name}_value"]
            with torch.no_grad():
                tokens, _ = rlhf.sample(policy, prompts, c.response_tokens, g)
                old_logp, old_values = rlhf.logprobs_and_values(
                    policy, value, tokens, c.response_tokens
                )
                ref_logp = rlhf.response_logprobs(model["sft"], tokens, c.response_tokens)
                score = model[rm_name].reward(tokens, c.response_tokens)
                rewards = rlhf.kl_rewards(score, old_logp, ref_logp, c.beta)
                advantages, returns = rlhf.gae(rewards, old_values, 1.0, c.gae_lambda)
                advantages = rlhf.whiten(advantages)
            for _ in range(c.ppo_epochs):
                order = torch.randperm(len(tokens), generator=g).chunk(c.ppo_minibatches)
                for mb in order:
                    logp, values = rlhf.logprobs_and_values(
                        policy, value, tokens[mb], c.response_tokens
                    )
                    losses = rlhf.ppo_losses(
                        logp, old_logp[mb], advantages[mb], values, old_values[mb], returns[mb],
                        c.clip,
                    )  # fmt: skip
                    loss = losses["policy"] + losses["value"]
                    if ptx and c.ptx_coef > 0:
                        losses["ptx"] = self.plays_loss(policy, step, g)
                        loss = loss + c.ptx_coef * losses["ptx"]
                    self._update(step, trainer, name, loss)
            logged |= {f"{name}_{k}": v.item() for k, v in losses.items()}
            logged[f"{name}_rm_score"] = float(score.mean())
            logged[f"{name}_kl"] = float((old_logp - ref_logp).sum(1).mean())
        logged["loss"] = sum(v for k, v in logged.items() if k.endswith(("_policy", "_value")))
        return logged

    def plays_loss(self, lm_: Transformer, step: int, g: torch.Generator, held=False):
        """LM loss on windows of the plays (training plays for ptx; held-out ones to measure)."""
        windows = self.held_windows if held else self.train_windows
        if held:
            x, y = windows.at(windows.spread(min(64, len(windows))))
        else:
            x, y = windows.at(torch.randint(len(windows), (self.cfg.batch_size // 2,), generator=g))
        x, y = x.to(self.ctx.device), y.to(self.ctx.device)
        return F.cross_entropy(lm_(x).float().flatten(0, 1), y.flatten())

    # --- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def measure(
        self, model, name: str, rm_name: str | None, prompts: torch.Tensor | None = None
    ) -> dict[str, float]:
        """On the held-out prompts (`eval_prompts` unless given): the rule's score, the reward
        model's, and the KL from SFT (nats per response: Σ_t log π − log π_SFT of the sampled
        tokens)."""
        c = self.cfg
        prompts = (self.eval_prompts if prompts is None else prompts).to(self.ctx.device)
        tokens, logp = rlhf.sample(
            model[name], prompts, c.response_tokens, torch.Generator().manual_seed(1234)
        )
        ref = rlhf.response_logprobs(model["sft"], tokens, c.response_tokens)
        out = {
            f"{name}_true_score": float(self.score_texts(tokens).mean()),
            f"{name}_kl": float((logp - ref).sum(1).mean()),
        }
        if rm_name is not None:
            out[f"{name}_rm_score"] = float(model[rm_name].reward(tokens, c.response_tokens).mean())
        return out

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The SFT model, the reward models' held-out accuracy once they exist, and each policy
        (before PPO starts, a policy is still the base). Points after PPO started form the curve
        of KL against scores (learning to summarise, Fig. 5)."""
        m = self.measure_models(model)
        if "heldout_tokens" in self.comparisons:
            for name in self.reward_models:
                m[f"{name}_heldout_accuracy"] = self.rm_accuracy(model[name])
        if self.steps_done > self.boundaries()[1]:
            self.curve.append({"step": self.steps_done, **m})
        return m

    def measure_models(self, model: nn.Module, prompts: torch.Tensor | None = None) -> dict:
        """`measure` of the SFT model and of each policy on the same prompts."""
        m = self.measure(model, "sft", None, prompts)
        for name, (rm_name, _) in self.policies.items():
            m |= self.measure(model, name, rm_name, prompts)
        return m

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        """The last evaluation; with `final_eval_prompts`, the SFT model's and every policy's
        scores re-measured on that many held-out prompts (one sample each, the same for all)."""
        m = dict(last_eval)
        if self.cfg.final_eval_prompts:
            m |= self.measure_models(model, self.held_prompts[: self.cfg.final_eval_prompts])
        return m

    @torch.no_grad()
    def rm_accuracy(self, rm: rlhf.ScalarModel) -> float:
        """Share of held-out comparison pairs (different rule scores) the reward model orders
        like the rule."""
        tokens = self.comparisons["heldout_tokens"]
        rewards = rm(tokens.flatten(0, 1), self.cfg.response_tokens).view(len(tokens), -1)
        return pair_agreement(rewards, self.comparisons["heldout_rule"])

    def state_dict(self) -> dict:
        return {"demos": self.demos, "comparisons": self.comparisons, "curve": self.curve}

    def load_state_dict(self, state: dict) -> None:
        self.demos, self.comparisons = state["demos"], state["comparisons"]
        self.curve = state["curve"]


def pair_agreement(scores: torch.Tensor, rule: torch.Tensor) -> float:
    """Share of the pairs the rule orders (per prompt; both (prompts, K)) that `scores` orders
    the same way."""
    better = rule[:, :, None] > rule[:, None, :]
    agree = (scores[:, :, None] > scores[:, None, :]) & better
    return float(agree.sum() / better.sum().clamp(min=1))


def pairwise_loss(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Eq. 1 over every pair of each prompt's K samples with different ranks: rewards and ranks
    are (prompts, K); higher rank wins."""
    better = ranks[:, :, None] > ranks[:, None, :]
    if not better.any():
        return rewards.sum() * 0.0
    diff = rewards[:, :, None] - rewards[:, None, :]
    return rlhf.reward_model_loss(diff[better], torch.zeros_like(diff[better]))
