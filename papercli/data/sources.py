"""Whether each offline data set is present on this machine — without importing torch.

One function per data set, named after it (`papercli.data.registry` finds them by name)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
NUCLEI_FILE = Path(__file__).parent / "files" / "nuclei2d.npz"


@dataclass(frozen=True)
class Status:
    present: bool
    detail: str


def nuclei() -> Status:
    # Shipped inside the package (see papercli/data/files/NOTICE.md): present unless removed.
    if not NUCLEI_FILE.is_file():
        return Status(False, f"missing: {NUCLEI_FILE} (reinstall papercli)")
    return Status(True, str(NUCLEI_FILE))


def fashion_mnist() -> Status:
    from papercli.data import fashion_mnist as loader  # the one place that knows where it lives
    from papercli.errors import PapercliError

    try:
        return Status(True, str(loader.locate()))
    except PapercliError as exc:
        return Status(False, f"missing: {exc}")


def digits() -> Status:
    if importlib.util.find_spec("sklearn") is None:
        return Status(False, "missing: pip install scikit-learn")
    return Status(True, "scikit-learn bundled digits (1797 8x8 images)")


def needs_path(name: str, how_to_get: str) -> Status:
    return Status(False, f"{name} is not bundled: {how_to_get}")


def plays() -> Status:
    from papercli.data.plays import ARCHIVE

    if not ARCHIVE.is_file():
        return Status(False, f"missing: {ARCHIVE} (reinstall papercli)")
    return Status(True, str(ARCHIVE))
