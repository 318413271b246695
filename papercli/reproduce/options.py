"""Every `reproduce` option, declared once.

`RunOptions` is the single declaration: the CLI builds its Typer parameters from it
(`typer_parameters`), the dispatcher renders the recipe process's argv from it (`to_argv`), and the
recipe process parses that argv back with it (`from_argv`). Adding an option means adding one field.

It also knows what a run *is* for `--resume`: the options recorded in a run directory's
`config.yaml` are restored, and an explicit option that would change the run is refused
(`merge_for_resume`). Torch-free: the CLI imports it.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from papercli.errors import UsageError

# `--set` keys that may differ when a run is resumed: they change what is logged or how data is
# loaded, never the training trajectory (evaluation runs on a forked RNG, see loop._evaluate).
RESUME_SAFE_SETTINGS = frozenset({"log_every", "eval_every", "workers"})


def _opt(
    default: Any,
    help: str,
    *,
    launch: bool = False,
    resume_safe: bool = False,
    minimum: float | None = None,
    metavar: str | None = None,
    flag: str | None = None,
) -> Any:
    """A field of RunOptions. `launch`: read by the launcher (torchrun), not passed to the recipe
    process. `resume_safe`: may differ from the recorded run on --resume (where it runs, not what)."""
    meta = {
        "help": help,
        "launch": launch,
        "resume_safe": resume_safe or launch,
        "minimum": minimum,
        "metavar": metavar,
        "flag": flag,
    }
    if isinstance(default, list):
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunOptions:
    scale: str = _opt("mini", "mini: minutes on a CPU; paper: the paper's own setup.")
    gpu: bool = _opt(False, "Train on CUDA (bf16 autocast, torch.compile).", resume_safe=True)
    gpus: int = _opt(1, "GPU processes per node (torchrun + DDP).", launch=True, minimum=1)
    procs: int = _opt(1, "CPU processes per node (torchrun + DDP/gloo).", launch=True, minimum=1)
    nnodes: int = _opt(1, "Number of nodes.", launch=True, minimum=1)
    node_rank: int = _opt(0, "This node's rank.", launch=True, minimum=0)
    master_addr: str = _opt("127.0.0.1", "Rendezvous host (multi-node).", launch=True)
    master_port: int = _opt(29500, "Rendezvous port (multi-node).", launch=True, minimum=1)
    epochs: float | None = _opt(None, "Train for N epochs.", minimum=0.0)
    steps: int | None = _opt(None, "Train for N optimizer steps.", minimum=1)
    batch_size: int | None = _opt(
        None,
        "Global batch size (the paper's number), split across processes and accumulation steps.",
        minimum=1,
    )
    sets: list[str] = _opt(
        [], "Override a config field (nested: a.b=1).", metavar="KEY=VALUE", flag="--set"
    )
    data: Path | None = _opt(None, "Data folder (paper-scale data sets).")
    out: Path | None = _opt(None, "Run directory.", resume_safe=True)
    resume: bool = _opt(False, "Continue the run in --out (or the latest one).", resume_safe=True)
    seed: int = _opt(0, "Random seed.")
    no_compile: bool = _opt(False, "Do not torch.compile on GPU.", resume_safe=True)
    dry_run: bool = _opt(False, "Show config, command, params; do not train.", resume_safe=True)
    json: bool = _opt(False, "Print JSON.", resume_safe=True)
    # which fields were given explicitly (on the command line, or restored from a resumed run)
    given: frozenset[str] = field(default=frozenset(), metadata={"internal": True})

    # --- declaration ----------------------------------------------------------------------------
    @classmethod
    def declared(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]

    @staticmethod
    def flag(f: dataclasses.Field) -> str:
        return f.metadata.get("flag") or "--" + f.name.replace("_", "-")

    @classmethod
    def _types(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    # --- the recipe process's argv --------------------------------------------------------------
    def to_argv(self, *, include_launch: bool = False) -> list[str]:
        """The explicit options as argv for the recipe process (defaults stay implicit, so the
        recipe process can tell an explicit option from a default, as the CLI can)."""
        argv: list[str] = []
        for f in self.declared():
            if f.name not in self.given or (f.metadata["launch"] and not include_launch):
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool):
                if value:
                    argv.append(self.flag(f))
            elif isinstance(value, list):
                for item in value:
                    argv += [self.flag(f), str(item)]
            elif value is not None:
                argv += [self.flag(f), str(value)]
        return argv

    @classmethod
    def from_argv(cls, argv: list[str]) -> RunOptions:
        parser = _ArgumentParser(
            prog="python -m papercli.recipes.<name>",
            description="Run a papercli recipe (normally via `papercli reproduce`).",
        )
        parser.add_argument("--paper", default=argparse.SUPPRESS)
        types = cls._types()
        for f in cls.declared():
            kind = _base_type(types[f.name])
            kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
            if kind is bool:
                kwargs["action"] = "store_true"
            elif kind is list:
                kwargs["action"] = "append"
            else:
                kwargs["type"] = kind
            parser.add_argument(cls.flag(f), **kwargs)
        ns = vars(parser.parse_args(argv))
        ns.pop("paper", None)
        return cls.make(ns)

    @classmethod
    def make(cls, values: dict[str, Any]) -> RunOptions:
        """Options from explicitly given values; the rest take their defaults. Range-checked."""
        opts = cls(**values, given=frozenset(values))
        opts.check()
        return opts

    def with_values(self, **changes: Any) -> RunOptions:
        """A copy with `changes` applied, counted as given."""
        return dataclasses.replace(self, **changes, given=self.given | frozenset(changes))

    @staticmethod
    def paper_from_argv(argv: list[str]) -> str | None:
        for i, item in enumerate(argv):
            if item == "--paper" and i + 1 < len(argv):
                return argv[i + 1]
            if item.startswith("--paper="):
                return item.split("=", 1)[1]
        return None

    def check(self) -> None:
        for f in self.declared():
            value, minimum = getattr(self, f.name), f.metadata.get("minimum")
            if isinstance(value, float) and not math.isfinite(value):
                raise UsageError(f"{self.flag(f)} must be a finite number, got {value}")
            if minimum is not None and value is not None and value < minimum:
                raise UsageError(f"{self.flag(f)} must be at least {minimum:g}, got {value}")
        if self.epochs is not None and self.epochs <= 0:
            raise UsageError(f"--epochs must be more than 0, got {self.epochs}")
        if self.gpus > 1 and self.procs > 1:
            raise UsageError(
                "--gpus and --procs exclude each other (GPU processes or CPU processes)"
            )

    # --- the CLI --------------------------------------------------------------------------------
    @classmethod
    def typer_parameters(cls) -> list[inspect.Parameter]:
        """Keyword parameters with Typer annotations, one per option (for `papercli reproduce`)."""
        import typer

        types = cls._types()
        params = []
        for f in cls.declared():
            annotation = types[f.name]
            if _base_type(annotation) is list:
                annotation = list[str] | None
            option = typer.Option(
                cls.flag(f),
                help=f.metadata["help"],
                min=f.metadata["minimum"],
                metavar=f.metadata["metavar"],
                show_default=not isinstance(f.default, bool) and f.default is not None,
            )
            default = None if f.default is dataclasses.MISSING else f.default
            params.append(
                inspect.Parameter(
                    f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=default,
                    annotation=typing.Annotated[annotation, option],
                )
            )
        return params

    # --- resume ---------------------------------------------------------------------------------
    def recorded(self) -> dict[str, Any]:
        """What config.yaml keeps of these options: the explicit ones that define the run."""
        out: dict[str, Any] = {}
        for f in self.declared():
            if f.name in self.given and not f.metadata["resume_safe"]:
                value = getattr(self, f.name)
                out[f.name] = str(value) if isinstance(value, Path) else value
        return out

    def merge_for_resume(self, recorded: dict[str, Any], run_dir: Path) -> RunOptions:
        """The recorded run's options, with this invocation's explicit options on top where they
        are safe to change mid-run; any other difference is refused, naming the keys."""
        restored = {k: v for k, v in recorded.items() if k in {f.name for f in self.declared()}}
        if "data" in restored and restored["data"] is not None:
            restored["data"] = Path(restored["data"])
        conflicts: list[str] = []
        types = self._types()
        for f in self.declared():
            if f.name not in self.given or f.metadata["resume_safe"]:
                continue
            mine, theirs = getattr(self, f.name), restored.get(f.name, f.default)
            if f.name == "sets":
                conflicts += _set_conflicts(theirs or [], mine)
            elif _base_type(types[f.name]) is Path:
                if _norm_path(mine) != _norm_path(theirs):
                    conflicts.append(f.name)
            elif mine != theirs:
                conflicts.append(f.name)
        if conflicts:
            raise UsageError(
                f"--resume: {', '.join(sorted(set(conflicts)))} differ from the run in {run_dir} "
                "(resume restores its options; only where it runs and "
                f"--set {', '.join(sorted(RESUME_SAFE_SETTINGS))} may change)"
            )
        values = {**restored}
        for name in self.given:
            if name == "sets":
                values["sets"] = _merge_sets(restored.get("sets") or [], self.sets)
            else:  # equal to the recorded value, or safe to change
                values[name] = getattr(self, name)
        return RunOptions.make(values)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, exit 2, no usage dump
        raise UsageError(message)


def _base_type(annotation: Any) -> Any:
    """bool/int/float/str/Path/list for an annotation such as `int | None`."""
    origin = typing.get_origin(annotation)
    if origin is list:
        return list
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and origin is not None:
        return _base_type(args[0])
    return annotation


def _norm_path(value: Any) -> str | None:
    return None if value is None else str(Path(value).expanduser().resolve())


def _split_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def _set_conflicts(recorded: list[str], given: list[str]) -> list[str]:
    before, now = _split_sets(recorded), _split_sets(given)
    return [
        f"--set {key}"
        for key, value in now.items()
        if before.get(key) != value and key.split(".")[-1] not in RESUME_SAFE_SETTINGS
    ]


def _merge_sets(recorded: list[str], given: list[str]) -> list[str]:
    merged = {**_split_sets(recorded), **_split_sets(given)}
    return [f"{k}={v}" for k, v in merged.items()]
