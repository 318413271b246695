"""Recipe configs are plain dataclasses; `--set key=value` overrides fields with type coercion."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from papercli.errors import UsageError


def _coerce(name: str, raw: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"--set {name}: expected true/false, got '{raw}'")
    if annotation is int:
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            raise UsageError(f"--set {name}: expected an integer, got '{raw}'") from None
    if annotation is float:
        try:
            return float(raw)
        except ValueError:
            raise UsageError(f"--set {name}: expected a number, got '{raw}'") from None
    if origin is tuple:
        (inner, *_rest) = typing.get_args(annotation)
        return tuple(_coerce(name, part, inner) for part in raw.split(",") if part)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if raw not in choices:
            raise UsageError(
                f"--set {name}: expected one of {', '.join(map(str, choices))}, got '{raw}'"
            )
        return raw
    return raw


def apply_overrides(cfg: Any, assignments: list[str]) -> Any:
    """Return a copy of dataclass `cfg` with each 'key=value' applied (types follow the fields)."""
    hints = typing.get_type_hints(type(cfg))
    fields = {f.name for f in dataclasses.fields(cfg)}
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise UsageError(f"--set expects key=value, got '{item}'")
        if key not in fields:
            raise UsageError(f"--set {key}: unknown setting (known: {', '.join(sorted(fields))})")
        changes[key] = _coerce(key, raw.strip(), hints[key])
    return dataclasses.replace(cfg, **changes)


def to_dict(cfg: Any) -> dict[str, Any]:
    data = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
