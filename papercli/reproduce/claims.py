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


def write_result(run_dir: Path, record: dict[str, Any]) -> Path:
    path = run_dir / "result.json"
    atomic_write_text(path, json.dumps(record, indent=2, default=float) + "\n")
    return path


def read_result(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
