"""The training loop every recipe runs through, and the `Trainer` a recipe's `train_step` uses.

The loop owns: wrapping for DDP and torch.compile, resume from a checkpoint, the step counter,
periodic evaluation (on a forked RNG, so evaluating never changes training), metrics.jsonl,
atomic checkpoints, progress, Ctrl-C/SIGTERM (finish the step, checkpoint, stop) and the outcome.
The `Trainer` owns what a step needs whatever its shape: gradient accumulation over micro-batches
(with DDP's gradient sync only on the last), the NaN guard, clipping, optimizer and schedule steps.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from papercli.errors import UsageError
from papercli.reproduce import checkpoint, journal
from papercli.reproduce.params import parameter_counts
from papercli.reproduce.progress import Progress
from papercli.reproduce.recipe import Recipe, build_model


class NonFinite(Exception):
    def __init__(self, step: int, value: float):
        self.step, self.value = step, value


class Interrupted(Exception):
    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum


@dataclass
class OptimizerSlot:
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    params: list[nn.Parameter] | None = None  # in model order, for clipping


def optimizer_slots(configured: Any, model: nn.Module) -> dict[str, OptimizerSlot]:
    """Normalise what `configure_optimizers` returned into named slots, in stepping order."""
    if isinstance(configured, torch.optim.Optimizer | tuple):
        configured = {"main": configured}
    order = {id(p): i for i, p in enumerate(model.parameters())}
    slots = {}
    for name, entry in configured.items():
        opt, sched = entry if isinstance(entry, tuple) else (entry, None)
        params = sorted(
            (p for group in opt.param_groups for p in group["params"]),
            key=lambda p: order.get(id(p), len(order)),
        )
        slots[name] = OptimizerSlot(opt, sched, params)
    return slots


def wrap_for_training(
    model: nn.Module, ctx, compile_model: bool, find_unused: bool = False
) -> nn.Module:
    """DDP (and torch.compile on GPU) around the model — around each part of a ModuleDict
    separately, so that arms or a GAN's two networks sync and compile independently.
    `find_unused`: some parameters may get no gradient in a step (an MoE expert no token was
    routed to); DDP then looks for them after each backward pass, at some cost."""

    def wrap(module: nn.Module) -> nn.Module:
        if ctx.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            module = DistributedDataParallel(
                module, device_ids=ids, find_unused_parameters=find_unused
            )
        if compile_model and ctx.device.type == "cuda":
            module = torch.compile(module)
        return module

    if isinstance(model, nn.ModuleDict):
        return type(model)({name: wrap(part) for name, part in model.items()})
    return wrap(model)


def _ddp_modules(train_model: nn.Module) -> list[nn.Module]:
    from torch.nn.parallel import DistributedDataParallel

    return [m for m in train_model.modules() if isinstance(m, DistributedDataParallel)]


class Trainer:
    """What a recipe's `train_step` calls: `accumulate` then `step_optimizers`, once or more."""

    def __init__(self, recipe: Recipe, model: nn.Module, train_model: nn.Module, slots):
        self.recipe, self.model, self.train_model, self.slots = recipe, model, train_model, slots
        self.ctx, self.cfg = recipe.ctx, recipe.cfg
        self.units = 0  # units (recipe.unit) seen by this process since the last reset
        self._counted_step = -1  # a step's batches count once, however many passes use them
        self._ddp = _ddp_modules(train_model) if self.ctx.world > 1 else []

    def accumulate(self, step: int, loss_fn: Callable[[nn.Module, Any], Any]) -> dict[str, float]:
        """Zero the gradients, then for each micro-batch of `step`: loss_fn(model, batch) ->
        loss or named losses, NaN guard, backward of their sum / accumulation steps. Returns the
        mean of each named loss (and `loss`, their sum) over the micro-batches."""
        accum = self.ctx.accum_steps
        count, self._counted_step = step != self._counted_step, step
        self.model.zero_grad(set_to_none=True)
        totals: dict[str, torch.Tensor] = {}
        for micro in range(accum):
            batch = self.recipe.train_batch(step, micro)
            if count:
                self.units += self.recipe.units_in(batch)
            with ExitStack() as stack:
                if micro < accum - 1:  # gradients are all-reduced once, on the last micro-batch
                    for ddp in self._ddp:
                        stack.enter_context(ddp.no_sync())
                with self.ctx.autocast():
                    out = loss_fn(self.train_model, batch)
                losses = out if isinstance(out, dict) else {"loss": out}
                if not losses:
                    raise UsageError("the recipe computed no loss (is its list of arms empty?)")
                total = sum(losses.values()) if len(losses) > 1 else next(iter(losses.values()))
                self._guard(step, total)
                (total if accum == 1 else total / accum).backward()
            named = {"loss": total, **losses} if "loss" not in losses else losses
            for key, value in named.items():
                value = value.detach() if accum == 1 else value.detach() / accum
                totals[key] = totals[key] + value if key in totals else value
        return {k: float(v) for k, v in totals.items()}

    def _guard(self, step: int, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).float()
        if self.ctx.world > 1:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if finite.item() == 0:
            raise NonFinite(step, float(loss.detach()))

    def step_optimizers(self, names: list[str] | None = None) -> None:
        """Clip (per optimizer, `grad_clip`), step and schedule the named optimizers, in order."""
        for name in names or list(self.slots):
            slot = self.slots[name]
            if self.cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(slot.params, self.cfg.grad_clip)
            slot.optimizer.step()
            if slot.scheduler is not None:
                slot.scheduler.step()


