"""Language Models are Unsupervised Multitask Learners (Radford et al., 2019) — GPT-2.

Claim checked at mini scale (Sec. 3, Fig. 1 and Table 3: "performance ... improves in a log-linear
fashion" with model size; the 1542M model still underfits WebText, Fig. 4): at equal data and
steps, held-out language-modelling loss falls monotonically as the model grows.

Three decoder-only transformers of growing width and depth are trained side by side on identical
batches of byte-level BPE tokens (Sec. 2.2) from Shakespeare's plays, and evaluated on plays none of
them saw. The architecture is GPT-2's (Sec. 2.3): pre-LayerNorm blocks with a final LayerNorm,
learned positions, GELU, tied input/output embeddings, N(0, 0.02) initialisation. The largest arm
writes top-k samples (k = 40, Sec. 3.6) to samples.txt.

    mini   d = 32 / 64 / 128 with 2 / 3 / 4 layers (0.03M–0.8M non-embedding parameters), 1,024-token
           BPE, 64-token context, 250 AdamW steps of 32 sequences
    paper  the four sizes of Table 2 (gpt2-small … gpt2-xl: 124M/355M/774M/1558M as released),
           1024-token context, batch 512, 50,257-token BPE; text from --data PATH (a folder of .txt
           files, e.g. OpenWebText), 1% of the files held out; --set arms=gpt2-small for one size
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from papercli.data import lm
from papercli.errors import PapercliError
from papercli.models.transformer import SIZES, Transformer, TransformerConfig
from papercli.reproduce.arms import Arms
from papercli.reproduce.config import bounded
from papercli.reproduce.engine import Recipe, TrainConfig, run
from papercli.reproduce.optim import warmup_cosine, weight_decay_groups

# the mini arms: (width, layers, heads) growing together, as GPT-2's sizes do
MINI_ARMS = {"d32": (32, 2, 2), "d64": (64, 3, 4), "d128": (128, 4, 4)}


@dataclass
class GPT2Config(TrainConfig):
    dataset: str = "plays"  # or "text": a folder of .txt files from --data
    arms: tuple[str, ...] = tuple(MINI_ARMS)  # mini names, or gpt2-small … gpt2-xl
    vocab_size: int = bounded(1024, ge=258)  # BPE trained on the data (paper: 50,257)
    context: int = bounded(64, ge=8)  # tokens per sequence (paper: 1024)
    lr: float = bounded(3e-3, gt=0.0)
    weight_decay: float = bounded(0.1, ge=0.0)
    warmup_steps: int = bounded(30, ge=0)
    dropout: float = bounded(0.0, ge=0.0, lt=1.0)
    eval_sequences: int = bounded(64, ge=1)  # held-out sequences scored at each evaluation
    sample_tokens: int = bounded(200, ge=0)


MINI = GPT2Config(steps=250, batch_size=32, eval_every=125, log_every=25, grad_clip=1.0)
PAPER = GPT2Config(
    dataset="text",
    arms=("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl"),
    vocab_size=50257,
    context=1024,
    steps=100_000,
    batch_size=512,  # Sec. 2.3: "a larger batchsize of 512 is used"
    micro_batch_size=8,
    lr=2.5e-4,  # the paper tuned it per size on held-out WebText and does not list it
    warmup_steps=2000,
    eval_every=2000,
    log_every=100,
    grad_clip=1.0,
    eval_sequences=512,
)


def read_text_folder(folder) -> tuple[list[str], list[str]]:
    """Paper-scale text: every .txt file under `folder`, 1% of the files held out."""
    if folder is None or not folder.is_dir():
        raise PapercliError("GPT-2 paper scale reads text: pass --data FOLDER of .txt files")
    files = sorted(folder.rglob("*.txt"))
    if len(files) < 2:
        raise PapercliError(f"{folder}: need at least two .txt files")
    cut = max(1, len(files) // 100)
    read = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    return read[cut:], read[:cut]


def base_arm(name: str) -> TransformerConfig:
    """The network of one arm before a run's vocabulary, context and dropout: a mini size or one
    of the paper's."""
    if name in MINI_ARMS:
        dim, layers, heads = MINI_ARMS[name]
        return TransformerConfig(dim=dim, layers=layers, heads=heads, ff_dim=4 * dim)
    if name in SIZES and name.startswith("gpt2"):
        return SIZES[name]
    raise ValueError(f"unknown GPT-2 arm '{name}' (mini: {', '.join(MINI_ARMS)}; gpt2-*)")


def for_run(
    base: TransformerConfig, vocab_size: int, context: int, dropout: float = 0.0
) -> TransformerConfig:
    """An arm's network at a run's vocabulary, context length and dropout."""
    return replace(base, vocab_size=vocab_size, max_len=context, dropout=dropout)


def arm_config(name: str, vocab_size: int, context: int, dropout: float = 0.0) -> TransformerConfig:
    """The network of one arm (also the fine-tuning recipes' mini base, see
    reproduce/base_model.py)."""
    return for_run(base_arm(name), vocab_size, context, dropout)


