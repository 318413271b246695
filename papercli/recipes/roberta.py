"""RoBERTa: A Robustly Optimized BERT Pretraining Approach (Liu et al., 2019).

Claim checked at mini scale (Sec. 1, Table 4): "BERT was significantly undertrained" — the same
network, pre-trained with dynamic masking, without next sentence prediction, with larger batches and
for longer, fine-tunes better than BERT as published.

Two identical masked-LM encoders (the bert recipe's network and objective, `recipes/bert.py`) run
side by side and are fine-tuned identically on the bert mini's labelled task (are 32 words of an
unseen play in Shakespeare's order or shuffled; its classifier on mean-pooled states; its mini
network: pre-LN, relative positions, 40 % masking, no dropout — see `recipes/bert.py`):
  bert     BERT's pre-training as the bert mini does it: static masks (each sequence masked once,
           Sec. 4.1), 32 windows per step, Adam β2 0.999
  roberta  RoBERTa's: dynamic masks ("we generate the masking pattern every time we feed a sequence
           to the model", Sec. 4.1), `roberta_batch_factor` × the windows per step (Sec. 4.3:
           larger batches) with a larger peak learning rate (Table 3 raises it with the batch),
           Adam β2 0.98 ("improves stability when training with large batch sizes", Sec. 3.1)
Neither uses next sentence prediction (Sec. 4.2, Table 2: removing it "matches or slightly
improves downstream task performance"; the bert mini drops it too), and both read contiguous
windows that may cross documents (Sec. 4.2's FULL-SENTENCES).

How the larger batch fits the shared loop: every pre-training step reads the bert arm's batch and,
for roberta only, the next `roberta_batch_factor − 1` batches of the same shuffled window order
(virtual steps after bert's, so roberta reads each of its windows once per epoch). Over the same
steps roberta so sees `roberta_batch_factor` × the sequences — the paper's "larger batches" and
"longer training" in one knob, at that compute ratio (the paper: 8K × 500K sequences against
BERT's 256 × 1M, 16×; Table 4's 16 GB row keeps BERT's data, as here).

    mini   the bert mini's network (d 128, 4 layers, 4 heads, 64-token windows, 1,024-token BPE)
           and its schedule: 600 pre-training steps of 32 windows for bert and 4 × 32 for roberta
           (roberta_lr 2e-3, 4× the compute), then 200 fine-tuning steps of 32 texts for both.
           It does not fit the 5-minute budget (731 / 694 s of one-thread CPU, below), and no
           cheaper schedule tried passes the claim checks
    paper  Sec. 4.4 / Table 9: RoBERTa-base (L 12, H 768, A 12; 125M) or --set size=roberta-large
           (L 24, H 1024, A 16; 355M), a 50,265-token byte-level BPE (Sec. 4.4), 514 positions;
           batch 8K × 512 tokens for 500K steps, Adam lr 6e-4 (large 4e-4), β2 0.98, ε 1e-6,
           warm-up 24K (large 30K) steps, weight decay 0.01, dropout 0.1. The bert arm keeps BERT's
           batch 256 and lr 1e-4 for the same 500K steps (half BERT's 1M). Data from --data FOLDER
           (text/*.txt; task/{train,test}.tsv)

Measured (one-thread user CPU; word-order task, 528 test texts, one standard error of an accuracy
≈ 2 points; held-out MLM loss in nats at 40 % masking, after pre-training):
  the mini    seed 0: roberta 81.1 % vs bert 66.1 % (+15.0), MLM 4.39 vs 5.16, 731 s
              seed 1: roberta 79.4 % vs bert 58.3 % (+21.0), MLM 4.72 vs 5.15, 694 s
  Both claim checks pass on both seeds; `seconds` fails (≤ 300 s wall on 2 idle cores, ≈ 280 s
  of one-thread CPU): NOT reproduced. The roberta arm's MLM, with 4× the windows, also beats the
  bert mini's left-to-right arm (69-70 %): the bert mini's failure is the masked LM's budget.
  Where the 731 s go (seed 0, per step): a forward + backward of 32 windows 0.19 s (the bert
  arm), the roberta arm's 4 × 32 0.85 s, so pre-training is 600 × 1.05 ≈ 630 s; fine-tuning
  200 steps × 2 arms × 0.18 s ≈ 71 s; each evaluation (528 texts × 2 arms + held-out MLM) 2 s,
  4 of them; data set-up 5 s. The budget leaves ≈ 200 s, ≈ 1,050 batches of 32 windows, for
  both arms' pre-training (bert S of them, roberta F × S at factor F over S steps).
  Cheaper schedules (issue 13o, seed 0; both arms' steps cut alike, cosine over the new length,
  `eval_every` = the pre-training steps; fine-tuning steps × texts):
    factor  pre-train  fine-tune  roberta lr / warm-up  CPU s  MLM rob / bert  acc rob / bert
    2       360        100 × 32   2e-3 / 50              253   5.25 / 5.48     52.5 / 51.7 %
    4       220        200 × 16   2e-3 / 50              272   5.34 / 5.63     52.3 / 56.4 %
    4       220        200 × 16   4e-3 / 50              268   5.54 / 5.63     53.8 / 56.4 %
    2       400        200 × 16   2e-3 / 20              283   5.27 / 5.39     52.7 / 55.5 %
    4       300        200 × 16   2e-3 / 50              365   5.16 / 5.55     55.5 / 56.6 %
    4       400        200 × 32   2e-3 / 50              495   4.96 / 5.39     60.4 / 53.6 %
  None passes the 65 % floor; only the last passes the margin (+6.8). Why: (1) the masked LM
  leaves the unigram plateau late and only while its learning rate is still high — in the
  600-step mini roberta is at 5.26 at step 200 and 4.51 at step 400 (mid-cosine), but a
  400-step cosine ends at 4.96 and a 220-step one at 5.34: cutting steps costs more than
  proportionally. (2) A larger batch does not buy the steps back: factor 4 × 220 steps (880
  batches) ends at 5.34, factor 2 × 360 (720) at 5.25 — updates, not windows, are short. (3) A
  larger peak lr does not either: 4e-3 (Table 3's linear scaling for 4×) 5.54 against 2e-3's
  5.34. (4) Fine-tuning on 3,200 texts (100 × 32, or 200 × 16: RoBERTa's and BERT's fine-tuning
  batch 16, Table 10) left the fine-tuning loss at 0.67-0.69 (ln 2 = 0.69) in every arm, roberta
  at MLM 5.16 too; the mini's 6,400 (200 × 32) reach 0.51-0.65 (not separated from those runs'
  weaker pre-training, but no saving there either). So ≈ 280 s cannot hold BERT's recipe for S
  steps plus RoBERTa's at ≥ 2× the batch for the S that the floor needed here (600 passed, 400
  did not: ≈ 3,000 batches of 32 against the ≈ 1,050 the budget leaves). Not tried: a smaller
  network for both arms (it would no longer be the bert mini's), other seeds of the cheaper
  schedules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from papercli.recipes.bert import MINI as BERT_MINI
from papercli.recipes.bert import BERTConfig, BERTRecipe
from papercli.reproduce.config import bounded
from papercli.reproduce.engine import run
from papercli.reproduce.optim import warmup_cosine, weight_decay_groups


@dataclass
class RoBERTaConfig(BERTConfig):
    arms: tuple[str, ...] = ("roberta", "bert")
    roberta_batch_factor: int = bounded(4, ge=1)  # roberta's windows per step / bert's
    roberta_lr: float = bounded(2e-3, gt=0.0)  # roberta's phase-1 peak learning rate
    roberta_warmup_steps: int = bounded(50, ge=0)
    roberta_beta2: float = bounded(0.98, gt=0.0, lt=1.0)


MINI = RoBERTaConfig(**{**vars(BERT_MINI), "arms": ("roberta", "bert")})
# Measured: see "Measured" in the module docstring (both claim checks pass on seeds 0 and 1, the
# time budget does not; cheaper schedules tried, with numbers).
# The published RoBERTa: 500K steps of 8K sequences (Table 9); 8K = 32 × BERT's 256.
PAPER = RoBERTaConfig(
    dataset="text",
    size="roberta-base",
    vocab_size=50262,  # + <s>, </s>, <mask> = the released 50,265 ids
    context=512,
    steps=503_000,
    pretrain_fraction=500_000 / 503_000,
    batch_size=256,
    micro_batch_size=8,
    lr=1e-4,
    warmup_steps=10_000,
    roberta_batch_factor=32,
    roberta_lr=6e-4,
    roberta_warmup_steps=24_000,
    roberta_beta2=0.98,
    weight_decay=0.01,
    finetune_lr=2e-5,
    finetune_batch_size=32,
    finetune_warmup=0.06,
    labelled_per_class=None,
    dropout=0.1,
    eval_every=20_000,
    log_every=500,
    grad_clip=1.0,
)


class RoBERTaRecipe(BERTRecipe):
    paper = "roberta"
    config_class = RoBERTaConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: RoBERTaConfig
    CLS, SEP, MASK = "<s>", "</s>", "<mask>"  # fairseq's names for the same roles
    SPECIALS = (CLS, SEP, MASK)
    PRETRAINING_ARMS = ("roberta", "bert")
    PAPER_SIZES = ("roberta-base", "roberta-large")

    def is_causal(self, name: str) -> bool:
        return False

    def dynamic_masks(self, name: str) -> bool:
        return name == "roberta"  # Sec. 4.1

    def train_batch(self, step: int, micro: int = 0):
        """Phase 1: bert's windows, then roberta's extra ones (the next batches of the same
        shuffled order, numbered after bert's last step so that none repeats within an epoch)."""
        batch = super().train_batch(step, micro)
        extra = self.cfg.roberta_batch_factor - 1
        if batch[0] != "pretrain" or not extra or "roberta" not in self.cfg.arms:
            return batch
        _, x, y = batch
        first = self.pretrain_steps + step * extra
        more = [
            self.stream.at(self.ctx.batch_indices(len(self.stream), first + j, micro))
            for j in range(extra)
        ]
        dev = self.ctx.device
        return (
            "pretrain",
            torch.cat([x, *(m[0].to(dev) for m in more)]),
            torch.cat([y, *(m[1].to(dev) for m in more)]),
        )

    def pretrain_loss(self, name, arm, x, y, step) -> torch.Tensor:
        if name != "roberta":  # bert reads only its own batch, the first rows
            rows = len(x) // (self.cfg.roberta_batch_factor if "roberta" in self.cfg.arms else 1)
            x, y = x[:rows], y[:rows]
        return super().pretrain_loss(name, arm, x, y, step)

    def configure_optimizers(self, model: nn.Module):
        """bert keeps the shared phase-1 optimizer; roberta's has its own peak learning rate,
        warm-up and β2 = 0.98, ε = 1e-6 (Sec. 3.1, Table 9)."""
        out = super().configure_optimizers(model)
        if "roberta" in model:
            groups = weight_decay_groups(
                model["roberta"], self.cfg.weight_decay, skip=("embed", "pos")
            )
            opt = torch.optim.AdamW(
                groups, lr=self.cfg.roberta_lr, betas=(0.9, self.cfg.roberta_beta2), eps=1e-6
            )
            sched = warmup_cosine(opt, self.cfg.roberta_warmup_steps, self.pretrain_steps)
            out["roberta/pretrain"] = (opt, sched)
        return out

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = super().final_metrics(model, last_eval)
        if {"roberta_test_acc", "bert_test_acc"} <= set(m):
            m["roberta_over_bert"] = m["roberta_test_acc"] - m["bert_test_acc"]
        m["roberta_compute_ratio"] = float(self.cfg.roberta_batch_factor)
        return m


if __name__ == "__main__":
    run(RoBERTaRecipe)
