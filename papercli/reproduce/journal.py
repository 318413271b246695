"""metrics.jsonl: one JSON line per evaluation, appended like a journal.

A run killed mid-write can leave a half line at the end; readers skip lines that do not parse, and
a resume rewrites the file (atomically) with only the complete lines up to its checkpoint's step.
Torch-free (the CLI's `runs` reads it too).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from papercli import paths

METRICS = "metrics.jsonl"


def read(path: Path) -> list[dict[str, Any]]:
    """Every complete record; a torn or garbled line (a crash mid-write) is skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def append(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def trim(path: Path, upto_step: int) -> None:
    """On resume: keep the records up to the checkpoint's step (later ones will be recomputed)."""
    if not path.exists():
        return
    kept = [r for r in read(path) if r["step"] <= upto_step]
    paths.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def plot_curves(path: Path, out: Path) -> None:
    """Loss and metric curves as PNG (skipped quietly if matplotlib is not installed)."""
    rows = read(path)
    if not rows:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    keys = [k for k in rows[-1] if k not in ("step", "elapsed") and not k.endswith("_per_s")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, key in zip(axes[0], keys, strict=True):
        ax.plot(steps, [r.get(key, math.nan) for r in rows], marker="o", markersize=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
