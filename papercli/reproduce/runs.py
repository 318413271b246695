"""Past runs under $PAPERCLI_HOME/runs: finished ones by their result.json, others by config.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from papercli import paths
from papercli.reproduce.claims import read_result


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
    config = run_dir / "config.yaml"
    if not config.exists():
        return None
    import yaml

    try:
        data = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError:
        data = {}
    state = "interrupted (resumable)" if (run_dir / "checkpoint.pt").exists() else "incomplete"
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
