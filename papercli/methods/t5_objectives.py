"""T5's other unsupervised objectives (Raffel et al. 2019, Sec. 3.3.1, Table 3 examples, Table 4
GLUE averages), each an (input, target) pair made from an unlabelled window of tokens, for the
encoder-decoder to learn text to text. Span corruption, the baseline's (83.28), is
`papercli.methods.span_corruption`.

    prefix LM     a window split at a random point: the first part is the input, the continuation
                  the target (Table 4: 80.69)
    BERT-style    15 % of the tokens corrupted, 90 % of those to a mask sentinel and 10 % to a random
                  token; the target is the whole original text (82.96)
    deshuffling   the window's tokens shuffled; the target is the original order (73.17). It
                  trains unscrambling word order directly, the very skill of a real-vs-shuffled task

Every target ends in end-of-sequence, as span corruption's. Rows of a batch share their lengths
(no padding): prefix LM draws one split point per batch, where T5's `random_prefix_noise_mask`
draws one per sequence from the same uniform distribution.
"""

from __future__ import annotations

import torch

from papercli.methods.masking import MaskingRates, mask_tokens

# Sec. 3.3.1: "we corrupt 15% of tokens ... 90% of the corrupted tokens are replaced with a special
# mask token and 10% are replaced with a random token" (T5's iid_noise_mask and
# noise_token_to_random_token_or_sentinel; BERT's 80/10/10 leaves none unchanged here)
BERT_STYLE = MaskingRates(select=0.15, mask=0.9, random=0.1)


def _with_eos(targets: torch.Tensor, eos: int) -> torch.Tensor:
    return torch.cat([targets, torch.full_like(targets[:, :1], eos)], dim=1)


def prefix_lm(
    tokens: torch.Tensor, eos: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (B, n), targets (B, L − n + 1)): the first n tokens of each row, then the rest and
    end-of-sequence; n uniform in [1, L − 1] (`random_prefix_noise_mask`), one per batch."""
    n = int(torch.randint(1, tokens.shape[1], (), generator=generator))
    return tokens[:, :n], _with_eos(tokens[:, n:], eos)


def bert_style(
    tokens: torch.Tensor,
    mask_id: int,
    eos: int,
    *,
    random_vocab: int,
    generator: torch.Generator,
    rates: MaskingRates = BERT_STYLE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (B, L): the corrupted row, targets (B, L + 1): the original row and
    end-of-sequence). Random replacements come from ids [0, random_vocab)."""
    seeds = torch.randint(2**62, (len(tokens),), generator=generator).tolist()
    maskable = torch.ones(tokens.shape, dtype=torch.bool)
    inputs, _ = mask_tokens(
        tokens, maskable, seeds, mask_id=mask_id, random_vocab=random_vocab, rates=rates
    )
    return inputs.to(tokens.device), _with_eos(tokens, eos)


def deshuffle(
    tokens: torch.Tensor, eos: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (B, L): each row's tokens in a random order, targets (B, L + 1): the original row
    and end-of-sequence)."""
    order = torch.rand(tokens.shape, generator=generator).argsort(dim=1).to(tokens.device)
    return tokens.gather(1, order), _with_eos(tokens, eos)
