"""Training Compute-Optimal Large Language Models (Hoffmann et al., 2022) — Chinchilla.

Claim checked at mini scale (Sec. 3.2, Approach 2, Fig. 3): for a fixed FLOP budget C, final loss
against model size N traces a valley (an "IsoFLOP profile"); the size at the bottom of the valley,
N_opt(C), grows as a power of the budget, N_opt ∝ C^a with a ≈ 0.5 (Table 2: a = 0.49 for
Approach 2) — parameters and training tokens should grow in equal proportion.

For each budget C, several model sizes N are trained on D tokens such that their training FLOPs
equal C; a parabola in log N is fitted to each profile's final losses and its vertex is N_opt(C)
(Sec. 3.2: "we fit a parabola to each IsoFLOP curve to directly estimate at what model size the
minimum loss is achieved"); then log N_opt is fitted linearly in log C. All runs train side by
side on the same stream of batches (`Arms`), each stopping when its budget is spent, each with its
own cosine schedule whose length matches its own number of steps and which decays the learning
rate 10× (Sec. 3.1 and Fig. A1: a cosine cycle longer than the run overestimates the loss).

FLOPs are counted as in Appendix F (embeddings, attention logits and softmax, dense blocks and
output logits; backward = 2 × forward), which at our tiny widths differs from 6ND by tens of
percent because attention is a large share of the compute; 6ND is reported alongside. N counts
all parameters (Sec. 2, as the paper does — not only the non-embedding ones).

The models are this package's transformer family: decoder-only, pre-norm, GELU, tied embeddings.
Chinchilla uses relative positions (Transformer-XL) and RMSNorm (Sec. 4.1; Gopher's architecture);
the family has neither, so the nearest parameter-free option stands in — sinusoidal positions — and
LayerNorm stands in for RMSNorm. The relative-position parameters (W_R and the u, v biases, d² + 2d
per layer) are therefore missing from our parameter counts; `paper_params` adds them back to
compare with Table A9.

    mini   characters of the 32 training plays (83 of them; context 64, 16 sequences a step),
           2-layer models from 2.4K to 0.1M parameters, budgets of 5e10, 1.5e11 and 5e11 FLOPs
           with 6 sizes each, centred on ~200 tokens per parameter (where a first sweep found
           the valleys at this scale); held-out plays for the final losses; up to 10 minutes on
           2 CPU cores
    paper  Table A9's sizes and Fig. 3's budgets (6e18 … 3e21 FLOPs), 32,000-token BPE on
           --data PATH (a folder of .txt files; MassiveText is not public), context 2048;
           Chinchilla itself (80 layers, d_model 8192, 70B parameters, 1.4T tokens) is
           PAPER_SIZES["chinchilla-70b"]

Measured (the mini on an idle 2-core machine, default threads): reproduced on seeds 0 and 1 —
a = 0.618 / 0.480 (Table 2: 0.49), a valley in all 3 profiles, best loss at the largest budget
2.164 / 2.150 nats per character; 188 / 218 s of training, 194 / 226 s wall for the whole command
(377 / 438 s user CPU).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from papercli.errors import UsageError
from papercli.models.transformer import Transformer, TransformerConfig
from papercli.reproduce.arms import Arms
from papercli.reproduce.config import bounded
from papercli.reproduce.engine import Recipe, TrainConfig, run
from papercli.reproduce.optim import weight_decay_groups
from papercli.reproduce.params import meta_counts
from papercli.reproduce.recipe import _millions

# mini sizes: (d_model, layers, heads); feed-forward 4 × d_model, heads of at most 20 dimensions;
# two layers throughout, widths in steps of 1.2-1.8× in parameters
_HEADS = {8: 1, 12: 1, 16: 1, 20: 1, 24: 2, 28: 2, 32: 2, 40: 2, 48: 3, 56: 4, 64: 4}
MINI_SIZES = {f"d{d}": (d, 2, heads) for d, heads in _HEADS.items()}

# Table A9 (all model sizes of the IsoFLOP sweep): params (M) as published, d_model, ffw_size,
# kv_size, n_heads, n_layers. Rows whose n_heads × kv_size differs from d_model cannot be built by
# this transformer family (it has no separate key/value size) and are left out.
TABLE_A9 = [
    (44, 512, 2048, 64, 8, 8),
    (57, 576, 2304, 64, 9, 9),
    (74, 640, 2560, 64, 10, 10),
    (90, 640, 2560, 64, 10, 13),
    (106, 640, 2560, 64, 10, 16),
    (117, 768, 3072, 64, 12, 12),
    (140, 768, 3072, 64, 12, 15),
    (163, 768, 3072, 64, 12, 18),
    (175, 896, 3584, 64, 14, 14),
    (196, 896, 3584, 64, 14, 16),
    (217, 896, 3584, 64, 14, 18),
    (251, 1024, 4096, 64, 16, 16),
    (278, 1024, 4096, 64, 16, 18),
    (306, 1024, 4096, 64, 16, 20),
    (425, 1280, 5120, 128, 10, 18),
    (489, 1280, 5120, 128, 10, 21),
    (509, 1408, 5632, 128, 11, 18),
    (552, 1280, 5120, 128, 10, 24),
    (587, 1408, 5632, 128, 11, 21),
    (632, 1536, 6144, 128, 12, 19),
    (664, 1408, 5632, 128, 11, 24),
    (724, 1536, 6144, 128, 12, 22),
    (816, 1536, 6144, 128, 12, 25),
    (893, 1792, 7168, 128, 14, 20),
    (1018, 1792, 7168, 128, 14, 23),
    (1143, 1792, 7168, 128, 14, 26),
    (1266, 2048, 8192, 128, 16, 22),
    (1424, 2176, 8704, 128, 17, 22),
    (1429, 2048, 8192, 128, 16, 25),
    (1593, 2048, 8192, 128, 16, 28),
    (1609, 2176, 8704, 128, 17, 25),
    (1731, 2304, 9216, 128, 18, 24),
    (1794, 2176, 8704, 128, 17, 28),
    (2007, 2304, 9216, 128, 18, 28),
    (2283, 2304, 9216, 128, 18, 32),
    (2298, 2560, 10240, 128, 20, 26),
    (2639, 2560, 10240, 128, 20, 30),
    (2980, 2560, 10240, 128, 20, 34),
    (3802, 2816, 11264, 128, 22, 36),
    (4516, 3072, 12288, 128, 24, 36),
    (6796, 3584, 14336, 128, 28, 40),
    (9293, 4096, 16384, 128, 32, 42),
    (12295, 4608, 18432, 128, 36, 44),
    (16183, 5120, 20480, 128, 40, 47),
]
PAPER_VOCAB = 32_000  # SentencePiece (Sec. 4.1; Gopher's tokenizer)


def _a9(d_model: int, ffw: int, heads: int, layers: int) -> TransformerConfig:
    return TransformerConfig(
        vocab_size=PAPER_VOCAB, dim=d_model, layers=layers, heads=heads, ff_dim=ffw,
        max_len=2048, positions="sinusoidal",
    )  # fmt: skip


PAPER_SIZES: dict[str, TransformerConfig] = {
    f"a9-{m}m": _a9(d, ffw, heads, layers) for m, d, ffw, _kv, heads, layers in TABLE_A9
}
# Table 4 / Sec. 4.1: Chinchilla — 80 layers, 64 heads of size 128, d_model 8192, ffw 4 × d_model
PAPER_SIZES["chinchilla-70b"] = _a9(8192, 32768, 64, 80)
CHINCHILLA_70B_TOKENS = 1.4e12  # Sec. 4.1: trained on 1.4 trillion tokens


def relative_position_params(cfg: TransformerConfig) -> int:
    """What Transformer-XL relative attention adds per layer (W_R, d × d, and the u, v biases):
    the part of Chinchilla's parameter count this family cannot build."""
    return cfg.layers * (cfg.dim * cfg.dim + 2 * cfg.dim)


