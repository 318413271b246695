"""What the pre-train-then-fine-tune papers share (GPT, BERT, RoBERTa, T5, ELMo): one run in two
phases, and the labelled task that decides whether pre-training paid off.

Phase 1 (the first `pretrain_fraction` of the steps): the arms that pre-train learn from unlabelled
text — the training plays as one BPE token stream — each with its own objective (left-to-right LM,
masked LM, span corruption, biLM) and its own optimizer and schedule. Arms that do not pre-train
("scratch") wait. Phase 2: every arm is fine-tuned on the same labelled batches for the same steps,
so the only difference between a pre-trained arm and `scratch` is what phase 1 taught it.

The labelled task is built from plays that pre-training never reads, with few labels per class —
the regime where the papers show pre-training matters most. `task` selects it: "play"
(`plays.play_task`: which of the six held-out plays a speech comes from — lexical, names and
topics decide it, so a small LM adds nothing: see the sweep in `recipes/gpt.py`) or "word_order"
(`plays.word_order_task`: is a stretch of `task_words` words in Shakespeare's order or shuffled —
the same words in both classes, so bag-of-words is at chance and word order, which an LM learns,
decides) or a token-level task, one class per word position, whose subclass's `classify` scores
each word from its own states: "replaced_word" (`plays.replaced_word_task`: which of `task_words`
words was swapped for a plausible other word) or "sentence_end" (`plays.sentence_end_task`: which
of `task_words` words ends the sentence once punctuation is removed). Paper scale reads its text and task from `--data` instead
(layout in `read_paper_data`).

A subclass implements the paper: `build_arm`, `pretrain_loss`, `classify` (and optionally
`finetune_loss`, e.g. GPT's auxiliary LM term), and may add special tokens (`SPECIALS`), which get
ids after the BPE vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from papercli.data import lm
from papercli.data.plays import HELD_OUT, WORD_ORDER_CLASSES, LabelledTask
from papercli.errors import PapercliError
from papercli.reproduce.arms import Arms
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import Recipe, TrainConfig
from papercli.reproduce.optim import warmup_cosine, weight_decay_groups

# What each of the plays' tasks asks (for the run's data line); `plays.<task>_task` builds it
PLAYS_QUESTIONS = {
    "play": "which play a speech comes from",
    "word_order": "are {words} words in order or shuffled",
    "replaced_word": "which of {words} words was replaced",
    "sentence_end": "which of {words} words ends the sentence, punctuation removed",
}
TOKEN_LEVEL_TASKS = ("replaced_word", "sentence_end")  # one class per word position


@dataclass
class PretrainFinetuneConfig(TrainConfig):
    dataset: str = "plays"  # or "text": --data FOLDER (see read_paper_data)
    arms: tuple[str, ...] = ("pretrained", "scratch")
    vocab_size: int = bounded(1024, ge=258)  # BPE trained on the training plays
    context: int = bounded(64, ge=8)  # tokens per pre-training window and per labelled text
    pretrain_fraction: float = fraction(0.8)  # share of `steps` spent in phase 1
    lr: float = bounded(1e-3, gt=0.0)  # phase 1 peak learning rate
    warmup_steps: int = bounded(50, ge=0)  # phase 1 warm-up
    weight_decay: float = bounded(0.01, ge=0.0)
    finetune_lr: float = bounded(3e-4, gt=0.0)
    finetune_batch_size: int = bounded(32, ge=1)  # labelled texts per phase-2 step
    finetune_warmup: float = fraction(0.002)  # share of phase 2 spent warming up
    task: Literal["play", "word_order", "replaced_word", "sentence_end"] = "play"  # (docstring)
    task_words: int = bounded(32, ge=2)  # words per text of the word-level tasks
    labelled_per_class: int | None = 100  # fine-tuning texts per class (None: all)
    dropout: float = bounded(0.1, ge=0.0, lt=1.0)
    eval_texts: int = bounded(1000, ge=1)  # test texts scored at each evaluation


def read_paper_data(folder: Path | None) -> tuple[list[str], list[str], LabelledTask]:
    """Paper-scale data under --data FOLDER: `text/*.txt` (the pre-training corpus, e.g.
    BooksCorpus), `task/train.tsv` and `task/test.tsv` (one `label<TAB>text` per line)."""
    if folder is None or not (folder / "text").is_dir() or not (folder / "task").is_dir():
        raise PapercliError(
            "paper scale reads --data FOLDER with text/*.txt and task/{train,test}.tsv"
        )
    files = sorted((folder / "text").rglob("*.txt"))
    if len(files) < 2:
        raise PapercliError(f"{folder / 'text'}: need at least two .txt files")
    cut = max(1, len(files) // 100)
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    rows = {}
    for part in ("train", "test"):
        path = folder / "task" / f"{part}.tsv"
        if not path.is_file():
            raise PapercliError(f"{path}: missing (one label<TAB>text per line)")
        lines = [ln.split("\t", 1) for ln in path.read_text(encoding="utf-8").splitlines() if ln]
        rows[part] = [(parts[1], parts[0]) for parts in lines if len(parts) == 2]
    classes = tuple(sorted({label for _, label in rows["train"]}))
    index = {c: i for i, c in enumerate(classes)}
    unknown = {label for _, label in rows["test"]} - set(index)
    if unknown:
        raise PapercliError(f"test labels not in the training set: {', '.join(sorted(unknown))}")
    task = LabelledTask(
        classes,
        tuple((t, index[label]) for t, label in rows["train"]),
        tuple((t, index[label]) for t, label in rows["test"]),
    )
    return texts[cut:], texts[:cut], task


def mean_pool(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The mean of each row's states (B, T, D) over its real tokens (the first `lengths`): the
    mini-scale readout that learns the word-order task from every LM tried (`recipes/gpt.py`)."""
    real = torch.arange(states.shape[1], device=states.device) < lengths[:, None]
    return (states * real[..., None]).sum(1) / lengths[:, None]


