"""The recipe process: what `python -m papercli.recipes.<name>` (or torchrun … -m) runs.

It parses the options `papercli reproduce` rendered (`RunOptions`, declared once), resolves the
paper's config, takes the run directory's lock, trains through `loop.train`, and writes the result
record. Every failure a user can cause ends in one line on stderr and an exit code:
0 reproduced, 1 not reproduced or a runtime error, 2 usage, 3 non-finite loss,
130/143 interrupted by SIGINT/SIGTERM (after a checkpoint).

Recipes import `Recipe`, `TrainConfig`, `Context` and `run` from here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from papercli import paths
from papercli.errors import PapercliError, UsageError
from papercli.reproduce import checkpoint, claims, journal
from papercli.reproduce.config import apply_overrides, to_dict, validate
from papercli.reproduce.dispatch import set_parent_death_signal
from papercli.reproduce.lock import RunLock, held_by_parent
from papercli.reproduce.loop import Interrupted, NonFinite, train
from papercli.reproduce.options import RunOptions
from papercli.reproduce.params import meta_counts
from papercli.reproduce.recipe import (
    Context,
    Recipe,
    TrainConfig,
    build_model,
    steps_for_epochs,
)
from papercli.reproduce.runs import new_run_dir, prepare_run_dir, resume_options

EXIT_NAN = 3


# ----------------------------------------------------------------------------- configuration
def recipe_name(recipe_cls: type[Recipe]) -> str:
    """'unet' for papercli.recipes.unet (also when it runs as __main__ under python -m / torchrun
    -m); the dotted module path for a recipe that lives outside papercli."""
    module = sys.modules.get(recipe_cls.__module__)
    spec = getattr(module, "__spec__", None)
    name = spec.name if spec is not None else recipe_cls.__module__
    if name == "__main__":
        return recipe_cls.__name__.lower()
    return name.removeprefix("papercli.recipes.")


def resolve_config(recipe_cls: type[Recipe], opts: RunOptions, paper: str) -> TrainConfig:
    """The scale's config for this paper, with --set, --steps, --batch-size and --no-compile on
    top; every bounded field is range-checked here, once for all recipes."""
    cfg = apply_overrides(recipe_cls.config_for(opts.scale, paper), opts.sets)
    changes: dict[str, Any] = {}
    if opts.batch_size is not None:
        changes["batch_size"] = opts.batch_size
    if opts.steps is not None:
        changes["steps"] = opts.steps
    if opts.no_compile:
        changes["compile"] = False
    cfg = dataclasses.replace(cfg, **changes) if changes else cfg
    validate(cfg)
    return cfg


def _device(gpu: bool, local_rank: int) -> torch.device:
    if gpu:
        if not torch.cuda.is_available():
            raise UsageError(
                f"--gpu needs a CUDA device, but torch {torch.__version__} sees none "
                "(torch.cuda.is_available() is False); run without --gpu to train on the CPU"
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _distributed_env() -> tuple[int, int, int]:
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


# ----------------------------------------------------------------------------- entry point
def main(recipe_cls: type[Recipe], argv: list[str] | None = None) -> int:
    """Returns the process exit code; never lets a traceback reach the user."""
    try:
        return _main(recipe_cls, sys.argv[1:] if argv is None else argv)
    except PapercliError as exc:
        return _error(str(exc), exc.exit_code)
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second one while stopping
        return _error("interrupted: stopped at once (any earlier checkpoint is kept)", 130)
    except OSError as exc:  # disk full, permissions … while writing run files
        where = f": {exc.filename}" if exc.filename else ""
        return _error(f"{exc.strerror or exc}{where}", 1)


def _error(message: str, code: int) -> int:
    print(f"papercli: error: {message}", file=sys.stderr, flush=True)
    return code


def _main(recipe_cls: type[Recipe], argv: list[str]) -> int:
    opts = RunOptions.from_argv(argv)
    paper = RunOptions.paper_from_argv(argv) or recipe_cls.paper
    run_dir = (opts.out or new_run_dir(paper)).expanduser().absolute()
    if opts.resume and not held_by_parent(run_dir):  # papercli already merged the options
        opts = resume_options(paper, opts, run_dir)
    cfg = resolve_config(recipe_cls, opts, paper)
    rank, world, local_rank = _distributed_env()
    if world > 1:
        set_parent_death_signal()  # torchrun starts workers in sessions of their own
    device = _device(opts.gpu, local_rank)
    ctx = Context(
        device=device,
        seed=opts.seed,
        paper=paper,
        rank=rank,
        world=world,
        local_rank=local_rank,
        data_path=opts.data,
        amp_dtype=torch.bfloat16 if device.type == "cuda" else None,
    )
    ctx.split_batch(cfg.batch_size, cfg.micro_batch_size)
    recipe = recipe_cls(cfg, ctx)
    if opts.epochs is not None:
        per_epoch = recipe.steps_per_epoch()
        if not per_epoch:
            raise UsageError("this recipe counts in steps; use --steps")
        cfg = dataclasses.replace(cfg, steps=steps_for_epochs(opts.epochs, per_epoch))
        recipe.cfg = cfg
    checks = recipe_cls.claim_checks(paper)  # a registry problem stops us before training
    source = recipe.data_source()
    run = {
        "paper": paper,
        "recipe": recipe_name(recipe_cls),
        "scale": opts.scale,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": world,
        "global_batch": cfg.batch_size,
        "micro_batch": ctx.micro_batch,
        "accum_steps": ctx.accum_steps,
        "seed": opts.seed,
    }

    if opts.dry_run:
        counts = meta_counts(build_model, recipe)
        plan = {
            **run,
            "params": counts["total"],
            "trainable_params": counts["trainable"],
            "arm_params": counts.get("arms"),
            "data": source,
            "config": to_dict(cfg),
        }
        print(json.dumps(plan, indent=2))
        return 0

    lock = RunLock(run_dir)
    if rank == 0:
        prepare_run_dir(run_dir)
        if not held_by_parent(run_dir):
            lock.acquire()
    try:
        return _run(recipe, opts, run, run_dir, cfg, source, checks)
    finally:
        lock.release()


def _run(recipe, opts, run, run_dir, cfg, source, checks) -> int:
    ctx = recipe.ctx
    if ctx.world > 1:
        if ctx.device.type == "cuda":
            torch.cuda.set_device(ctx.device)
        torch.distributed.init_process_group(
            backend="nccl" if ctx.device.type == "cuda" else "gloo"
        )
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    ctx.run_dir = run_dir

    def ready() -> None:
        """Data loaded and model built: only now does the run directory get its files, so a
        run refused on the way leaves nothing behind."""
        if not ctx.is_main:
            return
        if not opts.resume:  # a fresh run: nothing of an earlier run in this directory survives
            for stale in (checkpoint.CHECKPOINT, "result.json"):
                (run_dir / stale).unlink(missing_ok=True)
            _write_config(run_dir, run, opts, cfg, source)
        if not opts.json:
            print(f"run directory: {run_dir}", file=sys.stderr, flush=True)

    run = {**run, "torch": str(torch.__version__), "run_dir": str(run_dir)}
    try:
        outcome = train(
            recipe,
            run_dir,
            resume=opts.resume,
            quiet=opts.json,
            recipe_name=run["recipe"],
            on_ready=ready,
        )
    except NonFinite as exc:
        message = f"loss became {exc.value} at step {exc.step + 1}"
        if ctx.is_main:
            _finish(run_dir, run, checks, error=message)
        last = run_dir / checkpoint.CHECKPOINT
        where = (
            f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written"
        )
        return _error(f"{message}; training stopped, {where}", EXIT_NAN)
    except Interrupted as exc:
        if not ctx.is_main:  # one message, from rank 0
            return 128 + exc.signum
        return _error(
            f"interrupted at step {exc.step}; checkpoint saved — continue with "
            f"papercli reproduce {run['paper']} --resume --out {run_dir}",
            128 + exc.signum,
        )
    finally:
        if ctx.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if not ctx.is_main:
        return 0
    record = _finish(
        run_dir,
        run,
        checks,
        seconds=outcome["seconds"],
        params=outcome["params"],
        steps=outcome["steps"],
        metrics=outcome["metrics"],
        peak_memory_gib=outcome.get("peak_memory_gib"),
    )
    if outcome["signum"]:  # a signal after the last step: the result stands, skip the plots
        return _error(
            "interrupted after training finished; result.json is written", 128 + outcome["signum"]
        )
    recipe.plots(outcome["model"], run_dir)
    journal.plot_curves(outcome["metrics_path"], run_dir / "curves.png")
    if opts.json:
        print(json.dumps(record, indent=2, default=float))
    return 0 if record["verdict"] == claims.REPRODUCED else 1


def _write_config(run_dir: Path, run: dict, opts: RunOptions, cfg, source: str) -> None:
    import yaml

    data = {
        **run,
        "data": source,
        "options": opts.recorded(),
        "config": to_dict(cfg),
        "argv": sys.argv[1:],
    }
    paths.atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(data, sort_keys=False))


def _finish(run_dir: Path, run: dict, checks, **outcome) -> dict[str, Any]:
    record = claims.result_record(
        {**run, "finished": datetime.now(UTC).isoformat(timespec="seconds")},
        checks,
        seconds=outcome.get("seconds"),
        params=outcome.get("params"),
        steps=outcome.get("steps"),
        metrics=outcome.get("metrics", {}),
        error=outcome.get("error"),
        peak_memory_gib=outcome.get("peak_memory_gib"),
    )
    claims.write_result(run_dir, record)
    return record


def run(recipe_cls: type[Recipe]) -> None:
    sys.exit(main(recipe_cls))


__all__ = ["Context", "Recipe", "TrainConfig", "main", "run"]