@contextmanager
def interrupt_flag() -> Iterator[dict[str, int]]:
    """Ctrl-C / SIGTERM record the signal; the loop checkpoints at the end of the current step.
    A second signal stops at once (KeyboardInterrupt)."""
    flag = {"signum": 0}

    def handler(signum, frame):
        if flag["signum"]:
            raise KeyboardInterrupt
        flag["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _evaluate(recipe: Recipe, model: nn.Module) -> dict[str, float]:
    """Rank 0 evaluates the unwrapped model on a forked RNG (so evaluation, however random,
    never changes the training that follows); the other ranks wait."""
    ctx = recipe.ctx
    metrics: dict[str, float] = {}
    if ctx.is_main:
        model.eval()
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), ctx.autocast():
            metrics = {k: float(v) for k, v in recipe.evaluate(model).items()}
        model.train()
    if ctx.world > 1:
        torch.distributed.barrier()
    return metrics


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore(state, model, slots, recipe, path: Path, recipe_name: str) -> tuple[int, float]:
    if state.get("recipe") != recipe_name:
        raise checkpoint.CheckpointError(
            f"checkpoint {path} was written by recipe '{state.get('recipe')}', not '{recipe_name}'"
        )
    checkpoint.check_fits(state["model"], model, path)
    model.load_state_dict(state["model"])
    if set(state["optimizers"]) != set(slots):
        raise checkpoint.CheckpointError(
            f"checkpoint {path} has optimizers {sorted(state['optimizers'])}, this run "
            f"{sorted(slots)}: was it written with other settings?"
        )
    try:
        for name, slot in slots.items():
            slot.optimizer.load_state_dict(state["optimizers"][name])
            if slot.scheduler is not None and state["schedulers"].get(name) is not None:
                slot.scheduler.load_state_dict(state["schedulers"][name])
    except (ValueError, KeyError) as exc:
        raise checkpoint.CheckpointError(
            f"checkpoint {path}: optimizer state does not fit this run ({exc})"
        ) from None
    torch.set_rng_state(state["rng"]["cpu"])
    if "cuda" in state["rng"] and recipe.ctx.device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"], recipe.ctx.device)
    recipe.load_state_dict(state.get("recipe_state") or {})
    return int(state["step"]), float(state["elapsed"])


def _stop_requested(flag: dict[str, int], ctx) -> int:
    """The signal to stop on, agreed by every rank (the largest any rank saw): ranks must leave
    the loop at the same step, or one would wait for the others in the next all-reduce."""
    if ctx.world == 1:
        return flag["signum"]
    seen = torch.tensor([flag["signum"]], dtype=torch.int64)
    torch.distributed.all_reduce(seen, op=torch.distributed.ReduceOp.MAX)
    return int(seen.item())


