"""`papercli doctor`: what this machine can run."""

from __future__ import annotations

import importlib.util
import platform
import sys

from papercli.registry import Registry


def report(registry: Registry) -> tuple[list[tuple[str, str, str]], bool]:
    rows: list[tuple[str, str, str]] = [
        ("python", "ok", f"{platform.python_version()} ({sys.executable})")
    ]
    ok = True
    try:
        import torch
    except ImportError:
        rows.append(("torch", "MISSING", "pip install 'papercli[train]'"))
        return rows, False
    rows.append(("torch", "ok", torch.__version__))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            rows.append(
                (
                    f"cuda:{i}",
                    "ok",
                    f"{props.name}, {props.total_memory / 2**30:.0f} GiB, "
                    f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}",
                )
            )
    else:
        rows.append(("cuda", "none", "no CUDA device: recipes run on the CPU (--gpu is refused)"))
    has_torchrun = importlib.util.find_spec("torch.distributed.run") is not None
    rows.append(
        (
            "torchrun",
            "ok" if has_torchrun else "MISSING",
            "python -m torch.distributed.run (gloo on CPU"
            + (", nccl on GPU)" if torch.cuda.is_available() else ")"),
        )
    )
    from papercli.reproduce.catalog import describe

    for row in describe(registry):  # the data sets come from the recipes' own configs
        present = row["data_present"]
        if row["scale"] == "mini" and present is False:
            ok = False
        status = "ok" if present else ("MISSING" if row["scale"] == "mini" else "needs --data")
        rows.append((f"{row['paper']} ({row['scale']})", status, row["data_detail"] or row["data"]))
    return rows, ok