class GPT2Recipe(Recipe):
    paper = "gpt-2"
    config_class = GPT2Config
    scales = {"mini": MINI, "paper": PAPER}
    unit = "tokens"
    cfg: GPT2Config

    # --- data: byte-level BPE tokens (Sec. 2.2) -------------------------------------------------
    def data_source(self) -> str:
        if self.cfg.dataset == "plays":
            return "plays: Shakespeare's plays (shipped), 6 held out; byte-level BPE"
        return f"text: .txt files from {self.ctx.data_path or '--data PATH (required)'}"

    def _texts(self) -> tuple[list[str], list[str]]:
        if self.cfg.dataset == "plays":
            from papercli.data import plays

            train, held = plays.split()
            return [p.text for p in train], [p.text for p in held]
        return read_text_folder(self.ctx.data_path)

    def tokenizer_for(self, train: list[str]):
        """The byte-level BPE: the plays' cached one, or trained on the text folder."""
        from papercli.data import plays

        if self.cfg.dataset == "plays":
            return plays.bpe_tokenizer(self.cfg.vocab_size)
        return plays.train_bpe(train, self.cfg.vocab_size)

    def setup_data(self) -> None:
        train, held = self._texts()
        self.tokenizer = self.tokenizer_for(train)
        eot = self.tokenizer.token_to_id("<|endoftext|>")
        # documents separated by <|endoftext|>, cut into non-overlapping windows
        self.train_windows = lm.Windows(
            lm.token_stream(self.tokenizer, train, eot), self.cfg.context
        )
        self.held_windows = lm.Windows(lm.token_stream(self.tokenizer, held, eot), self.cfg.context)

    def train_batch(self, step: int, micro: int = 0):
        idx = self.ctx.batch_indices(len(self.train_windows), step, micro)
        x, y = self.train_windows.at(idx)
        return x.to(self.ctx.device), y.to(self.ctx.device)

    def units_in(self, batch) -> int:
        return batch[0].numel()

    # --- model ----------------------------------------------------------------------------------
    def base_arm(self, name: str) -> TransformerConfig:
        """The hook the recipes built on this one (Llama 2, Mixtral) override."""
        return base_arm(name)

    def arm_config(self, name: str) -> TransformerConfig:
        cfg = self.cfg
        return for_run(self.base_arm(name), cfg.vocab_size, cfg.context, cfg.dropout)

    def build_model(self) -> nn.Module:
        return Arms({name: Transformer(self.arm_config(name)) for name in self.cfg.arms})

    def configure_optimizers(self, model: nn.Module):
        # Adam (GPT's recipe, kept by GPT-2), decoupled weight decay on matrices only, linear
        # warm-up and cosine decay
        out = {}
        for name, arm in model.items():
            groups = weight_decay_groups(arm, self.cfg.weight_decay, skip=("embed", "pos"))
            opt = torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(0.9, 0.95))
            out[name] = (opt, warmup_cosine(opt, self.cfg.warmup_steps, self.cfg.steps))
        return out

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        return {
            name: F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            for name, logits in model(x).items()
        }

    # --- evaluation -----------------------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out loss (nats per token) of each arm on fixed windows of the unseen plays."""
        x, y = self.held_windows.at(self.held_windows.spread(self.cfg.eval_sequences))
        count = len(x)
        totals = {name: 0.0 for name in model}
        for i in range(0, count, 16):
            xb, yb = x[i : i + 16].to(self.ctx.device), y[i : i + 16].to(self.ctx.device)
            for name, logits in model(xb).items():
                totals[name] += F.cross_entropy(
                    logits.float().flatten(0, 1), yb.flatten(), reduction="sum"
                ).item()
        return {
            f"{name}_heldout_loss": t / (count * self.cfg.context) for name, t in totals.items()
        }

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        losses = [m[f"{name}_heldout_loss"] for name in self.cfg.arms]
        # 1 when every larger model beats the next smaller one (Fig. 1's monotone trend)
        m["monotonic_in_size"] = float(all(a > b for a, b in itertools.pairwise(losses)))
        m["smallest_minus_largest_loss"] = losses[0] - losses[-1]
        m["largest_heldout_loss"] = losses[-1]
        return m

    def plots(self, model: nn.Module, run_dir) -> None:
        """Top-k samples (k = 40, Sec. 3.6) of the largest arm, from a held-out prompt."""
        if not self.cfg.sample_tokens:
            return
        largest = model[self.cfg.arms[-1]].eval()
        prompt = self.held_windows.tokens[: min(32, self.cfg.context // 2)][None].to(
            self.ctx.device
        )
        gen = torch.Generator().manual_seed(self.ctx.seed)
        steps = min(self.cfg.sample_tokens, self.cfg.context - prompt.shape[1])
        out = largest.generate(prompt, steps, top_k=40, generator=gen)[0].tolist()
        text = self.tokenizer.decode(out)
        (run_dir / "samples.txt").write_text(
            f"# {self.cfg.arms[-1]}, top-k 40, prompt = first {prompt.shape[1]} held-out tokens\n\n"
            f"{text}\n",
            encoding="utf-8",
        )


if __name__ == "__main__":
    run(GPT2Recipe)
