"""Resolve a paper to its recipe, build the command that trains it, and run it in a new process.

One process: `python -m papercli.recipes.<name> …`. Several (GPUs, or CPU processes with gloo) or
several nodes: the same module under `python -m torch.distributed.run` (torchrun), never a launcher of
our own. This module does not import torch, so `papercli reproduce --help` and argument errors are fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from papercli import paths
from papercli.errors import UsageError
from papercli.registry import Paper, Registry
from papercli.reproduce.catalog import recipe_names
from papercli.reproduce.runs import new_run_dir


@dataclass
class LaunchOptions:
    scale: str = "mini"
    gpu: bool = False
    gpus: int = 1  # processes per node on GPU
    procs: int = 1  # processes per node on CPU (gloo), for testing DDP without GPUs
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    epochs: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    sets: list[str] = field(default_factory=list)
    data: Path | None = None
    out: Path | None = None
    resume: bool = False
    seed: int = 0
    dry_run: bool = False
    json: bool = False
    compile: bool = True


def recipe_for(paper: Paper, registry: Registry) -> str:
    if paper.reproduce is None:
        have = sorted(p.id for p in registry.papers if p.reproduce)
        raise UsageError(
            f"'{paper.id}' has no recipe yet (papers with one: {', '.join(have) or 'none'})"
        )
    name = paper.reproduce.recipe
    if name not in recipe_names():
        raise UsageError(f"'{paper.id}' names recipe '{name}', which papercli does not have")
    return name


def latest_run(paper_id: str) -> Path | None:
    """The newest run directory of a paper that holds a checkpoint (what --resume continues)."""
    root = paths.runs_dir()
    if not root.is_dir():
        return None
    candidates = [d for d in root.glob(f"{paper_id}-*") if (d / "checkpoint.pt").exists()]
    return max(candidates, key=lambda d: d.stat().st_mtime, default=None)


def resolve_run_dir(paper: Paper, opts: LaunchOptions) -> Path:
    if opts.out is not None:
        return opts.out.expanduser().resolve()
    if opts.resume:
        found = latest_run(paper.id)
        if found is None:
            raise UsageError(
                f"--resume: no earlier run of '{paper.id}' with a checkpoint under {paths.runs_dir()}"
            )
        return found
    return new_run_dir(paper.id)


def build_command(recipe: str, opts: LaunchOptions, run_dir: Path | None) -> list[str]:
    """The exact command line that trains `recipe` with these options."""
    if opts.gpus < 1 or opts.procs < 1 or opts.nnodes < 1:
        raise UsageError("--gpus, --procs and --nnodes must be at least 1")
    if opts.gpus > 1 and opts.procs > 1:
        raise UsageError("--gpus and --procs exclude each other (GPU processes or CPU processes)")
    gpu = opts.gpu or opts.gpus > 1
    module = f"papercli.recipes.{recipe}"
    args = ["--scale", opts.scale, "--seed", str(opts.seed)]
    if gpu:
        args.append("--gpu")
    for flag, value in (
        ("--epochs", opts.epochs),
        ("--steps", opts.steps),
        ("--batch-size", opts.batch_size),
        ("--data", opts.data),
    ):
        if value is not None:
            args += [flag, str(value)]
    for item in opts.sets:
        args += ["--set", item]
    if run_dir is not None:
        args += ["--out", str(run_dir)]
    if opts.resume:
        args.append("--resume")
    if opts.dry_run:
        args.append("--dry-run")
    if opts.json:
        args.append("--json")
    if not opts.compile:
        args.append("--no-compile")

    per_node = opts.gpus if gpu else opts.procs
    if per_node == 1 and opts.nnodes == 1:
        return [sys.executable, "-m", module, *args]
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(per_node),
        "--nnodes",
        str(opts.nnodes),
    ]
    if opts.nnodes == 1:
        launcher.append("--standalone")
    else:
        launcher += [
            "--node_rank",
            str(opts.node_rank),
            "--master_addr",
            opts.master_addr,
            "--master_port",
            str(opts.master_port),
        ]
    return [*launcher, "-m", module, *args]


def run(command: list[str]) -> int:
    """Run the training process in the foreground. Ctrl-C reaches it too (same process group);
    we wait while it writes its checkpoint, then pass its exit code on."""
    proc = subprocess.Popen(command)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue


def dry_run(command: list[str]) -> dict:
    """Ask the recipe process for its plan (config, params, data, device) without training."""
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(proc.returncode)
    plan = json.loads(proc.stdout)
    plan["command"] = command
    return plan