def accuracy(
    classify: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    rows: torch.Tensor,
    lengths: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device | str,
    batch: int = 64,
) -> float:
    """The share of labelled rows whose highest class logit, `classify(rows, lengths)` on
    `device` in batches, is their label (also LoRA's classification task, `recipes/lora.py`)."""
    correct = 0
    for i in range(0, len(rows), batch):
        logits = classify(rows[i : i + batch].to(device), lengths[i : i + batch].to(device))
        correct += int((logits.argmax(-1).cpu() == labels[i : i + batch]).sum())
    return correct / len(rows)


class PretrainFinetuneRecipe(Recipe):
    cfg: PretrainFinetuneConfig
    unit = "tokens"
    SPECIALS: tuple[str, ...] = ()  # extra tokens after the BPE vocabulary (<s>, [MASK] …)
    PRETRAINING_ARMS: tuple[str, ...] = ("pretrained",)  # arms with a phase 1

    # --- data -----------------------------------------------------------------------------------
    def data_source(self) -> str:
        if self.cfg.dataset == "plays":
            question = PLAYS_QUESTIONS[self.cfg.task].format(words=self.cfg.task_words)
            return (
                "plays: Shakespeare's plays (shipped); pre-training on 32, the labelled task on "
                f"the 6 held-out ones ({question}); byte-level BPE"
            )
        return f"text: {self.ctx.data_path or '--data FOLDER (required)'} (text/, task/)"

    def setup_data(self) -> None:
        from papercli.data import plays

        if self.cfg.dataset == "plays":
            train, held = plays.split()
            texts, held_texts = [p.text for p in train], [p.text for p in held]
            if self.cfg.task == "play":
                self.task = plays.play_task(self.cfg.labelled_per_class)
            else:  # the word-level tasks: plays.word_order_task, replaced_word_task, …
                build = getattr(plays, f"{self.cfg.task}_task")
                self.task = build(self.cfg.labelled_per_class, self.cfg.task_words)
            self.tokenizer = plays.bpe_tokenizer(self.cfg.vocab_size)
        else:
            texts, held_texts, self.task = read_paper_data(self.ctx.data_path)
            self.tokenizer = plays.train_bpe(texts, self.cfg.vocab_size)
        self.eot = self.tokenizer.token_to_id("<|endoftext|>")
        base = self.tokenizer.get_vocab_size()
        self.special = {name: base + i for i, name in enumerate(self.SPECIALS)}
        self.stream = lm.Windows(lm.token_stream(self.tokenizer, texts, self.eot), self.cfg.context)
        self.held = lm.Windows(
            lm.token_stream(self.tokenizer, held_texts, self.eot), self.cfg.context
        )
        self.train_rows = self.encode_task([t for t, _ in self.task.train])
        self.train_labels = torch.tensor([y for _, y in self.task.train])
        test = self.task.test[: self.cfg.eval_texts]
        self.test_rows = self.encode_task([t for t, _ in test])
        self.test_labels = torch.tensor([y for _, y in test])

    @property
    def num_classes(self) -> int:
        """Classes of the labelled task (before the data is loaded, as in a dry run: the plays
        task's; paper scale reads them from task/train.tsv)."""
        if hasattr(self, "task"):
            return len(self.task.classes)
        if self.cfg.task in TOKEN_LEVEL_TASKS:
            return self.cfg.task_words  # one class per position
        return len(WORD_ORDER_CLASSES) if self.cfg.task == "word_order" else len(HELD_OUT)

    @property
    def model_vocab(self) -> int:
        """BPE ids, then the recipe's special tokens."""
        return self.cfg.vocab_size + len(self.SPECIALS)

    def encode_task(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Labelled texts as model input rows: (tokens (N, context), lengths (N,))."""
        return lm.encode_rows(self.tokenizer, texts, self.cfg.context, pad=self.eot)

    @property
    def pretrain_steps(self) -> int:
        return int(self.cfg.steps * self.cfg.pretrain_fraction)

    def in_pretraining(self, step: int) -> bool:
        return step < self.pretrain_steps

    def train_batch(self, step: int, micro: int = 0):
        dev = self.ctx.device
        if self.in_pretraining(step):
            x, y = self.stream.at(self.ctx.batch_indices(len(self.stream), step, micro))
            return "pretrain", x.to(dev), y.to(dev)
        idx = self.ctx.batch_indices(
            len(self.train_labels),
            step - self.pretrain_steps,
            micro,
            batch=self.cfg.finetune_batch_size,
        )
        rows, lengths = self.train_rows
        return "finetune", rows[idx].to(dev), lengths[idx].to(dev), self.train_labels[idx].to(dev)

    def units_in(self, batch) -> int:
        return batch[1].numel()

    def steps_per_epoch(self) -> int:
        return max(1, len(self.stream) // self.cfg.batch_size) if hasattr(self, "stream") else 1

    # --- model and optimizers -------------------------------------------------------------------
    def build_arm(self, name: str) -> nn.Module:
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        unknown = set(self.cfg.arms) - {*self.PRETRAINING_ARMS, "scratch"}
        if unknown:
            known = ", ".join([*self.PRETRAINING_ARMS, "scratch"])
            raise ValueError(f"unknown arm(s) {', '.join(sorted(unknown))} (known: {known})")
        return Arms({name: self.build_arm(name) for name in self.cfg.arms})

    def configure_optimizers(self, model: nn.Module):
        """Per arm: a phase-1 optimizer (Adam with decoupled weight decay on matrices, warm-up then
        cosine) and a fresh phase-2 one (warm-up over `finetune_warmup`, then decay)."""
        out = {}
        finetune = self.cfg.steps - self.pretrain_steps
        for name, arm in model.items():

            def groups(arm=arm):  # fresh dicts: an optimizer writes its defaults into them
                return weight_decay_groups(arm, self.cfg.weight_decay, skip=("embed", "pos"))

            if name in self.PRETRAINING_ARMS:
                opt = torch.optim.AdamW(groups(), lr=self.cfg.lr)
                out[f"{name}/pretrain"] = (
                    opt,
                    warmup_cosine(opt, self.cfg.warmup_steps, self.pretrain_steps),
                )
            opt = torch.optim.AdamW(groups(), lr=self.cfg.finetune_lr)
            warm = max(1, round(self.cfg.finetune_warmup * finetune))
            out[f"{name}/finetune"] = (opt, warmup_cosine(opt, warm, finetune))
        return out

    # --- objectives -----------------------------------------------------------------------------
    def pretrain_loss(self, name: str, arm: nn.Module, x: torch.Tensor, y: torch.Tensor, step):
        """Phase-1 loss of one arm on a window batch (x, next tokens y)."""
        raise NotImplementedError

    def classify(self, arm: nn.Module, rows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Class logits (N, classes) of labelled rows."""
        raise NotImplementedError

    def finetune_loss(self, arm: nn.Module, rows, lengths, labels) -> torch.Tensor:
        return F.cross_entropy(self.classify(arm, rows, lengths).float(), labels)

    def train_step(self, step: int, trainer) -> dict[str, float]:
        if self.in_pretraining(step):
            names = [n for n in self.cfg.arms if n in self.PRETRAINING_ARMS]

            def pretrain(model, batch):
                _, x, y = batch
                return {n: self.pretrain_loss(n, model[n], x, y, step) for n in names}

            losses = trainer.accumulate(step, pretrain)
            trainer.step_optimizers([f"{n}/pretrain" for n in names])
            return {
                "loss": losses["loss"],
                **{f"pretrain_{k}": v for k, v in losses.items() if k != "loss"},
            }

        def finetune(model, batch):
            _, rows, lengths, labels = batch
            return {n: self.finetune_loss(model[n], rows, lengths, labels) for n in self.cfg.arms}

        losses = trainer.accumulate(step, finetune)
        trainer.step_optimizers([f"{n}/finetune" for n in self.cfg.arms])
        return {
            "loss": losses["loss"],
            **{f"finetune_{k}": v for k, v in losses.items() if k != "loss"},
        }

    # --- evaluation -----------------------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Test accuracy of every arm on the labelled task (before phase 2 it is near chance)."""
        rows, lengths = self.test_rows
        return {
            f"{name}_test_acc": accuracy(
                lambda r, n, arm=arm: self.classify(arm, r, n),
                rows,
                lengths,
                self.test_labels,
                self.ctx.device,
            )
            for name, arm in model.items()
        }

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        if "scratch_test_acc" in m:
            for name in self.PRETRAINING_ARMS:
                if f"{name}_test_acc" in m:
                    m[f"{name}_gain"] = m[f"{name}_test_acc"] - m["scratch_test_acc"]
        m["chance_acc"] = 1 / len(self.task.classes)
        return m
