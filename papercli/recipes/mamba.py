"""Mamba: Linear-Time Sequence Modeling with Selective State Spaces (Gu & Dao, 2023).

Claims checked at mini scale, on the synthetic tasks of Sec. 4.1 (papercli/data/synthetic_sequences.py):
  1. selective copying (Table 1): the selective SSM (S6) copies the data tokens scattered through a
     noisy context, while the same network with a time-invariant (LTI, S4-style) SSM trained on the
     same batches for the same steps does not — selection is what lets a model skip the noise;
  2. induction heads (Table 2): trained on short sequences, S6 still recalls the token after the
     trigger on sequences several times longer than any it saw.

The model (papercli/models/ssm.py) follows Sec. 3:
  Sec. 3.2, Alg. 2  S6: Δ = softplus(Linear(x) + bias), B = Linear(x), C = Linear(x); A diagonal,
                    negative, real (S4D-real init A_n = −(n+1)); zero-order hold (Eq. 4);
  Sec. 3.3          the recurrence h_t = Ā_t h_{t−1} + B̄_t x_t computed by a parallel (log-depth)
                    associative scan in PyTorch — equal to the sequential one (tests/test_ssm.py);
                    the paper's fused GPU kernel is an implementation of the same scan;
  Sec. 3.4, Fig. 3  the Mamba block: in-projection, causal depthwise convolution, SiLU, S6, a SiLU
                    gate, out-projection; pre-RMSNorm residual blocks.
The LTI arm is the same network whose Δ, B, C are parameters rather than functions of the input
(Table 1's "Mamba architecture, S4 layer" row; it has no x-projection, so it is a little smaller).
Every model trains with AdamW and a warm-up + cosine schedule on the same batches.

    mini   2-layer models, D = 32, E = 2, N = 4 (the paper's N = 16 costs 4× the scan on 2 cores):
           selective copying of 4 tokens (8 kinds) placed at random in 32 noise positions;
           induction heads with 16 kinds of token, trained on length 32 and tested at 32, 128 and
           256; 300 steps of 48 sequences per task, evaluated at the end
    paper  Appendix E.1's task sizes: 2-layer models, D = 64, N = 16; selective copying of 16
           tokens (16 kinds) in a 4,096-token context; induction heads over 16 kinds, trained on
           length 256 and tested up to 2^14 here (the paper goes to 2^20); 400k steps of 8 are
           our choice for one GPU, not the paper's. The language models of Table 12 (mamba-130m …
           mamba-2.8b) are
           registered in papercli.models and counted by tests/test_ssm.py on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from papercli.data import synthetic_sequences as synth
from papercli.models.ssm import MambaConfig, MambaLM
from papercli.reproduce.config import bounded
from papercli.reproduce.engine import Recipe, TrainConfig, run
from papercli.reproduce.optim import warmup_cosine, weight_decay_groups

ARMS = {"mamba": True, "lti": False}  # arm → selective?
TASKS = ("copying", "induction")


@dataclass
class MambaTrainConfig(TrainConfig):
    arms: tuple[str, ...] = tuple(ARMS)
    tasks: tuple[str, ...] = TASKS
    d_model: int = bounded(32, ge=1)
    layers: int = bounded(2, ge=1)
    state: int = bounded(4, ge=1)  # N
    expand: int = bounded(2, ge=1)  # E
    lr: float = bounded(8e-3, gt=0.0)
    weight_decay: float = bounded(0.1, ge=0.0)
    warmup_steps: int = bounded(20, ge=0)
    # selective copying: `copy_tokens` data tokens of `copy_kinds` kinds in `copy_length` positions
    copy_length: int = bounded(32, ge=1)
    copy_tokens: int = bounded(4, ge=1)
    copy_kinds: int = bounded(8, ge=2)
    # induction heads: trained on `induction_length`, tested on each of `test_lengths`
    induction_length: int = bounded(32, ge=4)
    induction_kinds: int = bounded(16, ge=2)
    test_lengths: tuple[int, ...] = (32, 128, 256)
    eval_sequences: int = bounded(256, ge=1)


MINI = MambaTrainConfig(steps=300, batch_size=48, eval_every=300, log_every=25, grad_clip=1.0)
PAPER = MambaTrainConfig(
    d_model=64,
    state=16,
    steps=400_000,
    batch_size=8,
    eval_every=5000,
    log_every=500,
    lr=1e-3,
    warmup_steps=1000,
    copy_length=4096,
    copy_tokens=16,
    copy_kinds=16,
    induction_length=256,
    test_lengths=(256, 1024, 4096, 16384),
    grad_clip=1.0,
)


class MambaRecipe(Recipe):
    paper = "mamba"
    config_class = MambaTrainConfig
    scales = {"mini": MINI, "paper": PAPER}
    unit = "sequences"
    cfg: MambaTrainConfig

    # --- data: Sec. 4.1's synthetic tasks, a pure function of (seed, step, shard) -----------------
    def data_source(self) -> str:
        c = self.cfg
        return (
            f"synthetic (Sec. 4.1): selective copying of {c.copy_tokens} tokens in {c.copy_length}; "
            f"induction heads, length {c.induction_length}, tested at {list(c.test_lengths)}"
        )

    def _task(self, task: str, n: int, seed: int, length: int = 0):
        c = self.cfg
        if task == "copying":
            return synth.selective_copying(n, c.copy_length, c.copy_tokens, c.copy_kinds, seed)
        return synth.induction_heads(n, length or c.induction_length, c.induction_kinds, seed)

    def setup_data(self) -> None:
        for task in self.cfg.tasks:
            if task not in TASKS:
                raise ValueError(f"unknown task '{task}' (known: {', '.join(TASKS)})")
        # held-out sets from seeds no training step draws (those come from the step generator)
        seed = 10_000 + self.ctx.seed
        self.held = {("copying", 0): self._task("copying", self.cfg.eval_sequences, seed)}
        for length in self.cfg.test_lengths:
            self.held[("induction", length)] = self._task(
                "induction", self.cfg.eval_sequences, seed + length, length
            )

    def train_batch(self, step: int, micro: int = 0):
        batch = {}
        for i, task in enumerate(self.cfg.tasks):
            g = self.ctx.generator(step, stream=self.ctx.shard(micro) * len(TASKS) + i)
            seed = int(torch.randint(0, 2**62, (1,), generator=g))
            x, y = self._task(task, self.ctx.micro_batch, seed)
            batch[task] = (x.to(self.ctx.device), y.to(self.ctx.device))
        return batch

    # --- model: one network per (arm, task) --------------------------------------------------------
    def build_model(self) -> nn.Module:
        c = self.cfg
        vocab = {"copying": c.copy_kinds, "induction": c.induction_kinds}
        models = {}
        for arm in c.arms:
            if arm not in ARMS:
                raise ValueError(f"unknown arm '{arm}' (known: {', '.join(ARMS)})")
            for task in c.tasks:
                cfg = MambaConfig(
                    vocab_size=synth.vocab_size(vocab.get(task, 2)),
                    d_model=c.d_model,
                    layers=c.layers,
                    state=c.state,
                    expand=c.expand,
                    selective=ARMS[arm],
                )
                models[f"{arm}_{task}"] = MambaLM(cfg)
        return nn.ModuleDict(models)

    def configure_optimizers(self, model: nn.Module):
        out = {}
        for name, net in model.items():
            groups = weight_decay_groups(net, self.cfg.weight_decay, skip=("embed",))
            opt = torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(0.9, 0.95))
            out[name] = (opt, warmup_cosine(opt, self.cfg.warmup_steps, self.cfg.steps))
        return out

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Cross-entropy where an answer is due (the copy positions; the last induction token)."""
        out = {}
        for name, net in model.items():
            x, y = batch[name.split("_", 1)[1]]
            out[name] = F.cross_entropy(
                net(x).float().flatten(0, 1), y.flatten(), ignore_index=-100
            )
        return out

    # --- evaluation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _accuracy(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        hits = total = 0
        for i in range(0, len(x), 64):
            xb, yb = x[i : i + 64].to(self.ctx.device), y[i : i + 64].to(self.ctx.device)
            due = yb != synth.IGNORE
            hits += (net(xb).argmax(-1).eq(yb) & due).sum().item()
            total += due.sum().item()
        return hits / max(total, 1)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        metrics = {}
        for name, net in model.items():
            task = name.split("_", 1)[1]
            net.eval()
            for (held_task, length), (x, y) in self.held.items():
                if held_task == task:
                    key = f"{name}_acc" if task == "copying" else f"{name}_acc_{length}"
                    metrics[key] = self._accuracy(net, x, y)
            net.train()
        return metrics

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        arms = set(self.cfg.arms)
        if "copying" in self.cfg.tasks and arms >= {"mamba", "lti"}:
            # Table 1: selection solves the task, time invariance does not
            m["copying_s6_minus_lti"] = m["mamba_copying_acc"] - m["lti_copying_acc"]
        if "induction" in self.cfg.tasks and "mamba" in arms:
            longest = max(self.cfg.test_lengths)
            # Table 2: the accuracy on the longest test sequences, and how many times longer
            m["induction_longest_acc"] = m[f"mamba_induction_acc_{longest}"]
            m["induction_length_ratio"] = longest / self.cfg.induction_length
            if "lti" in arms:
                m["induction_s6_minus_lti"] = (
                    m["induction_longest_acc"] - m[f"lti_induction_acc_{longest}"]
                )
        return m


if __name__ == "__main__":
    run(MambaRecipe)
