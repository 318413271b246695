"""Models by name, timm-style: `create_model("resnet56-cifar")`, `create_model("vit-b/16")`.

Each architecture family lives in its own file, in plain torch, with no training code, and
registers its names with `register_model` when imported. Names are exact ("resnet50",
"vit-b/16"); a family may also register a pattern for parametric names ("vit-l/14").
Backbones used by detection heads implement the features API: `feature_info` (channels and
reduction of each output) and `forward_features(x)` (a list of NCHW maps, one per stage).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FAMILIES = (
    "papercli.models.resnet",
    "papercli.models.vit",
    "papercli.models.deit",
    "papercli.models.mixer",
    "papercli.models.swin",
    "papercli.models.segformer",
    "papercli.models.oneformer",
    "papercli.models.unet",
    "papercli.models.transformer",
    "papercli.models.diffusion_unet",
    "papercli.models.autoencoder_kl",
    "papercli.models.bilm",
    "papercli.models.ssm",
    "papercli.models.clip",
    "papercli.models.detr",
    "papercli.models.sam",
    "papercli.models.rcnn",
    "papercli.models.yolo",
    "papercli.models.ssd",
    "papercli.models.grounding_dino",
)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    paper: str = ""  # registry id of the paper that defines it


_MODELS: dict[str, ModelEntry] = {}
_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], ModelEntry]]] = []
_loaded = False


def register_model(
    model_name: str, factory: Callable[..., Any], /, *, paper: str = "", **defaults: Any
) -> None:
    """Make `create_model(model_name, **overrides)` call `factory(**defaults, **overrides)`."""
    key = model_name.lower()
    if key in _MODELS:
        raise ValueError(f"model '{model_name}' is registered twice")
    _MODELS[key] = ModelEntry(key, factory, defaults, paper)


def register_pattern(pattern: str, resolve: Callable[[re.Match[str]], ModelEntry]) -> None:
    """Parametric names (e.g. any ViT patch size): `resolve(match)` builds the entry."""
    _PATTERNS.append((re.compile(pattern), resolve))


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for module in FAMILIES:
            importlib.import_module(module)
        _loaded = True


def list_models(pattern: str = "*") -> list[str]:
    _load_families()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern.lower()))


def model_entry(name: str) -> ModelEntry:
    _load_families()
    key = name.lower()
    if key in _MODELS:
        return _MODELS[key]
    for pattern, resolve in _PATTERNS:
        match = pattern.fullmatch(key)
        if match:
            return resolve(match)
    close = difflib.get_close_matches(key, list(_MODELS), n=5, cutoff=0.6)
    hint = (
        f" (did you mean: {', '.join(close)}?)" if close else " (see papercli.models.list_models())"
    )
    raise ValueError(f"unknown model '{name}'{hint}")


def sized_name(name: str, family: str, label: str, sizes: dict[str, Any]) -> tuple[str, int]:
    """'vit-b/16' -> ('b', 16) for the patch-based families, whose names are <family>-<size>/<patch>
    (also 'ViT-L/14', 'vit_b_32'); an unknown size or a missing patch is a ValueError."""
    key = name.lower().replace("_", "/").replace(f"{family}-", "").replace(f"{family}/", "")
    size, _, patch = key.partition("/")
    if size not in sizes or not patch.isdigit():
        raise ValueError(f"unknown {label} '{name}' (sizes {', '.join(sizes)}; e.g. {family}-b/16)")
    return size, int(patch)


def create_model(name: str, **overrides: Any):
    entry = model_entry(name)
    return entry.factory(**{**entry.defaults, **overrides})