def flops_per_token(cfg: TransformerConfig, context: int) -> float:
    """Training FLOPs per token as Appendix F counts them: the forward pass (embeddings;
    per layer the key/query/value projections, attention logits, softmax, the reduction over
    values and the output projection; the dense block; the final logits), and a backward pass
    of twice the forward. Per sequence position, so the attention terms scale with `context`."""
    d, h, kv, t = cfg.dim, cfg.heads, cfg.head_dim, context
    attention = 2 * 3 * d * kv * h + 2 * t * kv * h + 3 * h * t + 2 * t * kv * h + 2 * kv * h * d
    dense = 2 * 2 * d * cfg.ff_dim
    forward = 2 * cfg.vocab_size * d + cfg.layers * (attention + dense) + 2 * d * cfg.vocab_size
    return 3.0 * forward


@dataclass(frozen=True)
class IsoRun:
    """One point of an IsoFLOP profile: a size trained until its share of budget C is spent."""

    name: str
    budget: float
    size: str
    params: int
    tokens: float  # D = C / (FLOPs per token)
    steps: int


@dataclass
class ChinchillaConfig(TrainConfig):
    dataset: str = "plays"  # or "text": a folder of .txt files from --data
    vocab: Literal["bytes", "chars"] = "bytes"  # the plays' tokens (text: a BPE of vocab_size)
    sizes: tuple[str, ...] = tuple(MINI_SIZES)  # the size ladder (mini names or Table A9's)
    budgets: tuple[float, ...] = (6e10, 2.4e11, 9.6e11)  # training FLOPs C (Appendix F count)
    sizes_per_budget: int = bounded(5, ge=3)  # a parabola needs three points
    tokens_per_param: float = bounded(20.0, gt=0.0)  # where each budget's sizes are centred
    vocab_size: int = bounded(256, ge=2)  # bytes at mini scale
    context: int = bounded(64, ge=4)
    lr: float = bounded(3e-3, gt=0.0)
    min_lr_ratio: float = bounded(0.1, gt=0.0, le=1.0)  # cosine decays 10× (Sec. 3.1)
    warmup_steps: int = bounded(20, ge=0)
    weight_decay: float = bounded(0.1, ge=0.0)
    eval_sequences: int = bounded(512, ge=1)  # held-out sequences for each final loss


