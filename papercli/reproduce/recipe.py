"""What a recipe is: its config, where it runs (`Context`), and the hooks it fills in (`Recipe`).

The split follows torchtune and nanoGPT: the recipe owns the shape of its training step
(`train_step`: one loss by default; a GAN's alternating updates, EMA, several optimizers in its own
order), shared code (`loop.py`) owns gradient accumulation, DDP, the NaN guard, checkpoints,
progress and evaluation.

Batches: `--batch-size` is the *global* batch — the paper's number. It is split over processes
and, when one process cannot hold its share, over `micro_batch_size`-sized accumulation steps.
Every micro-batch is a pure function of (seed, step, shard), so a resumed run sees exactly the
batches of an uninterrupted one and DDP shards are disjoint by construction.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from papercli.errors import PapercliError, UsageError
from papercli.reproduce.config import bounded
from papercli.seeding import step_generator

if TYPE_CHECKING:
    from papercli.registry import Check
    from papercli.reproduce.loop import Trainer


@dataclass
class TrainConfig:
    """Fields every recipe config has; recipes subclass it with the paper's own settings."""

    steps: int = bounded(100, ge=1)
    batch_size: int = bounded(8, ge=1)  # global batch: all processes and accumulation steps
    micro_batch_size: int = bounded(0, ge=0)  # per process and step; 0 = batch_size / processes
    eval_every: int = bounded(50, ge=1)
    log_every: int = bounded(10, ge=1)
    grad_clip: float = bounded(0.0, ge=0.0)  # max global norm per optimizer; 0 = off
    compile: bool = True  # torch.compile on GPU (never on CPU: compile time dominates short runs)


@dataclass
class Context:
    """Where and how this process trains, and how the global batch is split."""

    device: torch.device
    seed: int
    paper: str = ""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    data_path: Path | None = None
    run_dir: Path | None = None
    amp_dtype: torch.dtype | None = None  # bf16 on GPU
    global_batch: int = 1
    micro_batch: int = 1  # samples per process per accumulation step
    _perm: tuple | None = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def accum_steps(self) -> int:
        return self.global_batch // (self.micro_batch * self.world)

    def split_batch(self, global_batch: int, micro_batch: int) -> None:
        """Set the batch split; a global batch that the processes cannot share evenly is refused."""
        micro = micro_batch or global_batch // self.world
        if micro < 1 or global_batch % (micro * self.world):
            raise UsageError(
                f"batch size {global_batch} cannot be split into {self.world} process(es) × "
                f"micro-batches of {micro or micro_batch}: choose a batch size divisible by "
                f"{self.world * max(micro, 1)} (or set micro_batch_size)"
            )
        self.global_batch, self.micro_batch = global_batch, micro

    def shard(self, micro: int = 0) -> int:
        """Index of this (rank, micro-step) piece of the global batch: 0 … world·accum − 1."""
        return self.rank * self.accum_steps + micro

    def generator(self, step: int, stream: int = 0) -> torch.Generator:
        """A CPU generator seeded by (seed, step, stream): random draws that survive a resume."""
        return step_generator(self.seed, step, stream)

    def batch_indices(
        self, n: int, step: int, micro: int = 0, batch: int | None = None
    ) -> torch.Tensor:
        """Sample indices of this process's micro-batch `micro` of `step`: epochs are fresh
        permutations of the `n` samples (seeded by seed and epoch); each global batch is cut into
        disjoint shards, one per (rank, micro-step). `batch` overrides the global batch size for
        a phase that batches differently (fine-tuning after pre-training); it is split into the
        same number of shards."""
        global_batch = batch or self.global_batch
        shards = self.world * self.accum_steps
        if global_batch % shards:
            raise UsageError(
                f"batch size {global_batch} cannot be split into {shards} shards "
                f"({self.world} process(es) × {self.accum_steps} accumulation steps)"
            )
        if global_batch > n:
            raise UsageError(f"batch size {global_batch} is larger than the {n} training samples")
        per_epoch, micro_batch = n // global_batch, global_batch // shards
        epoch, pos = divmod(step, per_epoch)
        if self._perm is None or self._perm[0] != (epoch, n):
            g = torch.Generator()
            g.manual_seed((self.seed * 1_000_003 + epoch * 104_729 + 17) % (2**63 - 1))
            self._perm = ((epoch, n), torch.randperm(n, generator=g))
        start = pos * global_batch + self.shard(micro) * micro_batch
        return self._perm[1][start : start + micro_batch]

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


