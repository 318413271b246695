"""Past runs under $PAPERCLI_HOME/runs: finished ones by their result.json, others by config.yaml."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from papercli import paths
from papercli.reproduce.claims import read_result

CHECKPOINT = "checkpoint.safetensors"  # papercli.reproduce.checkpoint.CHECKPOINT, without torch


def _summary(run_dir: Path) -> dict[str, Any] | None:
    result = read_result(run_dir)
    if result is not None:
        return {
            "name": run_dir.name,
            "path": str(run_dir),
            "paper": result.get("paper"),
            "scale": result.get("scale"),
            "device": result.get("device"),
            "steps": result.get("steps"),
            "seconds": result.get("seconds"),
            "verdict": result.get("verdict"),
            "error": result.get("error"),
        }
    data = read_config(run_dir)
    if data is None:
        return None
    state = "interrupted (resumable)" if (run_dir / CHECKPOINT).exists() else "incomplete"
    return {
        "name": run_dir.name,
        "path": str(run_dir),
        "paper": data.get("paper"),
        "scale": data.get("scale"),
        "device": data.get("device"),
        "steps": None,
        "seconds": None,
        "verdict": state,
        "error": None,
    }


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """A run directory's config.yaml, or None when it is missing or unreadable."""
    import yaml

    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def latest_run(paper_id: str) -> Path | None:
    """The newest run directory of a paper that holds a checkpoint (what --resume continues)."""
    root = paths.runs_dir()
    if not root.is_dir():
        return None
    candidates = [d for d in root.glob(f"{paper_id}-*") if (d / CHECKPOINT).exists()]
    return max(candidates, key=lambda d: d.stat().st_mtime, default=None)


def resume_options(paper_id: str, opts: Any, run_dir: Path) -> Any:
    """--resume: the options recorded in `run_dir`, with `opts`' explicit ones merged where safe
    (RunOptions.merge_for_resume). Nothing is written when there is nothing to resume."""
    from papercli.errors import UsageError

    recorded = read_config(run_dir)
    if recorded is None or not (run_dir / CHECKPOINT).is_file():
        raise UsageError(
            f"--resume: no resumable run in {run_dir} (it needs config.yaml and {CHECKPOINT})"
        )
    if recorded.get("paper") not in (None, paper_id):
        raise UsageError(f"--resume: {run_dir} is a run of '{recorded['paper']}', not '{paper_id}'")
    if "options" not in recorded:
        raise UsageError(f"--resume: {run_dir} was written by an older papercli and cannot resume")
    return opts.merge_for_resume(recorded["options"], run_dir)


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run directory, or say in one line why it cannot be used."""
    from papercli.errors import PapercliError, UsageError

    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file, not a directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PapercliError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    if not os.access(run_dir, os.W_OK):
        raise PapercliError(f"cannot write to run directory {run_dir}: permission denied")


def new_run_dir(paper_id: str) -> Path:
    """$PAPERCLI_HOME/runs/<paper>-<YYYYmmdd-HHMMSS>: where a run lands without --out."""
    from datetime import datetime

    return paths.runs_dir() / f"{paper_id}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def list_runs(paper: str | None = None) -> list[dict[str, Any]]:
    root = paths.runs_dir()
    if not root.is_dir():
        return []
    found = []
    for run_dir in sorted(root.iterdir(), key=lambda d: d.stat().st_mtime):
        if run_dir.is_dir():
            summary = _summary(run_dir)
            if summary and (paper is None or summary["paper"] == paper):
                found.append(summary)
    return found
