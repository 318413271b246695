"""The bidirectional language model of ELMo (Peters et al. 2018, Sec. 3.1 and 3.4).

A forward LM reads the tokens left to right, a backward LM right to left; they share the
context-independent token representation x_k (Θx) and the softmax (Θs) but not their LSTMs
(Eq. 1 of Sec. 3.1). Each direction stacks L LSTMs with projections (LSTMP: `hidden` cells
projected to `dim`), with a residual connection from the first layer to the second (Sec. 3.4).
The representations ELMo mixes are h_{k,0} = [x_k; x_k] and h_{k,j} = [→h_{k,j}; ←h_{k,j}].

Token representations: a learned embedding per token (the mini), or the paper's character CNN
(Sec. 3.4, after Jozefowicz et al. 2016): 16-d character embeddings, 2048 convolution filters of
widths 1–7, max-pooled over the characters, two highway layers and a linear projection to `dim`.
Tokens are spelled as ELMo spells words: the UTF-8 bytes between begin/end-of-word markers,
padded to 50 characters (`char_table`).

Not modelled: the released LSTMs clip cells and projections to ±3. torch's LSTM keeps two bias
vectors per layer (b_ih, b_hh) where the release keeps one (their sum); b_hh stays zero and frozen,
so the trainable parameters are the release's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

# ELMo's character ids (allennlp's ELMoCharacterMapper): bytes 0-255, then markers; all + 1 so
# that 0 pads
BOW, EOW, PAD = 258 + 1, 259 + 1, 260 + 1


@dataclass(frozen=True)
class BiLMConfig:
    vocab_size: int = 793471  # the 1B Word Benchmark's vocabulary (softmax rows)
    dim: int = 512  # token representation and LSTM projection size
    hidden: int = 4096  # LSTM cells per layer and direction
    layers: int = 2
    token_encoder: Literal["embedding", "char-cnn"] = "char-cnn"
    filters: tuple[tuple[int, int], ...] = (
        (1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024),
    )  # fmt: skip  # (width, count): 2048 filters
    highway: int = 2
    char_dim: int = 16
    chars: int = 262  # character vocabulary (261 ids + padding)
    max_chars: int = 50  # characters per token, markers included


def char_table(tokens: Sequence[str], max_chars: int = 50) -> torch.Tensor:
    """Character ids (len(tokens), max_chars) of each token: <bow> bytes <eow>, then padding."""
    table = torch.zeros(len(tokens), max_chars, dtype=torch.long)
    for i, token in enumerate(tokens):
        ids = [BOW, *(b + 1 for b in token.encode("utf-8")[: max_chars - 2]), EOW]
        table[i, : len(ids)] = torch.tensor(ids)
    return table


class Highway(nn.Module):
    """y = g ⊙ x + (1 − g) ⊙ relu(W_h x), g = σ(W_g x) (Srivastava et al. 2015), one linear map
    for both."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        g = torch.sigmoid(gate)
        return g * x + (1 - g) * F.relu(h)


