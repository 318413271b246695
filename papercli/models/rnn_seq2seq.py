"""An attention RNN encoder-decoder (Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by
Jointly Learning to Align and Translate", RNNsearch): the recurrent baseline the Transformer paper
compares against (Vaswani et al. 2017, Sec. 1 and Table 2).

- Encoder (Sec. 3.2): a bidirectional GRU; annotation h_j = [→h_j; ←h_j].
- Alignment (Eq. 6, App. A.1.2): e_ij = v_aᵀ tanh(W_a s_{i-1} + U_a h_j), α_ij = softmax_j(e_ij),
  context c_i = Σ_j α_ij h_j; padded source positions get no weight.
- Decoder (Eq. 4): s_i = GRU(s_{i-1}, [E y_{i-1}; c_i]), initial state s_0 = tanh(W_s ←h_1)
  (App. A.2.2); output p(y_i | …) from a maxout layer over (s_i, E y_{i-1}, c_i) (the paper's
  deep output, App. A.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class RNNSearchConfig:
    vocab_size: int
    embed_dim: int = 620  # RNNsearch: 620-dimensional word embeddings, 1000 hidden units
    hidden: int = 1000
    maxout: int = 500  # units of the maxout output layer (pool of 2)
    dropout: float = 0.0


class RNNSearch(nn.Module):
    def __init__(self, cfg: RNNSearchConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)  # shared source/target BPE
        self.encoder = nn.GRU(cfg.embed_dim, h, batch_first=True, bidirectional=True)
        self.init_state = nn.Linear(h, h)  # s_0 = tanh(W_s ←h_1)
        self.align_s = nn.Linear(h, h, bias=False)  # W_a
        self.align_h = nn.Linear(2 * h, h)  # U_a
        self.align_v = nn.Linear(h, 1, bias=False)  # v_a
        self.cell = nn.GRUCell(cfg.embed_dim + 2 * h, h)
        self.deep_out = nn.Linear(h + cfg.embed_dim + 2 * h, 2 * cfg.maxout)
        self.head = nn.Linear(cfg.maxout, cfg.vocab_size)
        self.drop = nn.Dropout(cfg.dropout)

    def encode(self, src: torch.Tensor, pad_mask: torch.Tensor):
        """Annotations (B, S, 2h), their projection U_a h_j, and the decoder's first state."""
        lengths = pad_mask.sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.drop(self.embed(src)), lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.encoder(packed)
        ann, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        backward_first = ann[:, 0, self.cfg.hidden :]  # ←h_1 has read the whole sentence
        return ann, self.align_h(ann), torch.tanh(self.init_state(backward_first))

    def step(self, y_prev, state, ann, ann_proj, pad_mask):
        """One decoder step (Eq. 4-6): logits over the next token and the new state."""
        scores = self.align_v(torch.tanh(self.align_s(state)[:, None] + ann_proj)).squeeze(-1)
        alpha = scores.masked_fill(~pad_mask, float("-inf")).softmax(-1)
        context = torch.bmm(alpha[:, None], ann).squeeze(1)
        emb = self.drop(self.embed(y_prev))
        state = self.cell(torch.cat([emb, context], -1), state)
        t = self.deep_out(self.drop(torch.cat([state, emb, context], -1)))
        t = t.view(t.shape[0], -1, 2).amax(-1)  # maxout, pool size 2
        return self.head(self.drop(t)), state

    def forward(
        self, src: torch.Tensor, target: torch.Tensor, *, pad_mask: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for the shifted target `target` (B, T)."""
        ann, ann_proj, state = self.encode(src, pad_mask)
        logits = []
        for i in range(target.shape[1]):
            out, state = self.step(target[:, i], state, ann, ann_proj, pad_mask)
            logits.append(out)
        return torch.stack(logits, 1)

    @torch.no_grad()
    def greedy(self, src, pad_mask, bos: int, eos: int, max_len: int) -> torch.Tensor:
        """Greedy decoding: (B, ≤ max_len) token ids, `eos` repeated once a sentence ends."""
        ann, ann_proj, state = self.encode(src, pad_mask)
        y = torch.full((src.shape[0],), bos, dtype=torch.long, device=src.device)
        done = torch.zeros_like(y, dtype=torch.bool)
        out = []
        for _ in range(max_len):
            logits, state = self.step(y, state, ann, ann_proj, pad_mask)
            y = logits.argmax(-1).masked_fill(done, eos)
            out.append(y)
            done |= y == eos
            if done.all():
                break
        return torch.stack(out, 1)
