"""Checkpoints as one safetensors file: tensors in the body, everything else as JSON in its header.

Why not `torch.save`: a pickle can run code when loaded, and even `weights_only=True` answers a bad
file with advice to pass `weights_only=False`. A safetensors file holds only tensors and a string
header, so loading a checkpoint never unpickles anything. The training state (model, optimizers,
schedulers, RNG, the recipe's own state such as EMA weights) is a nested structure; `_flatten`
stores each tensor under its path and the rest of the structure as JSON with references to them.

One file, written to a temp name, fsynced and renamed: a kill or a full disk at any moment leaves
the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from papercli.errors import PapercliError
from papercli.reproduce import runs

CHECKPOINT = runs.CHECKPOINT  # the file name, defined torch-free in runs
FORMAT = "papercli-checkpoint"
VERSION = 1


class CheckpointError(PapercliError):
    exit_code = 1


# ----------------------------------------------------------------------------- nested <-> flat
def _flatten(obj: Any, path: str, tensors: dict[str, torch.Tensor], seen: set[int]) -> Any:
    """Tensors are named by their order (t0, t1, …), so no two paths can collide."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel():  # shared (tied) tensors: store a copy
            t = t.clone()
        if t.numel():
            seen.add(ptr)
        key = f"t{len(tensors)}"
        tensors[key] = t
        return {"__tensor__": key}
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, str | int) or isinstance(k, bool):
                raise TypeError(
                    f"cannot store a {type(k).__name__} key at '{path}' in a checkpoint"
                )
        return {
            "__dict__": [[k, _flatten(v, f"{path}/{k}", tensors, seen)] for k, v in obj.items()]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, f"{path}/{i}", tensors, seen) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{path}/{i}", tensors, seen) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at '{path}' in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
    return obj


# ----------------------------------------------------------------------------- files
def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically. On failure (full disk, read-only folder) the previous checkpoint
    is untouched and the error says so."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tensors: dict[str, torch.Tensor] = {}
        skeleton = _flatten(state, "", tensors, set())
        header = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(skeleton)}
        save_file(tensors, str(tmp), metadata=header)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except Exception as exc:  # safetensors reports I/O errors as its own exception type
        previous = (
            f"the previous checkpoint {path} is intact"
            if path.exists()
            else "no checkpoint exists yet"
        )
        raise CheckpointError(
            f"could not write checkpoint {path}: {_reason(exc)}; {previous}"
        ) from None
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by `save`. Anything else — empty, truncated, random bytes, a
    pickle — is refused with one line; nothing in the file is ever executed."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); it cannot be resumed")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path} is a safetensors file but not a papercli checkpoint")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
        state = _unflatten(json.loads(meta["state"]), tensors)
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable papercli checkpoint ({_reason(exc)}): truncated, corrupted "
            "or of another format; it was not loaded"
        ) from None
    if int(meta.get("version", "0")) > VERSION:
        raise CheckpointError(f"{path} was written by a newer papercli; upgrade to resume it")
    return state


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def check_fits(state_dict: dict[str, torch.Tensor], model: torch.nn.Module, path: Path) -> None:
    """Refuse a checkpoint whose weights do not fit `model` (another recipe, another size) with one
    line that names the first differences, instead of load_state_dict's multi-line error."""
    mine = model.state_dict()
    missing = [k for k in mine if k not in state_dict]
    extra = [k for k in state_dict if k not in mine]
    shapes = [
        f"{k}: checkpoint {list(state_dict[k].shape)} vs model {list(v.shape)}"
        for k, v in mine.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or extra or shapes):
        return
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} tensors differ in shape (e.g. {shapes[0]})")
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    raise CheckpointError(
        f"checkpoint {path} does not fit this model: {'; '.join(parts)} — "
        "was it written by another recipe or model size?"
    )
