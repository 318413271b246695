"""Which recipes exist (from the files in papercli/recipes, without importing them), and what each
paper's recipe trains at each scale — generated from the recipe's own configs, the one source of
truth for sizes, steps and data (`describe` imports the recipes, and so torch)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from papercli.registry import Registry

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.py") if not p.name.startswith("_"))


def recipe_class(module_name: str) -> type:
    """The Recipe subclass a recipe module defines (the one whose module it is)."""
    from papercli.reproduce.recipe import Recipe

    module = importlib.import_module(module_name)
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Recipe) and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise LookupError(f"{module_name} defines {len(found)} recipes; expected one")
    return found[0]


def describe(registry: Registry) -> list[dict[str, Any]]:
    """One row per paper and scale: setup (model, parameters, steps, batch), data and whether the
    data is on this machine."""
    import torch

    from papercli.data import registry as datasets
    from papercli.reproduce.dispatch import recipe_module
    from papercli.reproduce.params import meta_counts
    from papercli.reproduce.recipe import Context, build_model

    rows = []
    for paper in sorted((p for p in registry.papers if p.reproduce), key=lambda p: p.id):
        cls = recipe_class(recipe_module(paper, registry))
        for scale in cls.scales:
            cfg = cls.config_for(scale, paper.id)
            ctx = Context(device=torch.device("cpu"), seed=0, paper=paper.id)
            ctx.split_batch(cfg.batch_size, cfg.micro_batch_size)
            recipe = cls(cfg, ctx)
            counts = meta_counts(build_model, recipe)
            name = recipe.dataset_name()
            status = datasets.get(name).status() if name else None
            rows.append(
                {
                    "paper": paper.id,
                    "scale": scale,
                    "setup": recipe.describe(counts),
                    "data": recipe.data_source(),
                    "dataset": name,
                    "data_present": status.present if status else None,
                    "data_detail": status.detail if status else "",
                }
            )
    return rows