class Recipe:
    """A paper's reproduction. Subclasses set the class attributes and override the hooks."""

    paper: ClassVar[str] = ""  # registry id used when the recipe is started without --paper
    config_class: ClassVar[type[TrainConfig]] = TrainConfig
    scales: ClassVar[dict[str, TrainConfig]] = {}
    channels_last: ClassVar[bool] = False  # conv nets run faster in NHWC on GPUs
    unit: ClassVar[str] = "samples"  # what throughput counts: images, tiles, tokens …

    def __init__(self, cfg: TrainConfig, ctx: Context):
        self.cfg = cfg
        self.ctx = ctx

    # --- configuration --------------------------------------------------------------------------
    @classmethod
    def config_for(cls, scale: str, paper: str) -> TrainConfig:
        """The config of `scale` for `paper` (a recipe that serves several papers may differ)."""
        if scale not in cls.scales:
            raise UsageError(f"unknown scale '{scale}' (this recipe has: {', '.join(cls.scales)})")
        return cls.scales[scale]

    @classmethod
    def claim_checks(cls, paper: str) -> tuple[Check, ...]:
        """The checks that decide the verdict: the registry entry's `reproduce.checks`. A registry
        that cannot be read is an error, never an empty (and so unwinnable) verdict."""
        from papercli.registry import Registry

        entry = Registry.load().get(paper)
        if entry.reproduce is None:
            raise PapercliError(f"'{paper}' has no reproduce block with checks in the registry")
        return entry.reproduce.checks

    def describe(self, counts: dict[str, Any]) -> str:
        """One line for `papercli recipes`, generated from the config: what trains, how long."""
        arms = counts.get("arms")
        if arms:
            model = ", ".join(f"{name} ({_millions(c['total'])})" for name, c in arms.items())
        else:
            model = (
                f"{getattr(self.cfg, 'model', type(self).__name__)} ({_millions(counts['total'])})"
            )
        accum = f", {self.ctx.accum_steps} accumulation steps" if self.ctx.accum_steps > 1 else ""
        return f"{model}; {self.cfg.steps:,} steps of {self.cfg.batch_size}{accum}"

    # --- data -----------------------------------------------------------------------------------
    def data_source(self) -> str:
        """Human-readable: where the data comes from at this scale."""
        raise NotImplementedError

    def dataset_name(self) -> str | None:
        """The data-set registry entry this run reads (`recipes` and `doctor` report whether it is
        on this machine); None when the data is not a registered data set."""
        return getattr(self.cfg, "dataset", None)

    def setup_data(self) -> None:
        """Load (or check) the data; raise PapercliError with an actionable message if missing."""

    def ensure_data(self) -> None:
        """Seed, then `setup_data` — once, whoever asks first (`steps_per_epoch` may need the
        data before training does), so the model built next starts from the same random state."""
        if not getattr(self, "_data_ready", False):
            torch.manual_seed(self.ctx.seed)  # the same initial weights on every rank
            self.setup_data()
            self._data_ready = True

    def train_batch(self, step: int, micro: int = 0) -> Any:
        """This process's micro-batch `micro` of `step` (deterministic in seed, step and shard)."""
        raise NotImplementedError

    def units_in(self, batch: Any) -> int:
        """How many `unit`s a micro-batch holds (throughput): samples by default."""
        return self.ctx.micro_batch

    def steps_per_epoch(self) -> int | None:
        """Steps in one pass over the training data (for --epochs); may be asked before the data
        is loaded — call `ensure_data()` if the answer needs it."""
        return None

    # --- model and optimisation -----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def configure_optimizers(self, model: nn.Module) -> Any:
        """An optimizer, (optimizer, scheduler), or a dict name -> optimizer | (optimizer,
        scheduler) stepped in that order by the default `train_step`."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        """One loss, or named losses (summed for the backward pass, logged one by one)."""
        raise NotImplementedError

    def train_step(self, step: int, trainer: Trainer) -> dict[str, float]:
        """One optimisation step; returns the named losses/metrics to log. The default: accumulate
        `loss` over the micro-batches, then step every optimizer (clip, step, schedule)."""
        losses = trainer.accumulate(step, self.loss)
        trainer.step_optimizers()
        return losses

    # --- extra state (EMA weights, a discriminator's buffers, data position …) -----------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    # --- evaluation and outputs -----------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {}

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        """Metrics for the verdict; by default the last evaluation."""
        return last_eval

    def plots(self, model: nn.Module, run_dir: Path) -> None:
        """Optional sample figures (PNG) for the run directory."""

    def on_train_end(self, model: nn.Module) -> None:
        """Called on every rank after the last step (DDP tests record their shards here)."""


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n < 1e9 else f"{n / 1e9:.2f}B"


def build_model(recipe: Recipe) -> nn.Module:
    """The recipe's model; a configuration the architecture rejects is a usage error, not a crash."""
    try:
        return recipe.build_model()
    except ValueError as exc:
        raise UsageError(f"cannot build the model: {exc}") from None


def steps_for_epochs(epochs: float, per_epoch: int) -> int:
    return max(1, math.ceil(epochs * per_epoch))
