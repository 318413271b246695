"""`papercli doctor`: what this machine can run."""

from __future__ import annotations

import importlib.util
import platform
import sys

from papercli.data import sources
from papercli.registry import Registry


def report(registry: Registry) -> tuple[list[tuple[str, str, str]], bool]:
    rows: list[tuple[str, str, str]] = [
        ("python", "ok", f"{platform.python_version()} ({sys.executable})")
    ]
    ok = True
    try:
        import torch
    except ImportError:
        rows.append(("torch", "MISSING", "pip install -e '.[train]' (torch==2.13.0)"))
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
    for paper in sorted((p for p in registry.papers if p.reproduce), key=lambda p: p.id):
        for scale, needs in sorted(paper.reproduce.data.items()):
            name = needs.split(":", 1)[0].strip()
            st = sources.status(name)
            if scale == "mini" and not st.present:
                ok = False
            rows.append(
                (
                    f"{paper.id} ({scale})",
                    "ok" if st.present else ("MISSING" if scale == "mini" else "needs --data"),
                    st.detail,
                )
            )
    return rows, ok
