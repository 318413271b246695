"""A synthetic, knowledge-heavy language: text drawn from a fixed random sparse Markov chain.

Every token of the vocabulary has `branching` distinct successors, picked at random, with
Dirichlet(1) probabilities; a sequence starts at a uniformly random token and walks the chain. The
transition table (vocabulary × branching facts) is what a model must store to predict well, so
its size sets how much there is to learn, and fresh samples are unlimited: held-out loss measures
capacity, not overfitting. The source's true conditional entropy is known exactly
(`entropy_per_token`), so a model's loss minus it is its distance from the best possible model.

The source is fixed by its seed; the samples by theirs, so training and held-out sets of the
same source are drawn from different seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MarkovSource:
    successors: torch.Tensor  # (vocab, branching) token ids
    probs: torch.Tensor  # (vocab, branching), rows sum to 1

    @classmethod
    def random(cls, vocab: int, branching: int, seed: int) -> MarkovSource:
        if not 1 <= branching <= vocab:
            raise ValueError(f"branching {branching} must be in [1, vocab {vocab}]")
        g = torch.Generator().manual_seed(seed)
        successors = torch.rand(vocab, vocab, generator=g).argsort(1)[:, :branching]
        weights = -torch.rand(vocab, branching, generator=g, dtype=torch.float64).log()
        return cls(successors, weights / weights.sum(1, keepdim=True))

    @property
    def vocab(self) -> int:
        return len(self.successors)

    def transitions(self) -> torch.Tensor:
        """The dense (vocab, vocab) transition matrix, P[a, b] = P(next = b | current = a)."""
        table = torch.zeros(self.vocab, self.vocab, dtype=torch.float64)
        return table.scatter_add_(1, self.successors, self.probs)

    def entropy_per_token(self, context: int) -> float:
        """The best possible cross-entropy (nats per token) of a model predicting tokens 1 …
        `context` of a sample from the tokens before them: the mean over positions t of
        H(x_{t+1} | x_t) = Σ_a P(x_t = a) H(row a), with x_0 uniform. The chain is Markov, so the
        current token holds everything the history says about the next one."""
        row_entropy = torch.special.entr(self.probs).sum(1)  # 0 log 0 = 0
        marginal = torch.full((self.vocab,), 1.0 / self.vocab, dtype=torch.float64)
        table, total = self.transitions(), 0.0
        for _ in range(context):
            total += float(marginal @ row_entropy)
            marginal = marginal @ table
        return total / context

    def sample(self, n: int, length: int, seed: int) -> torch.Tensor:
        """`n` sequences of `length` tokens, (n, length) int64."""
        g = torch.Generator().manual_seed(seed)
        cumulative = self.probs.cumsum(1)
        out = torch.empty(n, length, dtype=torch.long)
        out[:, 0] = torch.randint(0, self.vocab, (n,), generator=g)
        last = self.successors.shape[1] - 1
        for t in range(1, length):
            u = torch.rand(n, 1, generator=g, dtype=torch.float64)
            pick = (u > cumulative[out[:, t - 1]]).sum(1).clamp(max=last)
            out[:, t] = self.successors[out[:, t - 1], pick]
        return out

    def nll(self, rows: torch.Tensor) -> float:
        """The source's own mean negative log-likelihood of each token after the first of `rows`
        (the exact loss floor on that sample)."""
        table = self.transitions()
        return float(-table[rows[:, :-1], rows[:, 1:]].log().mean())


def _seeds(g: torch.Generator, count: int) -> list[int]:
    """`count` seeds drawn from `g`: one stream per domain, none of them seed + 1, seed + 2 …"""
    return torch.randint(0, 2**62, (count,), generator=g).tolist()


@dataclass(frozen=True)
class DomainMixture:
    """Several such chains ("domains", as web text mixes sources) over the same tokens: a sequence
    opens with its domain's tag (token id d < domains, never emitted by a chain), then walks that
    domain's chain over the ids after the tags. Storing every (domain, token) → successors fact
    takes a lookup on a token *and* its context, which a token embedding alone cannot hold."""

    chains: tuple[MarkovSource, ...]

    @classmethod
    def random(cls, vocab: int, domains: int, branching: int, seed: int) -> DomainMixture:
        if domains >= vocab:
            raise ValueError(f"{domains} domain tags leave no tokens of {vocab} for text")
        seeds = _seeds(torch.Generator().manual_seed(seed), domains)
        return cls(tuple(MarkovSource.random(vocab - domains, branching, s) for s in seeds))

    @property
    def tags(self) -> int:
        return len(self.chains)

    def entropy_per_token(self, context: int) -> float:
        """As `MarkovSource.entropy_per_token`, the tag included: its first target (after the
        tag) is uniform over a chain's tokens, the rest follow the domain's chain."""
        first = math.log(self.chains[0].vocab)
        rest = [c.entropy_per_token(context - 1) for c in self.chains] if context > 1 else [0.0]
        return (first + (context - 1) * sum(rest) / len(rest)) / context

    def sample(self, n: int, length: int, seed: int) -> torch.Tensor:
        """`n` sequences of `length` tokens (the tag first), domains uniform."""
        g = torch.Generator().manual_seed(seed)
        domain = torch.randint(0, self.tags, (n,), generator=g)
        out = torch.empty(n, length, dtype=torch.long)
        out[:, 0] = domain
        for d, (chain, s) in enumerate(zip(self.chains, _seeds(g, self.tags), strict=True)):
            rows = domain == d
            out[rows, 1:] = chain.sample(int(rows.sum()), length - 1, s) + self.tags
        return out

    def nll(self, rows: torch.Tensor) -> float:
        """The exact mean negative log-likelihood of every token after the tag of `rows`."""
        total = 0.0
        for d, chain in enumerate(self.chains):
            text = rows[rows[:, 0] == d, 1:] - self.tags
            if len(text):
                total += chain.nll(text) * text[:, 1:].numel()
        first = math.log(self.chains[0].vocab) * len(rows)
        return (first + total) / rows[:, 1:].numel()


class Sequences:
    """Independent sequences as next-token windows: the interface of `lm.Windows` (`at`,
    `spread`, `tokens`) over rows of `context + 1` tokens, so no target crosses a sequence."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows
        self.context = rows.shape[1] - 1

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def tokens(self) -> torch.Tensor:
        return self.rows.flatten()

    def at(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.rows[index]
        return chunk[:, :-1], chunk[:, 1:]

    def spread(self, count: int) -> torch.Tensor:
        return torch.linspace(0, len(self) - 1, min(count, len(self))).long()
