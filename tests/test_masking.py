"""Masked-LM corruption: BERT's rates on a large sample, what is never masked, static masks that
repeat and dynamic ones that do not."""

from __future__ import annotations

import pytest
import torch

from papercli.methods.masking import IGNORE, MaskingRates, mask_tokens, sequence_seeds

MASK, VOCAB = 1000, 900


def _batch(rows: int = 400, length: int = 128, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, VOCAB, (rows, length), generator=g)
    tokens[:, 0], tokens[:, -1] = 1001, 1002  # [CLS], [SEP]
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=g)
    real = torch.arange(length) < lengths[:, None]
    tokens[~real] = 0  # padding
    maskable = real & (tokens != 1001) & (tokens != 1002)
    return tokens, maskable


def test_rates_match_bert_on_a_large_sample():
    tokens, maskable = _batch()
    inputs, targets = mask_tokens(
        tokens, maskable, sequence_seeds(tokens, 0), mask_id=MASK, random_vocab=VOCAB
    )
    chosen = targets != IGNORE
    assert abs(chosen.sum() / maskable.sum() - 0.15) < 0.005  # Sec. 3.1: 15% of the tokens
    n = chosen.sum()
    masked = (inputs == MASK) & chosen
    unchanged = (inputs == tokens) & chosen
    replaced = chosen & ~masked & ~unchanged
    assert abs(masked.sum() / n - 0.8) < 0.01  # Appendix A.1: 80% [MASK]
    # 10% random (a random draw equals the original now and then: counted as unchanged)
    assert abs(replaced.sum() / n - 0.1 * (1 - 1 / VOCAB)) < 0.01
    assert abs(unchanged.sum() / n - 0.1) < 0.01
    assert (targets[chosen] == tokens[chosen]).all()
    assert (inputs[~chosen] == tokens[~chosen]).all()  # only chosen positions change
    assert inputs[replaced].max() < VOCAB  # random tokens come from the ordinary vocabulary


def test_padding_and_special_tokens_are_never_masked():
    tokens, maskable = _batch(rows=200, length=16)
    inputs, targets = mask_tokens(
        tokens, maskable, sequence_seeds(tokens, 3), mask_id=MASK, random_vocab=VOCAB
    )
    assert (targets[~maskable] == IGNORE).all() and (inputs[~maskable] == tokens[~maskable]).all()
    assert ((targets != IGNORE).sum(1) >= 1).all()  # every sequence predicts at least one token
    none = torch.zeros_like(maskable)
    _, targets = mask_tokens(
        tokens, none, sequence_seeds(tokens, 3), mask_id=MASK, random_vocab=VOCAB
    )
    assert (targets == IGNORE).all()


def test_static_masks_repeat_across_epochs_and_dynamic_ones_do_not():
    tokens, maskable = _batch(rows=64)

    def targets(seeds):
        return mask_tokens(tokens, maskable, seeds, mask_id=MASK, random_vocab=VOCAB)[1]

    epoch1, epoch2 = targets(sequence_seeds(tokens, 0)), targets(sequence_seeds(tokens, 0))
    assert torch.equal(epoch1, epoch2)  # BERT: the same sequence, the same mask
    # static masks follow the sequence, not its place in the batch
    perm = torch.randperm(64)
    moved = mask_tokens(
        tokens[perm], maskable[perm], sequence_seeds(tokens[perm], 0), mask_id=MASK,
        random_vocab=VOCAB,
    )[1]  # fmt: skip
    assert torch.equal(moved, epoch1[perm])
    step_a, step_b = targets(sequence_seeds(tokens, 0, 10)), targets(sequence_seeds(tokens, 0, 11))
    overlap = ((step_a != IGNORE) & (step_b != IGNORE)).sum() / (step_a != IGNORE).sum()
    assert overlap < 0.3  # RoBERTa: a fresh pattern every time (chance overlap is 15%)
    assert torch.equal(step_a, targets(sequence_seeds(tokens, 0, 10)))  # a resume repeats it
    assert not torch.equal(epoch1, targets(sequence_seeds(tokens, 1)))  # the run's seed matters


def test_bad_rates_and_seed_counts_are_refused():
    with pytest.raises(ValueError):
        MaskingRates(mask=0.9, random=0.2)
    tokens, maskable = _batch(rows=4, length=8)
    with pytest.raises(ValueError, match="3 seeds for 4"):
        mask_tokens(tokens, maskable, [1, 2, 3], mask_id=MASK, random_vocab=VOCAB)
