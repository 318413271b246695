"""Mamba's synthetic tasks (Sec. 4.1, Appendix E.1), generated deterministically from a seed.

Selective copying: a context of `length` tokens, mostly noise, holds `memorize` data tokens at
random positions; after it come `memorize` marker tokens, at which the model must output the data
tokens in their order. Random spacing is what defeats time-invariant models: a convolution with a
fixed kernel cannot know where to look (Fig. 2).

Induction heads: random tokens with one "trigger" token somewhere followed by a value token; the
sequence ends with the trigger again, and the model must answer the value that followed it
before (associative recall). Trained at one length, it is tested at longer ones (Table 2).

Token ids: 0 = noise (copying) / unused, 1 = marker or trigger, data tokens 2 … vocab + 1.
Targets are −100 (ignored by cross-entropy) except where an answer is due.
"""

from __future__ import annotations

import torch

NOISE, MARKER = 0, 1
IGNORE = -100


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def vocab_size(data_tokens: int) -> int:
    """Embedding size the tasks need: noise, marker and the data tokens."""
    return data_tokens + 2


def selective_copying(
    n: int, length: int, memorize: int, data_tokens: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), both (n, length + memorize)."""
    if memorize > length:
        raise ValueError(f"cannot place {memorize} tokens in a context of {length}")
    g = _generator(seed)
    data = torch.randint(2, data_tokens + 2, (n, memorize), generator=g)
    # random distinct positions, kept in order: the order of the data is the order to copy
    pos = torch.rand(n, length, generator=g).argsort(1)[:, :memorize].sort(1).values
    context = torch.full((n, length), NOISE).scatter(1, pos, data)
    inputs = torch.cat([context, torch.full((n, memorize), MARKER)], 1)
    targets = torch.cat([torch.full((n, length), IGNORE), data], 1)
    return inputs, targets


def induction_heads(
    n: int, length: int, data_tokens: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), both (n, length): the answer is due at the last position only."""
    g = _generator(seed)
    inputs = torch.randint(2, data_tokens + 2, (n, length), generator=g)
    where = torch.randint(0, length - 2, (n,), generator=g)  # the trigger, then its value
    rows = torch.arange(n)
    inputs[rows, where] = MARKER
    inputs[:, -1] = MARKER
    targets = torch.full((n, length), IGNORE)
    targets[:, -1] = inputs[rows, where + 1]
    return inputs, targets
