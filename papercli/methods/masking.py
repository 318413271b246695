"""Masked-language-model corruption (Devlin et al. 2018, Sec. 3.1 "Task #1: Masked LM" and
Appendix A.1), with BERT's static masks and RoBERTa's dynamic ones (Liu et al. 2019, Sec. 4.1).

15% of the maskable token positions of each sequence are chosen for prediction; of those, 80% are
replaced by [MASK], 10% by a random token and 10% are left unchanged ("the [MASK] token does not
appear during fine-tuning", so the model must keep a representation of every input token). The
loss is computed at the chosen positions only (targets elsewhere are `IGNORE`). Like BERT's data
generator (`max(1, round(n · 0.15))`), every sequence with a maskable token predicts at least one.

Which positions are chosen is a pure function of a per-sequence seed, so a resumed run repeats its
masks exactly and micro-batches or processes never share them:
  static   the seed depends on the run's seed and the sequence's content only: the same sequence is
           masked the same way every time it is seen (BERT masked its data once, in preprocessing)
  dynamic  the seed also depends on the training step: "we generate the masking pattern every time
           we feed a sequence to the model" (RoBERTa, Sec. 4.1)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100  # target of positions that are not predicted (F.cross_entropy's ignore_index)


@dataclass(frozen=True)
class MaskingRates:
    select: float = 0.15  # share of maskable positions that are predicted
    mask: float = 0.8  # of those: replaced by [MASK]
    random: float = 0.1  # of those: replaced by a random token (the rest stay unchanged)

    def __post_init__(self) -> None:
        if not (0 < self.select <= 1 and self.mask >= 0 and self.random >= 0):
            raise ValueError(f"invalid masking rates {self}")
        if self.mask + self.random > 1:
            raise ValueError("mask + random rates exceed 1")


def sequence_seeds(tokens: torch.Tensor, seed: int, step: int | None = None) -> list[int]:
    """One seed per row of `tokens` (B, T): from (seed, the row's tokens) for static masks, and
    also the step for dynamic ones. Python's hash of a tuple of ints is the same in every process
    (PYTHONHASHSEED only salts str and bytes)."""
    salt = -1 if step is None else step
    return [hash((seed, salt, tuple(row))) & (2**63 - 1) for row in tokens.tolist()]


def mask_tokens(
    tokens: torch.Tensor,
    maskable: torch.Tensor,
    seeds: list[int],
    *,
    mask_id: int,
    random_vocab: int,
    rates: MaskingRates = MaskingRates(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt `tokens` (B, T): returns (inputs, targets), targets = the original token at the
    predicted positions and IGNORE elsewhere. `maskable` (B, T) is False for padding and special
    tokens ([CLS], [SEP], end-of-text), which are never chosen; random replacements are drawn from
    ids [0, random_vocab), the ordinary vocabulary."""
    b, t = tokens.shape
    if len(seeds) != b:
        raise ValueError(f"{len(seeds)} seeds for {b} sequences")
    choose, kind, rand = torch.empty(b, t), torch.empty(b, t), torch.empty(b, t, dtype=torch.long)
    g = torch.Generator()
    for i, s in enumerate(seeds):
        g.manual_seed(s)
        torch.rand(t, generator=g, out=choose[i])
        torch.rand(t, generator=g, out=kind[i])
        torch.randint(random_vocab, (t,), generator=g, out=rand[i])
    maskable = maskable.cpu()
    chosen = (choose < rates.select) & maskable
    # at least one prediction per sequence that has a maskable token (BERT: max(1, round(n·p)))
    empty = ~chosen.any(1) & maskable.any(1)
    first = choose.masked_fill(~maskable, 2.0).argmin(1)
    chosen[empty, first[empty]] = True
    to_mask = chosen & (kind < rates.mask)
    to_random = chosen & (kind >= rates.mask) & (kind < rates.mask + rates.random)
    cpu = tokens.cpu()
    inputs = torch.where(to_mask, mask_id, torch.where(to_random, rand, cpu))
    targets = torch.where(chosen, cpu, IGNORE)
    return inputs.to(tokens.device), targets.to(tokens.device)
