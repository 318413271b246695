"""BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding (Devlin et al.,
2018).

Claims checked at mini scale: masked-LM pre-training of a bidirectional encoder, then fine-tuning,
beats the same network trained on the labelled task alone; and it beats the same-size network
pre-trained as a left-to-right LM (Table 5: "LTR & No NSP" loses 3–11 points on MNLI, QNLI, MRPC,
SQuAD against BERT-base).

Three networks of equal size run side by side on the same batches (one run, two phases; see
`_pretrain_finetune`):
  bidirectional  phase 1: the masked LM of Sec. 3.1 — 15% of the tokens are chosen; 80% of those
                 become [MASK], 10% a random token, 10% stay (Appendix A.1); the model predicts the
                 chosen tokens from both sides. BERT's static masks: a sequence is masked the same
                 way every time it is seen (`methods.masking`).
  left_to_right  phase 1: the same network with causal attention trained as a left-to-right LM on
                 the same windows (Table 5's "LTR & No NSP": "the left-only constraint was also
                 applied at fine-tuning"); a word's score comes from its own causal state (a
                 sentence-level class from the state of its last real token).
  scratch        phase 2 only: the same fine-tuning from random weights.
The network is BERT's (Sec. 3, the released code): post-LayerNorm encoder blocks, learned positions,
segment embeddings, a LayerNorm over the embedding sum, GELU, the masked-LM head's transform
(dense, GELU, LayerNorm) before the output layer tied to the token embeddings, N(0, 0.02) init.
Fine-tuning (Sec. 3.2): sentence-level tasks (Fig. 4a/b; `--set task=word_order`) read a linear
layer on BERT's pooled [CLS] state, tanh(W h_[CLS] + b), with dropout 0.1; token-level tasks
(Fig. 4c/d; the mini's `sentence_end`, or `--set task=replaced_word`) put one output on every
token's own final state — SQuAD's start vector S, a softmax over the text's positions (Sec. 4.2)
— and score a word by its last token (the first state of the left-to-right network that has
read the whole word). The input is `[CLS] text [SEP]`.

Why a token-level task: Sec. 5.1 explains Table 5 with "the LTR model will perform poorly at token
predictions, since the token-level hidden states have no right-side context", and LTR's largest
loss there is SQuAD (−10.7 F1). The mini's task (`plays.sentence_end_task`, punctuation
restoration in SQuAD's pointer shape): 17 consecutive words of an unseen play with the
punctuation removed (case kept); exactly one of the first 16 ended a sentence; which one (chance
1/16; 1,539 fine-tuning texts, 729 test texts). Both sides carry evidence: the left says whether
a sentence could end here (a left-to-right LM knows where "." goes: its arm reaches ~40 %), the
right whether a new one starts — the next word's capital letter, though every verse line starts
with a capital too (the word before a capital is the answer for 87 % of the texts, among 2.3
such words per text; always taking the first of them scores 46.1 %), and which word it is
(after a capitalised "Why", "O" or "If" a sentence ended in 73-84 % of the texts' uses, after
"Of", "And" or "To" in 12-17 %: they mostly start verse lines; names, 3-9 %). A word's identity
alone says little (the share of a word's fine-tuning occurrences that end a sentence, best word
per text: 15.8 %; the most common position: 6.0 %). It is a fair test of the paper's argument:
the same 1,539 labels reach all three arms; the left-to-right arm keeps all its left-side
knowledge and loses only what Sec. 5.1 says it loses, the right side; scratch has the
bidirectional network and both sides but must learn from the labels alone which tokens start
sentences and which words end them (measurements under MINI).

Next sentence prediction is dropped here (no sentence pairs: the pre-training windows are
contiguous 64-token stretches of the plays, as RoBERTa's FULL-SENTENCES, Liu et al. Sec. 4.2).
Table 5 shows that dropping NSP costs BERT a little (MNLI 84.4 → 83.9) and RoBERTa (Table 2) finds
it does not help; it applies equally to both pre-trained arms here, so it does not favour either.
Without NSP the pooler is not pre-trained: it starts from random weights at fine-tuning.

    mini   d 128, 4 layers, 4 heads, d_ff 512, 64-token windows, 1,024-token BPE; 600
           pre-training steps of 32 windows, then 100 fine-tuning steps of 32 texts of the
           sentence-end task (`plays.sentence_end_task`, 16 candidate words, 1,539 texts),
           one score per word.
           Mini-scale deviations, all arms alike (BERT's own network never left the
           unigram plateau here; measurements under MINI): pre-LN blocks, T5's relative position
           bias instead of learned positions (no segment / embedding LayerNorm then), 40 % of
           the tokens predicted instead of 15 %, no dropout
    paper  Sec. 3 / Appendix A.2: BERT-base (L 12, H 768, A 12; 110M) or --set size=bert-large
           (L 24, H 1024, A 16; 340M), 30,522 WordPiece ids, 512 positions, 2 segments; Adam lr
           1e-4, β 0.9 / 0.999, L2 weight decay 0.01, warm-up over 10,000 steps then linear decay,
           dropout 0.1, batch 256 × 512 tokens, 1M steps (~40 epochs of 3.3B words); fine-tuning
           lr from {5e-5, 3e-5, 2e-5}, batch 32, 3 epochs. Data from --data FOLDER (text/*.txt,
           e.g. BooksCorpus + Wikipedia; task/{train,test}.tsv)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from papercli.data import lm
from papercli.methods.masking import IGNORE, MaskingRates, mask_tokens, sequence_seeds
from papercli.models.transformer import SIZES, Transformer, TransformerConfig
from papercli.recipes._pretrain_finetune import (
    TOKEN_LEVEL_TASKS,
    PretrainFinetuneConfig,
    PretrainFinetuneRecipe,
    mean_pool,
)
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import run


@dataclass
class BERTConfig(PretrainFinetuneConfig):
    arms: tuple[str, ...] = ("bidirectional", "left_to_right", "scratch")
    size: str = "mini"  # "mini", or the paper's "bert-base" / "bert-large"
    dim: int = bounded(128, ge=8)  # mini network (size = mini)
    layers: int = bounded(4, ge=1)
    heads: int = bounded(4, ge=1)
    mask_rate: float = fraction(0.15)  # Sec. 3.1: share of tokens predicted
    pool: Literal["cls", "mean"] = "cls"  # the classifier reads the pooled [CLS] or the mean
    norm: Literal["post", "pre"] = "post"  # mini network: BERT's post-LayerNorm, or pre-LN
    positions: Literal["learned", "relative"] = "learned"  # mini: BERT's, or T5's relative bias


MINI = BERTConfig(
    steps=700,
    batch_size=32,
    eval_every=700,  # one evaluation, at the end (each costs three passes over the test texts)
    log_every=25,
    grad_clip=1.0,
    lr=1e-3,
    warmup_steps=50,
    pretrain_fraction=6 / 7,  # 600 pre-training steps, then 100 fine-tuning steps
    task="sentence_end",  # token-level (Sec. 5.1); word order and replaced_word: see below
    task_words=16,
    labelled_per_class=None,  # every window with one sentence end: 1,539 texts
    finetune_lr=1e-3,  # as the token-level measurements below (word order used 1e-4)
    finetune_warmup=0.1,
    pool="mean",
    # mini-scale deviations that let the masked LM leave the unigram plateau in 600 steps (the
    # measurements below): pre-LN (as the lm-compression mini), 40 % of the tokens predicted
    # (Wettig et al. 2023, "Should You Mask 15% in Masked Language Modeling?"), no dropout, and
    # T5's relative position bias (Raffel et al. Sec. 2.1) instead of learned absolute positions
    norm="pre",
    positions="relative",
    mask_rate=0.4,
    dropout=0.0,
)
# Why the deviations (issue 13k; seed 0, the bidirectional arm trained alone on the mini's
# batches, held-out masked-LM loss in nats at 15 % masking; the unigram entropy of the training
# tokens is 5.79 nats, and an untrained-to-plateau MLM sits at 5.83-5.86 on the held-out plays):
#   BERT's network (post-LN, learned positions), lr 1e-3:  200: 5.71  400: 5.59  800: 5.50
#     the same for 1,600 steps (2x the budget, cosine over 1,600): 1,000: 5.48  1,600: 5.46
#   pre-LN, lr 1e-3: 400: 5.59        pre-LN, lr 3e-3: 400: 5.83    post-LN, lr 3e-3, β2 0.98: 5.86
#   mask rate 0.4 (evaluated at 0.4): 400: 5.48                     dropout 0: 400: 5.57
#   relative position bias (T5), otherwise BERT's: 400: 5.51
#   pre-LN + mask 0.4 + dropout 0, learned positions: 400: 5.51  800: 5.46 (still the plateau)
#   pre-LN + mask 0.4 + dropout 0 + relative positions:  400: 5.24  600: 4.98  800: 4.91
# Only the last leaves the plateau within the budget. Likely why: a masked position's input is
# [MASK], so even a bigram needs attention to the neighbouring positions, which learned absolute
# positions make slow to find (the left-to-right LM gets its bigram through the residual stream
# and reaches 4.0 nats in 800 steps); a relative bias gives "attend to my neighbour" directly.
# The full mini run of BERT's own network (seed 0, which-play task, 800 + 200 steps, as on main):
# bidirectional 18.9 %, left-to-right 21.3 %, scratch 24.5 % (chance 16.7 %), held-out MLM 5.52 /
# LM 4.03 nats after pre-training, 519 s one-thread user CPU: the left-to-right LM learned and
# still trails scratch on which-play (as the gpt mini's sweep: a 5-CPU-minute LM adds nothing to
# that lexical task), so the task, not only the pre-training, fails there -> the word-order task.
# Full mini runs with the deviations (word-order task, 528 test texts: one standard error of an
# accuracy ≈ 2.2 points; held-out losses after fine-tuning, the MLM's at 40 % masking):
#   seed  bidirectional  left_to_right  scratch   MLM / LM loss at step 600   user CPU, one thread
#   0     56.1 %         69.1 %         51.7 %    5.22 / 4.21 nats            385 s
#   1     63.6 %         70.3 %         52.1 %    5.13 / 4.23 nats            396 s
# NOT reproduced: the masked LM now leaves the plateau and beats scratch by 4.4 / 11.6 points
# (BERT's own network, issue 13i, seed 0: +2.3; seed 1 passes the gain check), but the left-to-right LM, on the same network and batches, is
# ahead by 13.1 / 6.6 points (Table 5's order reversed), and the floor of 65 % is missed (56.1 /
# 63.6 %). Both runs also exceed the time budget (385 / 396 s one-thread CPU, 495 / 593 s wall on
# the loaded shared machine). Per window the MLM is scored on 40 % of the tokens, the
# LTR LM on all of them, and its loss is still ~1 nat behind at 600 steps; the paper's MLM
# catches up over ~1M steps (Appendix C.1, Fig. 5), far outside a 5-CPU-minute budget. Not tried
# for lack of time: these deviations one at a time in full runs, pre-training steps traded for
# fine-tuning ones, the roberta mini on this network. (The 65 % floor was that task's.)
# Sentence-level word order is a task a left-to-right LM is made for (its surprisal tells real
# order from shuffled), so issue 13p moved the mini to the token-level task of Sec. 5.1's argument
# (`plays.replaced_word_task`, 16 words, chance 6.25 %; 1,000 test texts: one standard error of
# an accuracy near chance ≈ 0.8 points). Measured, one-thread user CPU, the mini's schedule:
#   full mini runs (the default; held-out MLM / LM loss after pre-training, then after fine-tuning)
#   seed  bidirectional  left_to_right  scratch   MLM / LM nats                  user CPU
#   0     5.6 %          7.4 %          5.6 %     5.22 / 4.20 -> 5.50 / 4.86   393 s
#   1     7.5 %          5.9 %          6.2 %     5.13 / 4.23 -> 6.22 / 4.62   394 s
#   fine-tuning alone from seed 0's pre-trained arms (600 steps; arms fine-tuned one at a time):
#     finetune_lr 3e-4 / 1e-3, 200 steps: bidirectional 5.9 / 5.0 %, left-to-right 5.1 / 6.1 %,
#       scratch (1e-3) 5.9 %: every arm at chance (a first full run, seed 0, before the 3
#       texts longer than 64 tokens were dropped: 5.8 / 4.9 / 5.8 %, 407 s)
#     unigram replacements (`bigram=False`, a random word of the plays: easier), lr 1e-3:
#       200 steps bidirectional 5.3 %, scratch 5.6 %; 600 steps bidirectional 6.7 %,
#       left-to-right 7.4 % (its training loss 2.29 against ln 16 = 2.77: it memorises)
#     tagging instead of a pointer (4 of 16 words replaced by unigram draws, a sigmoid per
#       word, precision of the top 4; chance 25 %), lr 1e-3, 200 steps: bidirectional 24.4 %,
#       left-to-right 27.9 %, scratch 25.0 %
#     a sanity check that the head and data path can learn: the replaced word written as "@@@",
#       scratch, 60 steps: 100 %
#   zero-shot, the pre-trained output layers alone (500 test texts, seed 0): the masked LM's
#   pseudo-likelihood (each word masked in turn; the least likely is the guess) 5.2 % (7.0 %
#   divided by the word's unigram probability), the left-to-right LM's surprisal of the word
#   5.6 % (8.8 %), the word's rarity alone 5.8 %; only the left-to-right LM's surprisal of the
#   word plus the next word's (right context, which its token-level state cannot see) is above
#   chance, 10.4 %.
# NOT reproduced with it either (the mini went back to word order, until the sentence-end task
# below): after 600 pre-training steps neither LM knows enough to spot a plausible replacement
# (the masked LM not even zero-shot), so no arm beats chance, the floor is missed
# (`bidirectional_above_chance` ≥ 0.3, i.e. 34.4 % here; 65 % on word order, that task's old
# floor) and the bidirectional-over-LTR margin is noise. The run also exceeds the time budget
# (pre-training the two arms alone is ≈ 280 s one-thread CPU). The task needs a better masked LM
# than ≈ 5 CPU minutes buy here (held-out 5.2 nats against the unigram's 5.8; RoBERTa's 4×
# windows reach 4.4-4.7, `recipes/roberta.py`, at 700 s).
# Issue 13 moved the mini to the token-level sentence-end task (`task=sentence_end`,
# docstring; 729 test texts: one standard error of an accuracy near 50 % ≈ 1.9 points).
# Fine-tuning alone from the pre-trained arms (seed 0 / 1, each arm on its own, lr 1e-3, batch
# 32):
#   an earlier cut (16-word windows, the last word a candidate too: 1,507 texts), seed 0, 200
#     steps: bidirectional 61.6 %, left-to-right 42.3 %, scratch 31.8 % (its training loss 0.60:
#     it memorises the 1,507 texts)
#   the task as now, 100 steps: bidirectional 53.9 / 59.9 %, left-to-right 40.2 / 41.0 %
#   a cheaper phase 2 to fit the budget, 50 steps of 16 texts (≈ 8 s per arm): bidirectional
#     35.1 / 41.2 %, left-to-right 37.3 / 38.3 % (seed 0 fails the margin and nearly the floor)
# Full mini runs (600 + 100 steps, one thread; held-out MLM / LM loss after fine-tuning):
#   seed  bidirectional  left_to_right  scratch   MLM / LM nats   user CPU
#   0     53.9 %         40.3 %         16.2 %    6.21 / 6.01     325 s
#   1     58.0 %         40.7 %         15.6 %    5.84 / 6.10     324 s
#   2     55.6 %         42.8 %         16.2 %    5.94 / 5.72     320 s   (every claim check too)
# Every claim check passes on both seeds: masked LM over scratch +37.7 / +42.4 points, over the
# left-to-right LM +13.6 / +17.3, the floor (≥ 0.3 of the way from chance, 34.4 %) at 0.51 /
# 0.55. One thread on the loaded shared machine took 325 s of CPU (pre-training the two arms
# ≈ 255-260 s of it; the wall-clock check failed there, 1,712 / 1,722 s); the mini as a user
# runs it, on 2 idle cores (seed 0): 54.0 / 40.3 / 16.2 %, 174 s wall (352 s of CPU over both
# threads), every check passes: reproduced. The fine-tuned LMs' own losses rise (lr 1e-3 retrains their states for the
# task). The left-to-right arm's 40 % is what the left side alone gives; the bidirectional arm's
# lead over it is what the right side adds (Sec. 5.1), and its lead over scratch is what
# pre-training adds. The word-order and replaced_word measurements above came before this task.
# 1M steps of 256 sequences (Appendix A.2); 3 fine-tuning epochs are a few thousand updates for
# a GLUE-sized task, so phase 2 is ~0.3% of the run. Batch 256 runs as 32 micro-batches of 8.
PAPER = BERTConfig(
    dataset="text",
    size="bert-base",
    vocab_size=30519,  # + [CLS], [SEP], [MASK] = the released 30,522 ids
    context=512,
    steps=1_003_000,
    pretrain_fraction=1_000_000 / 1_003_000,
    batch_size=256,
    micro_batch_size=8,
    lr=1e-4,
    warmup_steps=10_000,
    weight_decay=0.01,
    finetune_lr=3e-5,
    finetune_batch_size=32,
    finetune_warmup=0.1,
    labelled_per_class=None,
    dropout=0.1,
    eval_every=20_000,
    log_every=500,
    grad_clip=1.0,
)


class BERTClassifier(nn.Module):
    """The pre-trained network plus the task's output layer on its pooled state (Sec. 3.2)."""

    def __init__(self, cfg: TransformerConfig, classes: int):
        """classes = 1: a token-level head, one score per token (SQuAD's start vector S, Sec. 4.2)."""
        super().__init__()
        self.transformer = Transformer(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.dim, classes)


