"""A run's measured metrics against the paper's checks -> verdict, and the result.json record.

Pure Python (no torch): the CLI reads and renders results with it."""

from __future__ import annotations

import json
import math
import operator
from pathlib import Path
from typing import Any

from papercli.paths import atomic_write_text
from papercli.registry import Check

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"


def evaluate_checks(
    checks: tuple[Check, ...] | list[Check], metrics: dict[str, float], scale: str = "mini"
) -> list[dict[str, Any]]:
    """One row per check that applies at `scale`. A metric the run did not produce (or NaN) fails."""
    rows = []
    for check in checks:
        if check.scale not in ("any", scale):
            continue
        measured = metrics.get(check.metric)
        ok = (
            measured is not None
            and not (isinstance(measured, float) and math.isnan(measured))
            and bool(OPS[check.op](measured, check.value))
        )
        rows.append(
            {
                "metric": check.metric,
                "op": check.op,
                "target": check.value,
                "measured": measured,
                "passed": ok,
                "why": check.why,
            }
        )
    return rows


def verdict(rows: list[dict[str, Any]]) -> str:
    return REPRODUCED if rows and all(r["passed"] for r in rows) else NOT_REPRODUCED


def result_record(
    run: dict[str, Any],
    checks: tuple[Check, ...] | list[Check],
    *,
    seconds: float | None,
    params: dict[str, Any] | None,
    steps: int | None,
    metrics: dict[str, float],
    error: str | None = None,
    peak_memory_gib: float | None = None,
) -> dict[str, Any]:
    """result.json: who ran what where (`run`: paper, recipe, scale, device, …), the parameter
    counts, the measured metrics, one row per check and the verdict. A failed run (`error`)
    keeps its checks, all failing, so the record always says what was not shown."""
    # wall time is a claim of the mini scale ("minutes on a laptop"), so checks may name `seconds`
    measured = {**metrics, "seconds": seconds} if seconds is not None and not error else {}
    rows = evaluate_checks(checks, measured, run.get("scale", "mini"))
    record = {
        **run,
        "seconds": round(seconds, 2) if seconds is not None else None,
        "params": params["total"] if params else None,
        "trainable_params": params["trainable"] if params else None,
        "arm_params": params.get("arms") if params else None,
        "steps": steps,
        "metrics": metrics,
        "peak_memory_gib": peak_memory_gib,
        "checks": rows,
        "verdict": verdict(rows) if not error else NOT_REPRODUCED,
    }
    if error:
        record["error"] = error
    return record


def write_result(run_dir: Path, record: dict[str, Any]) -> Path:
    path = run_dir / "result.json"
    atomic_write_text(path, json.dumps(record, indent=2, default=float) + "\n")
    return path


def read_result(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