def size_configs(cfg: ChinchillaConfig) -> dict[str, TransformerConfig]:
    """The size ladder at this config's vocabulary and context."""
    if cfg.dataset == "plays":
        sizes = {
            name: TransformerConfig(dim=d, layers=n, heads=h, ff_dim=4 * d)
            for name, (d, n, h) in MINI_SIZES.items()
        }
    else:
        sizes = PAPER_SIZES
    return {
        name: replace(c, vocab_size=cfg.vocab_size, max_len=cfg.context, positions="sinusoidal")
        for name, c in sizes.items()
    }


def plan(cfg: ChinchillaConfig) -> list[IsoRun]:
    """Every (budget, size) run: per budget the `sizes_per_budget` sizes nearest (in log N) to
    the size the 20-tokens-per-parameter rule picks, each trained for D = C / FLOPs-per-token."""
    if len(cfg.budgets) < 2:
        raise UsageError("an IsoFLOP analysis needs at least two budgets (--set budgets=…)")
    sizes = size_configs(cfg)
    unknown = [s for s in cfg.sizes if s not in sizes]
    if unknown:
        raise UsageError(f"unknown size(s) {', '.join(unknown)} (known: {', '.join(sizes)})")
    if len(cfg.sizes) < cfg.sizes_per_budget:
        raise UsageError(f"{len(cfg.sizes)} sizes cannot give {cfg.sizes_per_budget} per budget")
    params = {s: _count(sizes[s]) for s in cfg.sizes}
    per_token = {s: flops_per_token(sizes[s], cfg.context) for s in cfg.sizes}
    runs = []
    for budget in sorted(cfg.budgets):
        guess = math.sqrt(budget / (6 * cfg.tokens_per_param))  # C = 6 N D with D = 20 N
        ladder = sorted(cfg.sizes, key=lambda s: abs(math.log(params[s] / guess)))
        chosen = sorted(ladder[: cfg.sizes_per_budget], key=params.get)
        for s in chosen:
            tokens = budget / per_token[s]
            steps = max(1, round(tokens / (cfg.batch_size * cfg.context)))
            runs.append(IsoRun(f"c{tag(budget)}-{s}", budget, s, params[s], tokens, steps))
    return runs


