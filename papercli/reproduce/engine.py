"""The one training loop every recipe uses.

A recipe subclasses `Recipe` and fills in the paper-specific parts (data, model, loss, evaluation);
the engine owns everything else: device and precision, torch.compile, DDP under torchrun, seeding,
progress, periodic evaluation, metrics.jsonl, atomic checkpoints with resume, Ctrl-C, the NaN guard,
claim checks and result.json.

Determinism: every training batch is a pure function of (seed, step, rank) — see
`Context.generator` — so a run resumed from a checkpoint sees exactly the batches the uninterrupted
run would have seen, and on the CPU ends with the same weights and metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from papercli import paths
from papercli.errors import PapercliError, UsageError
from papercli.reproduce import claims
from papercli.reproduce.config import apply_overrides, to_dict
from papercli.reproduce.runs import new_run_dir
from papercli.seeding import step_generator

CHECKPOINT = "checkpoint.pt"
EXIT_NAN = 3
EXIT_INTERRUPTED = 130


@dataclass
class TrainConfig:
    """Fields every recipe config has; recipes subclass it with the paper's own settings."""

    steps: int = 100
    batch_size: int = 8
    eval_every: int = 50
    log_every: int = 10
    grad_clip: float = 0.0  # 0 = off
    compile: bool = True  # torch.compile on GPU (never on CPU: compile time dominates short runs)