def train(
    recipe: Recipe,
    run_dir: Path,
    *,
    resume: bool,
    quiet: bool,
    recipe_name: str,
    on_ready: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Train to `cfg.steps` (from the checkpoint when resuming); return the outcome for the
    result record. Raises NonFinite or Interrupted (after checkpointing) to stop early."""
    cfg, ctx = recipe.cfg, recipe.ctx
    ckpt_path = run_dir / checkpoint.CHECKPOINT
    metrics_path = run_dir / journal.METRICS

    recipe.ensure_data()
    model = build_model(recipe).to(ctx.device)
    if recipe.channels_last and ctx.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    counts = parameter_counts(model)
    slots = optimizer_slots(recipe.configure_optimizers(model), model)

    start_step, elapsed_before = 0, 0.0
    if resume:
        state = checkpoint.load(ckpt_path)
        start_step, elapsed_before = _restore(state, model, slots, recipe, ckpt_path, recipe_name)
        if ctx.is_main:
            journal.trim(metrics_path, start_step)
    elif ctx.is_main and metrics_path.exists():
        metrics_path.unlink()
    on_ready()

    train_model = wrap_for_training(model, ctx, cfg.compile, recipe.ddp_find_unused)
    trainer = Trainer(recipe, model, train_model, slots)

    def save(step: int, elapsed: float, last_eval: dict[str, float]) -> None:
        if ctx.is_main:
            checkpoint.save(
                ckpt_path,
                {
                    "paper": ctx.paper,
                    "recipe": recipe_name,
                    "step": step,
                    "elapsed": elapsed,
                    "model": model.state_dict(),
                    "optimizers": {n: s.optimizer.state_dict() for n, s in slots.items()},
                    "schedulers": {
                        n: s.scheduler.state_dict() if s.scheduler is not None else None
                        for n, s in slots.items()
                    },
                    "rng": _rng_state(ctx.device),
                    "recipe_state": recipe.state_dict(),
                    "last_eval": last_eval,
                },
            )

    progress = Progress(
        cfg.steps,
        start_step,
        enabled=ctx.is_main and not quiet,
        log_every=cfg.log_every,
        unit=recipe.unit,
    )
    t0 = time.perf_counter()
    window: dict[str, float] = {}
    window_n, window_t = 0, time.perf_counter()
    last_eval: dict[str, float] = {}
    evaluated = False  # on every rank alike (only rank 0's metrics are non-empty)
    step = start_step
    with interrupt_flag() as flag:
        try:
            while step < cfg.steps:
                train_model.train()
                logged = recipe.train_step(step, trainer)
                step += 1
                for key, value in logged.items():
                    window[key] = window.get(key, 0.0) + value
                window_n += 1
                now = time.perf_counter()
                throughput = trainer.units * ctx.world / max(now - window_t, 1e-9)
                done = now - t0
                eta = done / max(step - start_step, 1) * (cfg.steps - step)
                mean_loss = window.get("loss", 0.0) / window_n
                progress.update(step, mean_loss, throughput, eta)

                if step % cfg.eval_every == 0 or step == cfg.steps:
                    last_eval, evaluated = _evaluate(recipe, model), True
                    record = {
                        "step": step,
                        **{f"train_{k}": v / window_n for k, v in window.items()},
                        f"{recipe.unit}_per_s": throughput,
                        "elapsed": elapsed_before + done,
                        **last_eval,
                    }
                    if ctx.is_main:
                        journal.append(metrics_path, record)
                        progress.note(
                            "eval "
                            + "  ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step")
                            + f"  (step {step})"
                        )
                    save(step, elapsed_before + done, last_eval)
                    window, window_n, window_t = {}, 0, time.perf_counter()
                    trainer.units = 0
                signum = _stop_requested(flag, ctx)
                if signum and step < cfg.steps:
                    save(step, elapsed_before + time.perf_counter() - t0, last_eval)
                    raise Interrupted(step, signum)
        finally:
            progress.close()

        seconds = elapsed_before + time.perf_counter() - t0
        if not evaluated:  # resumed a run whose training had finished: evaluate its last state,
            last_eval = _evaluate(recipe, model)
            seconds = elapsed_before  # keeping the training time it had (the verdict may use it)
        recipe.on_train_end(model)
        metrics = recipe.final_metrics(model, last_eval) if ctx.is_main else {}
        outcome: dict[str, Any] = {
            "seconds": seconds,
            "params": counts,
            "metrics": metrics,
            "steps": step,
            "signum": flag["signum"],
            "model": model,
            "metrics_path": metrics_path,
        }
    if ctx.device.type == "cuda":
        outcome["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 2)
    return outcome