class BERTRecipe(PretrainFinetuneRecipe):
    """The bidirectional masked LM, and the left-to-right LM of Table 5, on the same network.
    RoBERTa reuses it (`recipes/roberta.py`): which arms are bidirectional, which mask
    dynamically, and how many windows each arm reads per step are the hooks it changes."""

    paper = "bert"
    config_class = BERTConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: BERTConfig
    CLS, SEP, MASK = "[CLS]", "[SEP]", "[MASK]"
    SPECIALS = (CLS, SEP, MASK)
    PRETRAINING_ARMS = ("bidirectional", "left_to_right")
    PAPER_SIZES = ("bert-base", "bert-large")

    # --- the paper's hooks ------------------------------------------------------------------------
    def is_causal(self, name: str) -> bool:
        return name == "left_to_right"

    def dynamic_masks(self, name: str) -> bool:
        return False  # BERT masks each sequence once (RoBERTa Sec. 4.1: "static masking")

    # --- data -----------------------------------------------------------------------------------
    @property
    def token_level(self) -> bool:
        """The plays' token-level tasks: a score per word from its own states (Fig. 4c / 4d)."""
        return self.cfg.dataset == "plays" and self.cfg.task in TOKEN_LEVEL_TASKS

    def setup_data(self) -> None:
        super().setup_data()
        if not self.token_level:  # word boundaries matter only to the token-level head
            return
        # byte-level BPE marks a word's first token with its leading space ("Ġ"): which ids start
        # a word, so a word's last token is the one before the next word's first (or [SEP])
        starts = torch.zeros(self.model_vocab, dtype=torch.bool)
        for token, i in self.tokenizer.get_vocab().items():
            starts[i] = token.startswith("Ġ")
        self.starts_word = starts
        # drop the few texts cut by `context` (their label may be cut off)
        self.train_rows, self.train_labels = self.whole_texts(*self.train_rows, self.train_labels)
        self.test_rows, self.test_labels = self.whole_texts(*self.test_rows, self.test_labels)

    def whole_texts(self, rows: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor):
        """The rows (and their labels) that hold all `task_words` words."""
        whole = (self.word_scores(torch.zeros(rows.shape), rows, lengths) > -1).all(1)
        return (rows[whole], lengths[whole]), labels[whole]

    def encode_task(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sec. 3 "Input/Output Representations": [CLS] text [SEP] (one segment)."""
        return lm.encode_rows(
            self.tokenizer,
            texts,
            self.cfg.context,
            prefix=[self.special[self.CLS]],
            suffix=[self.special[self.SEP]],
            pad=self.eot,
        )

    # --- model ----------------------------------------------------------------------------------
    def build_arm(self, name: str) -> nn.Module:
        c = self.cfg
        arch = "decoder" if self.is_causal(name) else "encoder"
        if c.size in self.PAPER_SIZES:
            base = SIZES[c.size]
            max_len = max(base.max_len, c.context)
        elif c.size == "mini":
            base = replace(
                SIZES[self.PAPER_SIZES[0]], dim=c.dim, layers=c.layers, heads=c.heads,
                ff_dim=4 * c.dim, norm=c.norm, positions=c.positions,
            )  # fmt: skip
            max_len = c.context
        else:
            raise ValueError(f"unknown size '{c.size}' (mini, {', '.join(self.PAPER_SIZES)})")
        cfg = replace(
            base, arch=arch, vocab_size=self.model_vocab, max_len=max_len, dropout=c.dropout
        )
        return BERTClassifier(cfg, 1 if self.token_level else self.num_classes)

    # --- objectives -----------------------------------------------------------------------------
    def mlm_inputs(self, x: torch.Tensor, step: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sec. 3.1 Task #1 / Appendix A.1: [CLS] window [SEP], 15% of its text tokens chosen
        (80% [MASK], 10% random, 10% kept): (inputs, targets; IGNORE where not chosen). step=None:
        static masks (a function of the sequence), else a fresh mask for this step (RoBERTa)."""
        cls, sep = self.special[self.CLS], self.special[self.SEP]
        edge = torch.full_like(x[:, :1], cls), torch.full_like(x[:, :1], sep)
        rows = torch.cat([edge[0], x[:, : x.shape[1] - 2], edge[1]], dim=1)
        maskable = (rows < self.cfg.vocab_size) & (rows != self.eot)  # never [CLS]/[SEP]/eot
        return mask_tokens(
            rows,
            maskable,
            sequence_seeds(rows, self.ctx.seed, step),
            mask_id=self.special[self.MASK],
            random_vocab=self.cfg.vocab_size,
            rates=MaskingRates(select=self.cfg.mask_rate),
        )

    def mlm_loss(self, arm: nn.Module, x: torch.Tensor, step: int | None) -> torch.Tensor:
        """Predict the chosen tokens from both sides: cross-entropy at those positions only."""
        inputs, targets = self.mlm_inputs(x, step)
        chosen = targets != IGNORE
        states = arm.transformer.encode(inputs)[chosen]  # only the predicted positions
        return F.cross_entropy(arm.transformer.logits(states).float(), targets[chosen])

    def ltr_loss(self, arm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Table 5's LTR model: next-token prediction over [CLS] window, causal attention."""
        inputs = torch.cat([torch.full_like(x[:, :1], self.special[self.CLS]), x[:, :-1]], dim=1)
        logits = arm.transformer.logits(arm.transformer.decode(inputs)).float()
        return F.cross_entropy(logits.flatten(0, 1), x.flatten())

    def pretrain_loss(self, name, arm, x, y, step) -> torch.Tensor:
        if self.is_causal(name):
            return self.ltr_loss(arm, x)
        return self.mlm_loss(arm, x, step if self.dynamic_masks(name) else None)

    def word_scores(self, scores: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor):
        """Token scores (N, T) -> one per word (N, task_words): each word's score is that of its
        last token. BERT reads a word's first sub-token (Sec. 5.3); the last is the first state of
        a left-to-right network that has read the whole word, so the LTR arm is not handicapped
        by the choice. Words cut off by the row's length score -1e4 (never picked)."""
        nxt = rows[:, 1:]
        at = torch.arange(1, rows.shape[1], device=rows.device)
        last_text = lengths[:, None] - 2  # the token before [SEP]
        ends = (self.starts_word.to(rows.device)[nxt] | (at - 1 == last_text)) & (
            at - 1 <= last_text
        )
        ends[:, 0] = False  # position 0 is [CLS]
        word = ends.cumsum(1) - 1
        keep = ends & (word < self.cfg.task_words)
        out = scores.new_full((len(rows), self.cfg.task_words), -1e4)
        row = torch.arange(len(rows), device=rows.device)[:, None].expand_as(keep)
        out[row[keep], word[keep]] = scores[:, :-1][keep]
        return out

    def classify(self, arm, rows, lengths) -> torch.Tensor:
        """Sec. 3.2: a linear layer on the pooled [CLS] state; the left-to-right network pools
        its last real token (the last text token before [SEP]: the only state that has read
        the whole text under causal attention, as GPT's extract token). pool = mean: the linear
        layer reads the mean of the last block's states over the row's real tokens instead."""
        at = torch.arange(len(rows), device=rows.device)
        if arm.transformer.cfg.arch == "decoder":
            states = arm.transformer.decode(rows)
            last = at, lengths - 2
        else:
            real = torch.arange(rows.shape[1], device=rows.device) < lengths[:, None]
            states = arm.transformer.encode(rows, real)
            last = at, torch.zeros_like(lengths)
        if self.token_level:  # Fig. 4c/d: each token's own final state, one shared output layer
            scores = arm.classifier(arm.drop(states)).squeeze(-1).float()
            return self.word_scores(scores, rows, lengths)
        if self.cfg.pool == "mean":
            return arm.classifier(arm.drop(mean_pool(states, lengths)))
        return arm.classifier(arm.drop(arm.transformer.pool(states[last])))

    # --- evaluation -----------------------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Task accuracy of every arm, and each pre-trained arm's own pre-training loss on the
        unseen plays (static masks, so every evaluation scores the same corrupted windows)."""
        metrics = super().evaluate(model)
        x, _ = self.held.at(self.held.spread(64))
        x = x.to(self.ctx.device)
        for name in self.PRETRAINING_ARMS:
            if name not in model:
                continue
            if self.is_causal(name):
                metrics[f"{name}_heldout_lm_loss"] = float(self.ltr_loss(model[name], x))
            else:
                metrics[f"{name}_heldout_mlm_loss"] = float(self.mlm_loss(model[name], x, None))
        return metrics

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = super().final_metrics(model, last_eval)
        if {"bidirectional_test_acc", "left_to_right_test_acc"} <= set(m):  # Table 5
            m["bidirectional_over_ltr"] = m["bidirectional_test_acc"] - m["left_to_right_test_acc"]
        if "bidirectional_test_acc" in m:  # 0 at chance, 1 when every answer is right: one floor
            chance = m["chance_acc"]  # for tasks of any number of classes
            m["bidirectional_above_chance"] = (m["bidirectional_test_acc"] - chance) / (1 - chance)
        return m


if __name__ == "__main__":
    run(BERTRecipe)