class CharCNN(nn.Module):
    """Token representation from the token's characters (Sec. 3.4)."""

    def __init__(self, cfg: BiLMConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.chars, cfg.char_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.char_dim, n, w) for w, n in cfg.filters)
        width = sum(n for _, n in cfg.filters)
        self.highways = nn.Sequential(*(Highway(width) for _ in range(cfg.highway)))
        self.proj = nn.Linear(width, cfg.dim)
        # the spelling of every vocabulary entry, set by `set_spellings` (not a parameter)
        self.register_buffer(
            "spellings", torch.zeros(cfg.vocab_size, cfg.max_chars, dtype=torch.long),
            persistent=False,
        )  # fmt: skip

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        chars = self.embed(self.spellings[tokens]).flatten(0, -3).transpose(1, 2)  # (N, C, chars)
        h = torch.cat([F.relu(conv(chars).amax(-1)) for conv in self.convs], dim=-1)
        return self.proj(self.highways(h)).view(*tokens.shape, -1)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each row's first `lengths` steps in time (B, T, …), leaving padding in place: the
    backward LM reads real tokens right to left and never starts from padding."""
    if lengths is None:
        return x.flip(1)
    t = torch.arange(x.shape[1], device=x.device)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x))


class BiLM(nn.Module):
    def __init__(self, cfg: BiLMConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.token_encoder == "char-cnn":
            self.tokens = CharCNN(cfg)
        else:
            self.tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.forward_lstms, self.backward_lstms = (
            nn.ModuleList(
                nn.LSTM(cfg.dim, cfg.hidden, proj_size=cfg.dim, batch_first=True)
                for _ in range(cfg.layers)
            )
            for _ in range(2)
        )
        for lstm in (*self.forward_lstms, *self.backward_lstms):
            nn.init.zeros_(lstm.bias_hh_l0)
            lstm.bias_hh_l0.requires_grad_(False)  # b_ih alone is the release's one bias
        self.softmax = nn.Linear(cfg.dim, cfg.vocab_size)  # Θs, shared by both directions

    def set_spellings(self, tokens: Sequence[str]) -> None:
        """The character-CNN's spelling of each token id (a no-op for the embedding encoder)."""
        if isinstance(self.tokens, CharCNN):
            table = char_table(tokens, self.cfg.max_chars)
            self.tokens.spellings[: len(table)] = table.to(self.tokens.spellings.device)

    def token_representation(self, tokens: torch.Tensor) -> torch.Tensor:
        """x_k: context-independent (B, T, dim)."""
        return self.tokens(tokens)

    def directions(
        self, tokens: torch.Tensor, lengths: torch.Tensor | None = None, dropout: float = 0.0
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """x_k, and each layer's forward and backward states (B, T, dim), in reading order."""
        x = self.token_representation(tokens)
        outs = []
        for lstms in (self.forward_lstms, self.backward_lstms):
            h = x if lstms is self.forward_lstms else reverse_padded(x, lengths)
            states = []
            for j, lstm in enumerate(lstms):
                out = lstm(F.dropout(h, dropout, self.training and dropout > 0))[0]
                h = out + h if j > 0 else out  # residual from the first layer on (Sec. 3.4)
                states.append(h)
            if lstms is self.backward_lstms:
                states = [reverse_padded(s, lengths) for s in states]
            outs.append(states)
        return x, outs[0], outs[1]

    def layers(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The L + 1 representations ELMo mixes (Sec. 3.2), stacked: (L + 1, B, T, 2·dim)."""
        x, fwd, bwd = self.directions(tokens, lengths)
        return torch.stack(
            [torch.cat([x, x], -1), *(torch.cat(p, -1) for p in zip(fwd, bwd, strict=True))]
        )

    def forward(self, tokens: torch.Tensor, dropout: float = 0.0):
        """LM logits of both directions over a window (B, T): the forward LM's predict
        tokens[:, 1:], the backward LM's tokens[:, :-1] (Eq. 1 of Sec. 3.1)."""
        _, fwd, bwd = self.directions(tokens, dropout=dropout)
        d = dropout if self.training else 0.0
        top = lambda h: self.softmax(F.dropout(h, d, d > 0))  # noqa: E731
        return top(fwd[-1][:, :-1]), top(bwd[-1][:, 1:])


# Peters et al. 2018, Sec. 3.4 and the released "original" model: 93.6M parameters without the
# softmax (the 1B Word Benchmark's 793,471-word softmax adds 406.3M, trained with sampled softmax).
SIZES = {"elmo": BiLMConfig()}


def bilm(name: str | None = None, **overrides) -> BiLM:
    return BiLM(replace(SIZES[name] if name else BiLMConfig(), **overrides))


def _register() -> None:
    from papercli.models import register_model

    register_model("elmo-bilm", bilm, paper="elmo", name="elmo")


_register()