@dataclass
class Context:
    """Where and how this process trains."""

    device: torch.device
    seed: int
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    data_path: Path | None = None
    run_dir: Path | None = None
    amp_dtype: torch.dtype | None = None  # bf16 on GPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def generator(self, step: int, stream: int = 0) -> torch.Generator:
        """A CPU generator seeded by (seed, step, stream): batches that survive a resume."""
        return step_generator(self.seed, step, stream)

    def batch_indices(self, n: int, batch: int, step: int) -> torch.Tensor:
        """This rank's `batch` sample indices for `step`: epochs are fresh permutations of the `n`
        samples (seeded by seed and epoch), each global batch is split into disjoint rank shards."""
        global_batch = batch * self.world
        per_epoch = max(1, n // global_batch)
        epoch, pos = divmod(step, per_epoch)
        cached = getattr(self, "_perm", None)
        if cached is None or cached[0] != (epoch, n):
            g = torch.Generator()
            g.manual_seed((self.seed * 1_000_003 + epoch * 104_729 + 17) % (2**63 - 1))
            cached = ((epoch, n), torch.randperm(n, generator=g))
            self._perm = cached
        start = pos * global_batch + self.rank * batch
        return cached[1][start : start + batch]

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


class Recipe:
    """A paper's reproduction. Subclasses set the class attributes and override the hooks."""

    paper: ClassVar[str] = ""  # registry id whose `reproduce.checks` decide the verdict
    config_class: ClassVar[type[TrainConfig]] = TrainConfig
    scales: ClassVar[dict[str, TrainConfig]] = {}
    channels_last: ClassVar[bool] = False  # conv nets run faster in NHWC on GPUs

    def __init__(self, cfg: TrainConfig, ctx: Context):
        self.cfg = cfg
        self.ctx = ctx

    # --- what each recipe provides ------------------------------------------------------------
    def data_source(self) -> str:
        """Human-readable: where the data comes from at this scale."""
        raise NotImplementedError

    def setup_data(self) -> None:
        """Load (or check) the data; raise PapercliError with an actionable message if missing."""

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def configure_optimizers(self, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        raise NotImplementedError

    def train_batch(self, step: int) -> Any:
        """This rank's batch for `step` (deterministic in seed, step and rank)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {}

    def samples_in(self, batch: Any) -> int:
        return self.cfg.batch_size

    def steps_per_epoch(self) -> int | None:
        return None

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        """Metrics for the verdict; by default the last evaluation."""
        return last_eval

    def plots(self, model: nn.Module, run_dir: Path) -> None:
        """Optional sample figures (PNG) for the run directory."""

    def on_train_end(self, model: nn.Module) -> None:
        """Called on every rank after the last step (DDP tests record their shards here)."""

    @classmethod
    def claim_checks(cls) -> tuple:
        """The checks that decide the verdict: the registry entry's `reproduce.checks`."""
        from papercli.registry import Registry

        try:
            entry = Registry.load().get(cls.paper)
        except PapercliError:
            return ()
        return entry.reproduce.checks if entry.reproduce else ()


# ----------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run a papercli recipe (normally via `papercli reproduce`)."
    )
    p.add_argument("--scale", default="mini")
    p.add_argument("--steps", type=int)
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def resolve_config(recipe_cls: type[Recipe], args: argparse.Namespace) -> TrainConfig:
    if args.scale not in recipe_cls.scales:
        raise UsageError(
            f"unknown scale '{args.scale}' (this recipe has: {', '.join(recipe_cls.scales)})"
        )
    cfg = apply_overrides(recipe_cls.scales[args.scale], args.sets)
    changes: dict[str, Any] = {}
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        changes["batch_size"] = args.batch_size
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError("--steps must be at least 1")
        changes["steps"] = args.steps
    if args.no_compile:
        changes["compile"] = False
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _device(gpu: bool, local_rank: int) -> torch.device:
    if gpu:
        if not torch.cuda.is_available():
            raise UsageError(
                f"--gpu needs a CUDA device, but torch {torch.__version__} sees none "
                "(torch.cuda.is_available() is False); run without --gpu to train on the CPU"
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def recipe_name(recipe_cls: type[Recipe]) -> str:
    """'unet' for papercli.recipes.unet, also when it runs as __main__ (python -m / torchrun -m)."""
    module = sys.modules.get(recipe_cls.__module__)
    spec = getattr(module, "__spec__", None)
    name = spec.name if spec is not None else recipe_cls.__module__
    return recipe_cls.__name__.lower() if name == "__main__" else name.rsplit(".", 1)[-1]


def build_model(recipe: Recipe) -> nn.Module:
    """The recipe's model; a configuration the architecture rejects is a usage error, not a crash."""
    try:
        return recipe.build_model()
    except ValueError as exc:
        raise UsageError(f"cannot build the model: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- run directory
def _write_config(
    run_dir: Path, recipe_cls: type[Recipe], args, cfg, ctx: Context, source: str
) -> None:
    import yaml

    data = {
        "paper": recipe_cls.paper,
        "recipe": recipe_name(recipe_cls),
        "scale": args.scale,
        "seed": args.seed,
        "device": str(ctx.device),
        "world_size": ctx.world,
        "data": source,
        "config": to_dict(cfg),
        "argv": sys.argv[1:],
    }
    paths.atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(data, sort_keys=False))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temp file, then rename: a kill at any moment leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _trim_metrics(path: Path, upto_step: int) -> None:
    """On resume, drop metric lines written after the checkpoint (they will be recomputed)."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line and json.loads(line)["step"] <= upto_step
    ]
    paths.atomic_write_text(path, "".join(line + "\n" for line in kept))


# ----------------------------------------------------------------------------- progress
class Progress:
    """Rich progress bar on a terminal, plain periodic lines otherwise (logs, CI)."""

    def __init__(self, total: int, start: int, enabled: bool, log_every: int):
        self.total, self.enabled, self.log_every = total, enabled, max(1, log_every)
        self.fancy = enabled and sys.stderr.isatty()
        self._bar = None
        if self.fancy:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._task = self._bar.add_task("train", total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, loss: float, throughput: float, eta: float) -> None:
        if not self.enabled:
            return
        info = f"loss {loss:.4f}  {throughput:.1f} samples/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif step % self.log_every == 0 or step == self.total:
            print(f"step {step}/{self.total}  {info}  eta {eta:.0f}s", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextmanager
def _interrupt_flag() -> Iterator[dict[str, bool]]:
    """Ctrl-C / SIGTERM set a flag; the loop checkpoints at the end of the current step."""
    flag = {"stop": False}

    def handler(signum, frame):
        if flag["stop"]:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------- the loop
def train(recipe: Recipe, args: argparse.Namespace, source: str) -> dict[str, Any]:
    cfg, ctx = recipe.cfg, recipe.ctx
    run_dir = ctx.run_dir
    assert run_dir is not None
    ckpt_path = run_dir / CHECKPOINT
    metrics_path = run_dir / "metrics.jsonl"

    torch.manual_seed(args.seed)  # same initial weights on every rank
    recipe.setup_data()
    model = build_model(recipe).to(ctx.device)
    if recipe.channels_last and ctx.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    params = count_parameters(model)
    optimizer, scheduler = recipe.configure_optimizers(model)

    start_step, elapsed_before = 0, 0.0
    if args.resume:
        if not ckpt_path.exists():
            raise UsageError(f"--resume: no checkpoint in {run_dir}")
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_step, elapsed_before = int(state["step"]), float(state["elapsed"])
        if ctx.is_main:
            _trim_metrics(metrics_path, start_step)
    elif ctx.is_main and metrics_path.exists():
        metrics_path.unlink()

    train_model: nn.Module = model
    if ctx.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    if cfg.compile and ctx.device.type == "cuda":
        train_model = torch.compile(train_model)

    def checkpoint(step: int, elapsed: float) -> None:
        if ctx.is_main:
            save_checkpoint(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng": torch.get_rng_state(),
                    "step": step,
                    "elapsed": elapsed,
                },
            )

    progress = Progress(
        cfg.steps, start_step, enabled=ctx.is_main and not args.json, log_every=cfg.log_every
    )
    t0 = time.perf_counter()
    window_loss, window_n, window_samples, window_t = 0.0, 0, 0, time.perf_counter()
    last_eval: dict[str, float] = {}
    step = start_step
    try:
        with _interrupt_flag() as flag:
            while step < cfg.steps:
                train_model.train()
                batch = recipe.train_batch(step)
                with ctx.autocast():
                    loss = recipe.loss(train_model, batch)
                finite = torch.isfinite(loss.detach()).float()
                if ctx.world > 1:
                    torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
                if finite.item() == 0:
                    raise _NonFinite(step, float(loss.detach()))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:  # per model: arms trained side by side are clipped separately
                    for part in model.values() if isinstance(model, nn.ModuleDict) else [model]:
                        torch.nn.utils.clip_grad_norm_(part.parameters(), cfg.grad_clip)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                step += 1
                window_loss += float(loss.detach())
                window_n += 1
                window_samples += recipe.samples_in(batch) * ctx.world
                now = time.perf_counter()
                throughput = window_samples / max(now - window_t, 1e-9)
                done = now - t0
                eta = done / max(step - start_step, 1) * (cfg.steps - step)
                progress.update(step, window_loss / window_n, throughput, eta)

                if step % cfg.eval_every == 0 or step == cfg.steps:
                    last_eval = _evaluate(recipe, model, ctx)
                    record = {
                        "step": step,
                        "train_loss": window_loss / window_n,
                        "samples_per_s": throughput,
                        "elapsed": elapsed_before + done,
                        **last_eval,
                    }
                    if ctx.is_main:
                        with open(metrics_path, "a") as fh:
                            fh.write(json.dumps(record) + "\n")
                        progress.note(
                            "eval "
                            + "  ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step")
                            + f"  (step {step})"
                        )
                    checkpoint(step, elapsed_before + done)
                    window_loss, window_n, window_samples, window_t = 0.0, 0, 0, time.perf_counter()
                if flag["stop"]:
                    checkpoint(step, elapsed_before + time.perf_counter() - t0)
                    raise _Interrupted(step)
    finally:
        progress.close()

    seconds = elapsed_before + time.perf_counter() - t0
    recipe.on_train_end(model)
    metrics = recipe.final_metrics(model, last_eval) if ctx.is_main else {}
    if ctx.is_main:
        recipe.plots(model, run_dir)
        _plot_curves(metrics_path, run_dir)
    outcome = {"seconds": seconds, "params": params, "metrics": metrics, "steps": step}
    if ctx.device.type == "cuda":
        outcome["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 2)
    return outcome


def _evaluate(recipe: Recipe, model: nn.Module, ctx: Context) -> dict[str, float]:
    """Rank 0 evaluates the unwrapped model; the others wait (evaluation is cheap next to training)."""
    metrics: dict[str, float] = {}
    if ctx.is_main:
        model.eval()
        with torch.no_grad(), ctx.autocast():
            metrics = {k: float(v) for k, v in recipe.evaluate(model).items()}
        model.train()
    if ctx.world > 1:
        torch.distributed.barrier()
    return metrics


class _NonFinite(Exception):
    def __init__(self, step: int, value: float):
        self.step, self.value = step, value


class _Interrupted(Exception):
    def __init__(self, step: int):
        self.step = step


def _plot_curves(metrics_path: Path, run_dir: Path) -> None:
    """Loss and metric curves as PNG (skipped quietly if matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = (
        [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
        if metrics_path.exists()
        else []
    )
    if not rows:
        return
    keys = [k for k in rows[-1] if k not in ("step", "elapsed", "samples_per_s")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, key in zip(axes[0], keys, strict=True):
        ax.plot(steps, [r.get(key, math.nan) for r in rows], marker="o", markersize=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png", dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- entry point
def _distributed_env() -> tuple[int, int, int]:
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def _error(message: str, code: int) -> int:
    print(f"papercli: error: {message}", file=sys.stderr, flush=True)
    return code


def main(recipe_cls: type[Recipe], argv: list[str] | None = None) -> int:
    """What `python -m papercli.recipes.<name>` runs. Returns the process exit code."""
    try:
        return _main(recipe_cls, argv)
    except PapercliError as exc:
        return _error(str(exc), exc.exit_code)


def _main(recipe_cls: type[Recipe], argv: list[str] | None) -> int:
    args = parse_args(argv)
    cfg = resolve_config(recipe_cls, args)
    rank, world, local_rank = _distributed_env()
    device = _device(args.gpu, local_rank)
    ctx = Context(
        device=device,
        seed=args.seed,
        rank=rank,
        world=world,
        local_rank=local_rank,
        data_path=args.data,
        amp_dtype=torch.bfloat16 if device.type == "cuda" else None,
    )
    recipe = recipe_cls(cfg, ctx)
    if args.epochs is not None:
        per_epoch = recipe.steps_per_epoch()
        if not per_epoch:
            raise UsageError("this recipe counts in steps; use --steps")
        cfg = dataclasses.replace(cfg, steps=max(1, math.ceil(args.epochs * per_epoch / world)))
        recipe.cfg = cfg
    source = recipe.data_source()

    if args.dry_run:
        with torch.device("meta"):  # count parameters without allocating them
            params = count_parameters(build_model(recipe))
        plan = {
            "paper": recipe_cls.paper,
            "recipe": recipe_name(recipe_cls),
            "scale": args.scale,
            "device": str(device),
            "world_size": world,
            "params": params,
            "data": source,
            "config": to_dict(cfg),
        }
        print(json.dumps(plan, indent=2))
        return 0

    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    run_dir = args.out or new_run_dir(recipe_cls.paper)
    ctx.run_dir = run_dir
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_config(run_dir, recipe_cls, args, cfg, ctx, source)
    try:
        outcome = train(recipe, args, source)
    except _NonFinite as exc:
        if ctx.is_main:
            _write_failed(
                run_dir, recipe_cls, args, ctx, f"loss became {exc.value} at step {exc.step + 1}"
            )
        last = run_dir / CHECKPOINT
        where = (
            f"the last good checkpoint is {last}"
            if last.exists()
            else "no checkpoint was written yet"
        )
        return _error(
            f"loss became {exc.value} at step {exc.step + 1}; training stopped, {where}", EXIT_NAN
        )
    except _Interrupted as exc:
        return _error(
            f"interrupted at step {exc.step}; checkpoint saved — continue with --resume --out {run_dir}",
            EXIT_INTERRUPTED,
        )
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if not ctx.is_main:
        return 0
    record = _result_record(recipe_cls, args, ctx, outcome)
    claims.write_result(run_dir, record)
    if args.json:
        print(json.dumps(record, indent=2, default=float))
    return 0 if record["verdict"] == claims.REPRODUCED else 1


def _base_record(recipe_cls: type[Recipe], args, ctx: Context) -> dict[str, Any]:
    return {
        "paper": recipe_cls.paper,
        "recipe": recipe_name(recipe_cls),
        "scale": args.scale,
        "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
        "world_size": ctx.world,
        "seed": args.seed,
        "torch": torch.__version__,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": str(ctx.run_dir),
    }


def _result_record(recipe_cls, args, ctx, outcome) -> dict[str, Any]:
    # wall time is a claim of the mini scale ("minutes on a laptop"), so checks may name `seconds`
    measured = {**outcome["metrics"], "seconds": outcome["seconds"]}
    rows = claims.evaluate_checks(recipe_cls.claim_checks(), measured, args.scale)
    return {
        **_base_record(recipe_cls, args, ctx),
        "seconds": round(outcome["seconds"], 2),
        "params": outcome["params"],
        "steps": outcome["steps"],
        "metrics": outcome["metrics"],
        "peak_memory_gib": outcome.get("peak_memory_gib"),
        "checks": rows,
        "verdict": claims.verdict(rows),
    }


def _write_failed(run_dir: Path, recipe_cls, args, ctx, error: str) -> None:
    rows = claims.evaluate_checks(recipe_cls.claim_checks(), {}, args.scale)
    claims.write_result(
        run_dir,
        {
            **_base_record(recipe_cls, args, ctx),
            "seconds": None,
            "params": None,
            "metrics": {},
            "checks": rows,
            "verdict": claims.NOT_REPRODUCED,
            "error": error,
        },
    )


def run(recipe_cls: type[Recipe]) -> None:
    sys.exit(main(recipe_cls))


__all__ = [
    "Context",
    "Recipe",
    "TrainConfig",
    "count_parameters",
    "load_checkpoint",
    "main",
    "run",
    "save_checkpoint",
]
