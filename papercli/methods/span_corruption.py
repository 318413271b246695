"""T5's span corruption (Raffel et al. 2019, Sec. 3.1.4 and 3.3.4): drop 15% of a sequence's tokens
in spans of mean length 3; each dropped span becomes one sentinel in the input, and the target
lists the sentinels, each followed by the tokens it replaced, then end-of-sequence.

    input   Thank you <X> me to your party <Y> week .
    target  <X> for inviting <Y> last <Z>          (Fig. 2; <Z> closes the target, here `eos`)

As in T5's `random_spans_noise_mask`, the number of dropped tokens and of spans depends only on the
length, so every corrupted row of a batch has the same input and target length (no padding); the
span lengths are a random split of the noise (and of the kept tokens) into that many parts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def span_counts(length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, spans) of a `length`-token sequence: at least one of each, one kept token."""
    noise = min(max(round(length * density), 1), length - 1)
    return noise, max(round(noise / mean_span), 1)


def _split(total: int, parts: int, g: torch.Generator) -> torch.Tensor:
    """`total` items cut into `parts` non-empty segments at random: the segment lengths."""
    cuts = torch.randperm(total - 1, generator=g)[: parts - 1].sort().values + 1
    edges = torch.cat([torch.tensor([0]), cuts, torch.tensor([total])])
    return edges.diff()


def noise_mask(length: int, density: float, mean_span: float, g: torch.Generator) -> torch.Tensor:
    """Bool (length,): True at dropped tokens. Kept and dropped stretches alternate; unlike T5's
    mask, which always ends in a dropped span, the first and last kept stretch may be empty."""
    noise, spans = span_counts(length, density, mean_span)
    spans = min(spans, length - noise + 1)  # dropped spans need kept tokens between them
    dropped = _split(noise, spans, g)
    kept = _split(length - noise + 2, spans + 1, g)  # +2: the outer stretches may be empty
    kept[0] -= 1
    kept[-1] -= 1
    sizes = torch.cat([torch.stack([kept[:-1], dropped], dim=1).flatten(), kept[-1:]])
    flags = torch.arange(len(sizes)) % 2 == 1
    return flags.repeat_interleave(sizes)


def corrupt(
    tokens: torch.Tensor,
    sentinels: Sequence[int],
    eos: int,
    *,
    density: float = 0.15,
    mean_span: float = 3.0,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Span-corrupt each row of `tokens` (B, L): (inputs (B, L − noise + spans), targets
    (B, noise + spans + 1)). Span i of a row is replaced by `sentinels[i]`."""
    inputs, targets = [], []
    for row in tokens.cpu():
        mask = noise_mask(len(row), density, mean_span, generator)
        starts = mask & ~torch.cat([torch.tensor([False]), mask[:-1]])  # first token of a span
        if int(starts.sum()) > len(sentinels):
            raise ValueError(f"{int(starts.sum())} spans but only {len(sentinels)} sentinels")
        ids = torch.full_like(row, -1)  # the sentinel at each span's first token
        ids[starts] = torch.tensor(sentinels[: int(starts.sum())], dtype=row.dtype)
        inputs.append(torch.where(starts, ids, row)[~mask | starts])
        # target: each dropped token, preceded by its span's sentinel, then eos
        pairs = torch.stack([ids[mask], row[mask]], dim=1).flatten()
        targets.append(torch.cat([pairs[pairs >= 0], torch.tensor([eos], dtype=row.dtype)]))
    return torch.stack(inputs).to(tokens.device), torch.stack(targets).to(tokens.device)
