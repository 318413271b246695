"""Low-rank adaptation (LoRA; Hu et al. 2021, arXiv 2106.09685, Sec. 4.1).

A frozen weight W0 gets a trainable update of rank r:  h = W0 x + (α / r) · B A x, with A (r × in)
drawn at random (Kaiming-uniform, as microsoft/LoRA's loralib does), B (out × r) zero, so training
starts exactly at the pre-trained model; dropout may be applied to the adapter's input. Only A and
B train, so optimizer state and what must be saved per task shrink to the adapters; `merge()`
folds (α / r) B A into W0, after which inference costs what the base costs (Sec. 4.1, "No
Additional Inference Latency").

Our attention packs keys and values into one Linear (`kv`: k rows, then v rows), so an adapter may
cover a slice of a layer's output rows: the paper's Wq, Wv (Sec. 7.1, Table 5) are `q` whole and
the v half of `kv`. Each named slice has its own A and B, as separate Wk and Wv would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

# adapter name -> (module inside a transformer block, which share of its output rows)
# the share: (index, parts) = rows index·n/parts … (index+1)·n/parts
TARGETS: dict[str, tuple[str, tuple[int, int]]] = {
    "q": ("attn.q", (0, 1)),
    "k": ("attn.kv", (0, 2)),
    "v": ("attn.kv", (1, 2)),
    "o": ("attn.out", (0, 1)),
    "up": ("ff.up", (0, 1)),
    "down": ("ff.down", (0, 1)),
}
PAPER_TARGETS = ("q", "v")  # Sec. 7.1: Wq and Wv with r = 4 is the GPT-2/GPT-3 setting
ALL_LINEAR = tuple(TARGETS)  # QLoRA (Dettmers et al. 2023, Sec. 4): every linear layer


class LoRALinear(nn.Module):
    """A frozen linear layer (nn.Linear, or anything with in/out_features and a forward, such as
    an NF4 layer) plus low-rank updates on named slices of its output rows."""

    def __init__(
        self,
        base: nn.Module,
        slices: dict[str, tuple[int, int]],
        rank: int,
        alpha: float,
        dropout: float = 0.0,
    ):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.scale = rank, alpha / rank
        self.slices = dict(slices)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.A, self.B = nn.ParameterDict(), nn.ParameterDict()
        for name, (start, stop) in self.slices.items():
            a = torch.empty(rank, self.in_features)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # loralib's choice (nn.Linear's default)
            self.A[name] = nn.Parameter(a)
            self.B[name] = nn.Parameter(torch.zeros(stop - start, rank))
        self.merged = False

    def delta(self, name: str) -> torch.Tensor:
        """(α / r) B A for one slice: the update of its rows of W."""
        return (self.B[name] @ self.A[name]) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        h = self.drop(x)
        for name, (start, stop) in self.slices.items():
            update = (h @ self.A[name].t() @ self.B[name].t()) * self.scale
            y = y + F.pad(update, (start, self.out_features - stop))  # zero outside the slice
        return y

    @torch.no_grad()
    def merge(self) -> None:
        """W0 ← W0 + (α / r) B A, once; the forward then skips the adapters."""
        weight = getattr(self.base, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dtype not in (
            torch.float32,
            torch.float16,
            torch.bfloat16,
        ):
            raise TypeError("only a floating-point weight can absorb the update (not NF4 codes)")
        if self.merged:
            return
        for name, (start, stop) in self.slices.items():
            weight[start:stop] += self.delta(name).to(weight.dtype)
        self.merged = True


def _slice(rows: int, share: tuple[int, int]) -> tuple[int, int]:
    index, parts = share
    return index * rows // parts, (index + 1) * rows // parts


def apply_lora(
    model: nn.Module,
    targets: Iterable[str] = PAPER_TARGETS,
    *,
    rank: int = 4,
    alpha: float = 4.0,
    dropout: float = 0.0,
) -> nn.Module:
    """Freeze every weight of a transformer-family `model`, then put adapters on the `targets`
    (names of TARGETS) of every block: the model trains only A and B. Returns the model."""
    targets = tuple(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"unknown LoRA target(s) {unknown} (known: {', '.join(TARGETS)})")
    model.requires_grad_(False)
    blocks = [b for stack in ("encoder", "decoder") for b in getattr(model, stack, None) or ()]
    for block in blocks:
        wanted: dict[str, dict[str, tuple[int, int]]] = {}  # module path -> its slices
        for t in targets:
            path, share = TARGETS[t]
            linear = block.get_submodule(path)
            wanted.setdefault(path, {})[t] = _slice(linear.out_features, share)
        for path, slices in wanted.items():
            parent, _, attr = path.rpartition(".")
            owner = block.get_submodule(parent)
            setattr(owner, attr, LoRALinear(getattr(owner, attr), slices, rank, alpha, dropout))
    return model


def adapters(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its frozen weight (inference with no extra latency)."""
    for layer in adapters(model):
        layer.merge()
    return model


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a task's checkpoint needs on top of the shared, frozen base: every tensor still
    trained (the adapters' A and B, and a task's new head where there is one)."""
    return {
        name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad
    }
