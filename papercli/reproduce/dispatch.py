"""`papercli reproduce`: resolve a paper to its recipe, build the command that trains it, run it.

One process: `python -m papercli.recipes.<name> …`. Several (GPUs, or CPU processes with gloo) or
several nodes: the same module under `python -m torch.distributed.run` (torchrun), never a launcher
of our own. This module does not import torch, so `--help` and argument errors are fast.

The training process runs in its own process group. This process holds the run directory's lock
for it, forwards SIGINT and SIGTERM to the whole group (torchrun passes them on to its workers),
waits while the checkpoint is written, exits 130/143, and leaves no process of the group behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from papercli import paths
from papercli.errors import UsageError
from papercli.registry import MODULE_PATH_RE, Paper, Registry
from papercli.reproduce.catalog import recipe_names
from papercli.reproduce.lock import HELD_ENV, LOCK_NAME, RunLock
from papercli.reproduce.options import RunOptions
from papercli.reproduce.runs import (
    latest_run,
    new_run_dir,
    prepare_run_dir,
    resume_options,
)

# import name -> what it is, for the training half of papercli (pyproject's `train` extra)
TRAINING_MODULES = {
    "torch": "PyTorch",
    "numpy": "NumPy",
    "safetensors": "safetensors",
    "scipy": "SciPy",
    "sklearn": "scikit-learn",
}
INSTALL_TRAIN = "pip install 'papercli[train]'"


def require_training_extras() -> None:
    """On the light install (no torch …) say what to install, instead of a ModuleNotFoundError."""
    missing = []
    for module, name in TRAINING_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or blocked package counts as missing
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise UsageError(
            f"reproducing papers needs the training extras (missing: {', '.join(missing)}): "
            f"{INSTALL_TRAIN}"
        )


def recipe_module(paper: Paper, registry: Registry) -> str:
    """The module that trains `paper`: papercli.recipes.<recipe>, or a dotted module path of the
    user's own (a recipe outside papercli, e.g. `mylab.recipes.unet_variant`)."""
    if paper.reproduce is None:
        have = sorted(p.id for p in registry.papers if p.reproduce)
        raise UsageError(
            f"'{paper.id}' has no recipe yet (papers with one: {', '.join(have) or 'none'})"
        )
    name = paper.reproduce.recipe
    if name in recipe_names():
        return f"papercli.recipes.{name}"
    if MODULE_PATH_RE.fullmatch(name):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            return name
    raise UsageError(f"'{paper.id}' names recipe '{name}', which papercli cannot find")


def build_command(module: str, paper_id: str, opts: RunOptions, run_dir: Path | None) -> list[str]:
    """The exact command line that trains `module` for `paper_id` with these options."""
    gpu = opts.gpu or opts.gpus > 1
    args = ["--paper", paper_id, *opts.to_argv()]
    if gpu and "--gpu" not in args:
        args.append("--gpu")
    if run_dir is not None and "--out" not in args:
        args += ["--out", str(run_dir)]
    elif run_dir is not None:
        args[args.index("--out") + 1] = str(run_dir)
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


def resolve_run_dir(paper: Paper, opts: RunOptions) -> Path:
    if opts.out is not None:
        return opts.out.expanduser().absolute()
    if opts.resume:
        found = latest_run(paper.id)
        if found is None:
            raise UsageError(
                f"--resume: no earlier run of '{paper.id}' with a checkpoint under {paths.runs_dir()}"
            )
        return found
    return new_run_dir(paper.id)


def set_parent_death_signal() -> None:
    """If this process's parent dies (even by kill -9), send this process SIGTERM, so that it
    checkpoints and stops instead of training on as an orphan (Linux; elsewhere a no-op)."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_setup() -> None:
    """In the training process, before exec: default signal dispositions (a papercli started
    with `&` inherits SIGINT ignored, which would make Ctrl-C forwarding useless), and SIGTERM
    when papercli dies."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    set_parent_death_signal()


def run(command: list[str], lock: RunLock) -> int:
    """Run the training process group in the foreground and return its exit code, or 130/143
    when papercli was interrupted. SIGINT/SIGTERM are forwarded to the whole group; a second one
    is forwarded too (the recipe then stops at once). The locked run-directory descriptor is
    inherited, so the lock stays held while training runs, even if papercli is killed."""
    env = {**os.environ, HELD_ENV: str(lock.run_dir)}
    proc = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,  # its own process group: we decide what reaches it
        preexec_fn=_child_setup,
        pass_fds=(lock.fd,),
    )
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _reap_group(proc.pid)
    if received:
        return 128 + received[0]
    return code if code >= 0 else 128 - code  # killed by a signal: shell convention


def _reap_group(pgid: int) -> None:
    """Leave nothing of the training process group behind (data-loader workers, stragglers)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def dry_run(command: list[str], world: int = 1) -> dict:
    """Ask the recipe process for its plan (config, params, data, device) without training;
    `world`: the number of processes the plan is for (it decides the batch split)."""
    env = {**os.environ, "WORLD_SIZE": str(world), "RANK": "0", "LOCAL_RANK": "0"}
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(proc.returncode)
    plan = json.loads(proc.stdout)
    plan["command"] = command
    return plan


def reproduce(paper: Paper, registry: Registry, opts: RunOptions) -> tuple[int, Path | None]:
    """Train `paper` as `opts` say. Returns the exit code and the run directory, if it ran."""
    require_training_extras()
    module = recipe_module(paper, registry)
    run_dir = resolve_run_dir(paper, opts)
    if opts.resume:
        opts = resume_options(paper.id, opts, run_dir)
    gpu = opts.gpu or opts.gpus > 1
    world = (opts.gpus if gpu else opts.procs) * opts.nnodes
    if world > 1:  # settle config errors in one process, before torchrun multiplies them
        probe = opts.with_values(dry_run=True, gpu=gpu, gpus=1, procs=1, nnodes=1)
        dry_run(build_command(module, paper.id, probe, None), world)
    created = not run_dir.exists()
    prepare_run_dir(run_dir)
    with RunLock(run_dir) as lock:
        code = run(build_command(module, paper.id, opts, run_dir), lock)
    left = {p.name for p in run_dir.iterdir()}
    if created and (left <= {LOCK_NAME} or (code == 2 and left <= {LOCK_NAME, "config.yaml"})):
        shutil.rmtree(run_dir, ignore_errors=True)  # refused before it trained: leave no trace
        return code, None
    return code, run_dir