def tag(budget: float) -> str:
    """A budget as a name part: 6e10, 2p4e11 (module names cannot hold dots)."""
    return f"{budget:.1e}".replace("+", "").replace(".0e", "e").replace(".", "p")


def longest(runs: list[IsoRun]) -> int:
    return max(r.steps for r in runs)


_COUNTS: dict[str, int] = {}


def _count(cfg: TransformerConfig) -> int:
    """Parameters of a size, counted on the meta device once per process: the plan is made
    again for the config, the recipe and its description, over up to 81 sizes."""
    key = repr(cfg)
    if key not in _COUNTS:
        _COUNTS[key] = meta_counts(Transformer, cfg)["total"]
    return _COUNTS[key]


def fit_parabola(log_n: np.ndarray, loss: np.ndarray) -> tuple[float, bool]:
    """Vertex of loss = a (log N)² + b log N + c: (log N_opt, whether it is a valley inside the
    sizes tried). Without a valley, the best size tried stands in."""
    a, b, _ = np.polyfit(log_n, loss, 2)
    if a > 0:
        vertex = -b / (2 * a)
        if log_n.min() < vertex < log_n.max():
            return float(vertex), True
    return float(log_n[np.argmin(loss)]), False


class ChinchillaRecipe(Recipe):
    paper = "chinchilla"
    config_class = ChinchillaConfig
    unit = "tokens"
    cfg: ChinchillaConfig

    def __init__(self, cfg: ChinchillaConfig, ctx):
        super().__init__(cfg, ctx)
        self.runs = plan(cfg)
        # the loop ends when the longest run has spent its budget; --steps may stop it earlier,
        # which `budget_spent` reports
        self.cfg = replace(cfg, steps=min(cfg.steps, longest(self.runs)))
        if cfg.steps < longest(self.runs) and ctx.is_main:
            # the scale's step count is planned for its own budgets: other --set budgets (or a
            # smaller --steps) cut the runs short, and budget_spent < 1 fails the verdict
            sys.stderr.write(
                f"papercli: note: these budgets need {longest(self.runs):,} steps; the run stops "
                f"at {cfg.steps:,} (pass --steps {longest(self.runs)} to spend every budget)\n"
            )

    @classmethod
    def config_for(cls, scale: str, paper: str) -> TrainConfig:
        """The scale's config, run for as many steps as its longest run needs."""
        cfg = super().config_for(scale, paper)
        steps = longest(plan(cfg))
        return replace(cfg, steps=steps, eval_every=steps)

    def describe(self, counts) -> str:
        n = sorted({r.params for r in self.runs})
        return (
            f"{len(self.runs)} runs ({len(self.cfg.budgets)} FLOP budgets × "
            f"{self.cfg.sizes_per_budget} sizes, {_millions(n[0])}–{_millions(n[-1])} "
            f"parameters); up to {self.cfg.steps:,} steps of {self.cfg.batch_size}"
        )

    # --- data -----------------------------------------------------------------------------------
    def data_source(self) -> str:
        if self.cfg.dataset == "plays":
            return "plays: Shakespeare's plays (shipped) as bytes, 6 held out"
        return f"text: .txt files from {self.ctx.data_path or '--data PATH (required)'}; BPE"

    def setup_data(self) -> None:
        if self.cfg.dataset == "plays" and self.cfg.vocab == "bytes":
            from papercli.data.plays import play_bytes

            self.train_tokens, self.held_tokens = play_bytes()
        elif self.cfg.dataset == "plays":
            self.train_tokens, self.held_tokens = self._play_chars()
        else:
            from papercli.data.plays import train_bpe
            from papercli.recipes.gpt2 import read_text_folder

            train, held = read_text_folder(self.ctx.data_path)
            tok = train_bpe(train, self.cfg.vocab_size)
            self.train_tokens, self.held_tokens = (
                torch.tensor([i for e in tok.encode_batch(texts) for i in e.ids])
                for texts in (train, held)
            )

    def _play_chars(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The plays as character ids (the vocabulary of the training plays; the held-out ones
        use no other character)."""
        from papercli.data.plays import CharVocab, split

        train, held = ("".join(p.text for p in plays) for plays in split())
        vocab = CharVocab(train)
        if len(vocab) > self.cfg.vocab_size:
            raise UsageError(
                f"the plays have {len(vocab)} characters: --set vocab_size={len(vocab)} or more"
            )
        return tuple(torch.tensor(vocab.encode(t), dtype=torch.uint8) for t in (train, held))

    def _windows(self, tokens: torch.Tensor, index: torch.Tensor):
        span = torch.arange(self.cfg.context + 1)
        chunk = tokens[index[:, None] * self.cfg.context + span].long()
        return chunk[:, :-1].to(self.ctx.device), chunk[:, 1:].to(self.ctx.device)

    def train_batch(self, step: int, micro: int = 0):
        n = (len(self.train_tokens) - 1) // self.cfg.context
        return self._windows(self.train_tokens, self.ctx.batch_indices(n, step, micro))

    def units_in(self, batch) -> int:
        return batch[0].numel()

    # --- models: one arm per (budget, size) -----------------------------------------------------
    def build_model(self) -> nn.Module:
        sizes = size_configs(self.cfg)
        return Arms({r.name: Transformer(sizes[r.size]) for r in self.runs})

    def configure_optimizers(self, model: nn.Module):
        """AdamW (Sec. 4.1: Chinchilla trains with AdamW), linear warm-up, then a cosine that ends
        10× lower exactly when the run's budget is spent (Sec. 3.1, Fig. A1)."""
        out = {}
        for r in self.runs:
            groups = weight_decay_groups(model[r.name], self.cfg.weight_decay, skip=("embed",))
            opt = torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(0.9, 0.95))
            out[r.name] = (opt, self._schedule(opt, r.steps))
        return out

    def _schedule(self, opt, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        warmup, floor = min(self.cfg.warmup_steps, steps // 4), self.cfg.min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, steps - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)

    def train_step(self, step: int, trainer) -> dict[str, float]:
        """Only the runs whose budget is not yet spent train on this step's batch."""
        active = [r.name for r in self.runs if step < r.steps]

        def loss(model: nn.Module, batch) -> dict[str, torch.Tensor]:
            x, y = batch
            return {
                name: F.cross_entropy(model[name](x).float().flatten(0, 1), y.flatten())
                for name in active
            }

        losses = trainer.accumulate(step, loss)
        trainer.step_optimizers(active)
        return losses

    # --- evaluation: final losses, parabolas, the power law -----------------------------------
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out loss (nats per token) of every run on the same fixed sequences."""
        n = (len(self.held_tokens) - 1) // self.cfg.context
        index = torch.linspace(0, n - 1, min(self.cfg.eval_sequences, n)).long()
        x, y = self._windows(self.held_tokens, index)
        out = {}
        for r in self.runs:
            total = sum(
                F.cross_entropy(
                    model[r.name](xb).float().flatten(0, 1), yb.flatten(), reduction="sum"
                ).item()
                for xb, yb in zip(x.split(64), y.split(64), strict=True)
            )
            out[f"loss_{r.name}"] = total / y.numel()
        return out

    def profiles(self, last_eval: dict[str, float]) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """budget -> (log N, final loss) of its runs."""
        out: dict[float, tuple[list[float], list[float]]] = {}
        for r in self.runs:
            xs, ys = out.setdefault(r.budget, ([], []))
            xs.append(math.log(r.params))
            ys.append(last_eval[f"loss_{r.name}"])
        return {c: (np.array(xs), np.array(ys)) for c, (xs, ys) in out.items()}

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        budgets, n_opt, valleys = [], [], 0
        for budget, (log_n, loss) in sorted(self.profiles(last_eval).items()):
            vertex, valley = fit_parabola(log_n, loss)
            valleys += valley
            budgets.append(budget)
            n_opt.append(vertex)
            m[f"n_opt_c{tag(budget)}"] = math.exp(vertex)
        slope, _ = np.polyfit(np.log(budgets), n_opt, 1)
        m["n_opt_exponent"] = float(slope)  # a in N_opt ∝ C^a (Table 2, Approach 2: 0.49)
        m["d_opt_exponent"] = 1.0 - float(slope)  # b = 1 − a, since C ∝ N D
        m["valleys"] = float(valleys)
        largest = max(budgets)
        m["best_loss_largest_budget"] = min(
            m[f"loss_{r.name}"] for r in self.runs if r.budget == largest
        )
        # the share of the planned FLOPs actually spent (< 1 when --steps cut the runs short)
        done = sum(min(r.steps, self.cfg.steps) / r.steps * r.budget for r in self.runs)
        m["budget_spent"] = done / sum(r.budget for r in self.runs)
        self._final = m  # for the plot
        m["flops_6nd_over_appendix_f"] = sum(6 * r.params * r.tokens for r in self.runs) / sum(
            r.budget for r in self.runs
        )
        return m

    def plots(self, model: nn.Module, run_dir) -> None:
        """isoflop.png: the profiles with their parabolas (Fig. 3 left) and N_opt against C with
        the fitted power law (Fig. 3 centre)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        metrics = getattr(self, "_final", None)
        if metrics is None:
            return
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        points = []
        for budget, (log_n, loss) in sorted(self.profiles(metrics).items()):
            line = left.plot(np.exp(log_n), loss, "o", label=f"C = {budget:.1e}")[0]
            a, b, c = np.polyfit(log_n, loss, 2)
            grid = np.linspace(log_n.min(), log_n.max(), 100)
            left.plot(np.exp(grid), a * grid**2 + b * grid + c, color=line.get_color())
            points.append((budget, metrics[f"n_opt_c{tag(budget)}"]))
        left.set(xscale="log", xlabel="parameters N", ylabel="held-out loss (nats/token)")
        left.set_title("IsoFLOP profiles")
        left.legend()
        cs, ns = np.array(points).T
        slope, icpt = np.polyfit(np.log(cs), np.log(ns), 1)
        right.plot(cs, ns, "o")
        right.plot(cs, np.exp(icpt) * cs**slope, label=f"N_opt ∝ C^{slope:.2f} (paper: 0.49)")
        right.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel="N_opt")
        right.set_title("compute-optimal size")
        right.legend()
        fig.tight_layout()
        fig.savefig(run_dir / "isoflop.png", dpi=120)
        plt.close(fig)


def _config_for(scale: str) -> ChinchillaConfig:
    if scale == "mini":
        # characters, 16 × 64 = 1,024 tokens a step: enough steps for the largest size of each
        # budget (≥ 260) that its loss reflects its size and data, not a cut-short optimiser.
        # Each budget's 6 sizes are centred where a first sweep found the valleys (~200 tokens
        # per parameter at this scale, not 20): the vertices then come from the fits, inside
        # the sizes tried, rather than from the edge of a window
        return ChinchillaConfig(
            vocab="chars",
            vocab_size=83,  # the characters of the training plays
            batch_size=16,
            budgets=(5e10, 1.5e11, 5e11),
            sizes_per_budget=6,
            tokens_per_param=200.0,
            log_every=100,
        )
    # Fig. 3: nine budgets from 6e18 to 3e21 FLOPs; the sweep's sizes are Table A9's
    return ChinchillaConfig(
        dataset="text",
        sizes=tuple(n for n in PAPER_SIZES if n != "chinchilla-70b"),
        budgets=(6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21),
        sizes_per_budget=9,
        vocab_size=PAPER_VOCAB,
        context=2048,
        batch_size=256,  # 0.5M tokens a step (the sweep's batch sizes are not tabulated)
        micro_batch_size=8,
        lr=2e-4,  # a setting: the sweep's learning rates are not listed (Chinchilla: 1e-4)
        log_every=100,
        grad_clip=1.0,
        eval_sequences=512,
    )


ChinchillaRecipe.scales = {"mini": _config_for("mini"), "paper": _config_for("paper")}


if __name__ == "__main__":
    run(ChinchillaRecipe)
