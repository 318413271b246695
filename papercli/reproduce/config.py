"""Recipe configs are plain dataclasses; `--set key=value` overrides fields with type coercion.

- Nested configs are frozen dataclasses (`--set baseline.lr=0.05`) or dicts of them
  (`--set arms.resnet.lr=0.05`).
- Types follow the annotations: bool, int, float, str, Literal[...], tuple[T, ...] ("1,2"; a
  tuple of tuples "1,2;3"), `T | None` (`none` sets None), nested as above. A value that does not
  fit is a one-line usage error.
- Ranges: a field declared with `bounded(default, ge=…, le=…, gt=…, lt=…)` is checked whenever a
  config is built (`validate`), so every recipe gets `steps=0` or `holdout=2` refused the same way.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from papercli.errors import UsageError

_NONE_WORDS = ("none", "null", "")


def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field whose value must lie in a range (checked by `validate`)."""
    return dataclasses.field(default=default, metadata={"range": (ge, gt, le, lt)})


def fraction(default: float, *, inclusive_one: bool = False) -> Any:
    """A share in [0, 1) — or [0, 1] with inclusive_one."""
    return bounded(default, ge=0.0, **({"le": 1.0} if inclusive_one else {"lt": 1.0}))


def _is_optional(annotation: Any) -> tuple[bool, Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if type(None) in args:
            rest = [a for a in args if a is not type(None)]
            return True, rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
    return False, annotation


def _coerce(name: str, raw: str, annotation: Any) -> Any:
    optional, annotation = _is_optional(annotation)
    if optional and raw.lower() in _NONE_WORDS:
        return None
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
        # a tuple of tuples separates its items by ";" and theirs by "," ("10,14;20,28")
        sep = ";" if typing.get_origin(inner) is tuple else ","
        return tuple(_coerce(name, part.strip(), inner) for part in raw.split(sep) if part.strip())
    if annotation is tuple:  # no item type to coerce to: refuse rather than keep a string
        raise UsageError(f"--set {name}: a structure that cannot be set from the command line")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if raw not in choices:
            raise UsageError(
                f"--set {name}: expected one of {', '.join(map(str, choices))}, got '{raw}'"
            )
        return raw
    if dataclasses.is_dataclass(annotation) or origin is dict:
        raise UsageError(f"--set {name}: a group of settings; set its fields ({name}.<field>=…)")
    return raw


def _set(cfg: Any, path: list[str], raw: str, shown: str) -> Any:
    """A copy of `cfg` with the field at `path` set from `raw`."""
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    key = path[0]
    if key not in names:
        parts = shown.split(".")
        prefix = ".".join([*parts[: len(parts) - len(path)], ""]) if len(parts) > len(path) else ""
        raise UsageError(
            f"--set {shown}: unknown setting (known: {', '.join(prefix + n for n in sorted(names))})"
        )
    annotation = hints[key]
    if len(path) == 1:
        return dataclasses.replace(cfg, **{key: _coerce(shown, raw, annotation)})
    current = getattr(cfg, key)
    if dataclasses.is_dataclass(current):
        return dataclasses.replace(cfg, **{key: _set(current, path[1:], raw, shown)})
    if isinstance(current, dict):
        item = path[1]
        if item not in current:
            raise UsageError(
                f"--set {shown}: no '{item}' in {key} (has: {', '.join(sorted(current)) or 'none'})"
            )
        if len(path) == 2:
            (_k, value_type) = typing.get_args(annotation)
            new_value = _coerce(shown, raw, value_type)
        else:
            new_value = _set(current[item], path[2:], raw, shown)
        return dataclasses.replace(cfg, **{key: {**current, item: new_value}})
    raise UsageError(f"--set {shown}: '{key}' has no sub-settings")


def apply_overrides(cfg: Any, assignments: list[str]) -> Any:
    """Return a copy of dataclass `cfg` with each 'key=value' (key may be dotted) applied."""
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--set expects key=value, got '{item}'")
        cfg = _set(cfg, key.split("."), raw.strip(), key)
    return cfg


def validate(cfg: Any, prefix: str = "") -> None:
    """Check every bounded field (recursively); a value out of range is a usage error."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value):
            validate(value, name + ".")
        elif isinstance(value, dict):
            for k, v in value.items():
                if dataclasses.is_dataclass(v):
                    validate(v, f"{name}.{k}.")
        if isinstance(value, float) and value != value:  # NaN passes every comparison below
            raise UsageError(f"{name} must be a number, got nan")
        bounds = f.metadata.get("range")
        if bounds is None or value is None:
            continue
        ge, gt, le, lt = bounds
        ok = (
            (ge is None or value >= ge)
            and (gt is None or value > gt)
            and (le is None or value <= le)
            and (lt is None or value < lt)
        )
        if not ok:
            raise UsageError(f"{name} must be {_describe(ge, gt, le, lt)}, got {value}")


def _describe(ge, gt, le, lt) -> str:
    low = f">= {ge:g}" if ge is not None else f"> {gt:g}" if gt is not None else ""
    high = f"<= {le:g}" if le is not None else f"< {lt:g}" if lt is not None else ""
    return " and ".join(x for x in (low, high) if x)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain YAML/JSON-friendly values (tuples become lists, nested configs dicts)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}
