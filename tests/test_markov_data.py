"""The synthetic Markov language (papercli/data/markov.py): its exact entropy on a chain small
enough to work out by hand, samples that follow the chain, and windows that never cross a
sequence."""

from __future__ import annotations

import math

import pytest
import torch

from papercli.data.markov import DomainMixture, MarkovSource, Sequences


def two_state_chain() -> MarkovSource:
    # state 0 goes to 0 or 1 with 1/2 each (ln 2 nats), state 1 always to 0 (0 nats)
    return MarkovSource(
        successors=torch.tensor([[0, 1], [0, 1]]),
        probs=torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64),
    )


def test_entropy_of_a_hand_sized_chain():
    chain = two_state_chain()
    # x_0 uniform: P(x_0 = 0) = 1/2; then P(x_1 = 0) = 1/2 · 1/2 + 1/2 · 1 = 3/4
    assert chain.entropy_per_token(1) == pytest.approx(0.5 * math.log(2))
    assert chain.entropy_per_token(2) == pytest.approx((0.5 + 0.75) / 2 * math.log(2))
    # P(x_2 = 0) = 3/4 · 1/2 + 1/4 · 1 = 5/8
    assert chain.entropy_per_token(3) == pytest.approx((0.5 + 0.75 + 0.625) / 3 * math.log(2))


def test_samples_follow_the_chain_and_their_nll_matches_its_entropy():
    chain = two_state_chain()
    rows = chain.sample(4000, 4, seed=0)
    assert not ((rows[:, :-1] == 1) & (rows[:, 1:] == 1)).any()  # 1 → 1 has probability 0
    assert chain.nll(rows) == pytest.approx(chain.entropy_per_token(3), abs=0.02)


def test_a_random_source_is_fixed_by_its_seed_and_sparse():
    a, b = MarkovSource.random(50, 3, seed=7), MarkovSource.random(50, 3, seed=7)
    assert torch.equal(a.successors, b.successors) and torch.equal(a.probs, b.probs)
    table = a.transitions()
    assert torch.allclose(table.sum(1), torch.ones(50, dtype=torch.float64))
    assert ((table > 0).sum(1) == 3).all()  # distinct successors
    rows = a.sample(2000, 6, seed=1)
    assert a.nll(rows) == pytest.approx(a.entropy_per_token(5), abs=0.05)
    assert not torch.equal(rows, a.sample(2000, 6, seed=2))
    with pytest.raises(ValueError, match="branching"):
        MarkovSource.random(5, 6, seed=0)


def test_sequences_give_next_token_targets_within_each_row():
    rows = torch.arange(12).reshape(3, 4)
    seqs = Sequences(rows)
    assert (len(seqs), seqs.context) == (3, 3)
    x, y = seqs.at(torch.tensor([2, 0]))
    assert x.tolist() == [[8, 9, 10], [0, 1, 2]]
    assert y.tolist() == [[9, 10, 11], [1, 2, 3]]
    assert seqs.spread(10).tolist() == [0, 1, 2]


def test_a_domain_mixture_tags_each_sequence_and_knows_its_entropy():
    mix = DomainMixture.random(vocab=40, domains=3, branching=2, seed=0)
    rows = mix.sample(3000, 6, seed=1)
    assert set(rows[:, 0].tolist()) == {0, 1, 2}  # the tag opens every sequence …
    assert (rows[:, 1:] >= 3).all()  # … and no chain emits one
    for d, chain in enumerate(mix.chains):  # each domain's text follows its own chain
        text = rows[rows[:, 0] == d, 1:] - 3
        assert (chain.transitions()[text[:, :-1], text[:, 1:]] > 0).all()
    # the first target is uniform over the 37 text tokens, the next four follow a chain
    chains = sum(c.entropy_per_token(4) for c in mix.chains) / 3
    assert mix.entropy_per_token(5) == pytest.approx((math.log(37) + 4 * chains) / 5)
    assert mix.nll(rows) == pytest.approx(mix.entropy_per_token(5), abs=0.03)
