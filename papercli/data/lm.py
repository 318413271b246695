"""Token data for language models: documents joined into one token stream (separated by an
end-of-text token, GPT-2 style) and cut into fixed-length windows; and labelled texts encoded as
padded rows with their lengths, for fine-tuning a classifier."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def token_stream(tokenizer, texts: Sequence[str], eot: int) -> torch.Tensor:
    """Every text's BPE ids followed by `eot`, concatenated (one long LongTensor)."""
    ids: list[int] = []
    for enc in tokenizer.encode_batch(list(texts)):
        ids += [*enc.ids, eot]
    return torch.tensor(ids, dtype=torch.long)


class Windows:
    """Non-overlapping windows of `context` tokens of a stream, with next-token targets."""

    def __init__(self, tokens: torch.Tensor, context: int):
        self.tokens, self.context = tokens, context

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.context

    def at(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of the windows numbered `index`, each (len(index), context)."""
        span = torch.arange(self.context + 1)
        chunk = self.tokens[index[:, None] * self.context + span]
        return chunk[:, :-1], chunk[:, 1:]

    def spread(self, count: int) -> torch.Tensor:
        """`count` window numbers evenly spread over the stream: a fixed evaluation set."""
        count = min(count, len(self))
        return torch.linspace(0, len(self) - 1, count).long()


def streams(tokens: torch.Tensor, length: int, count: int) -> torch.Tensor:
    """`count` stretches of `length` tokens evenly spread over a stream, (count, length): long
    held-out streams for reading token by token (StreamingLLM, Mistral's rolling cache)."""
    if len(tokens) < length:
        raise ValueError(f"the stream has {len(tokens)} tokens, fewer than {length}")
    starts = torch.linspace(0, len(tokens) - length, count).long().tolist()
    return torch.stack([tokens[s : s + length] for s in starts])


def encode_rows(
    tokenizer,
    texts: Sequence[str],
    length: int,
    *,
    prefix: Sequence[int] = (),
    suffix: Sequence[int] = (),
    pad: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each text as `prefix + ids + suffix`, its ids cut so the row fits `length`, padded with
    `pad`: (rows (N, length), lengths (N,)). The suffix survives the cut (GPT's extract token,
    BERT's [SEP] must be the last real token)."""
    room = length - len(prefix) - len(suffix)
    if room < 1:
        raise ValueError(f"rows of {length} tokens leave no room for text")
    rows = torch.full((len(texts), length), pad, dtype=torch.long)
    lengths = torch.empty(len(texts), dtype=torch.long)
    for i, enc in enumerate(tokenizer.encode_batch(list(texts))):
        ids = [*prefix, *enc.ids[:room], *suffix]
        rows[i, : len(ids)] = torch.tensor(ids)
        lengths[i] = len(ids)
    return rows, lengths
