"""CIFAR-10 (Krizhevsky, 2009): 50,000 + 10,000 32x32 colour images, 10 classes — the data of the
ResNet paper's Section 4.2 and of ViT's transfer results.

Read from --data PATH (the extracted `cifar-10-batches-bin` folder, its parent, or the .tar.gz), or
downloaded once into papercli's cache and checked against its MD5. We use the *binary* release: plain
bytes, so nothing is unpickled."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np

from papercli.data.download import data_cache, download_verified
from papercli.errors import PapercliError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST = ["test_batch.bin"]
RECORD = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue bytes
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _read(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    raw = np.concatenate([np.fromfile(f, dtype=np.uint8) for f in files])
    if raw.size % RECORD:
        raise PapercliError(f"CIFAR-10 batch files have a partial record ({raw.size} bytes)")
    raw = raw.reshape(-1, RECORD)
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


def _batches_dir(path: Path) -> Path | None:
    for candidate in (path, path / "cifar-10-batches-bin"):
        if all((candidate / f).is_file() for f in TRAIN + TEST):
            return candidate
    return None


def load(data_path: Path | None = None, download: bool = True) -> dict[str, np.ndarray]:
    """{'train_x': (50000, 3, 32, 32) uint8, 'train_y', 'test_x', 'test_y'}."""
    root = Path(data_path).expanduser() if data_path else data_cache() / "cifar10"
    folder = _batches_dir(root)
    archive = root if root.is_file() else root / "cifar-10-binary.tar.gz"
    if folder is None:
        if not archive.is_file():
            if data_path is not None and not download:
                raise PapercliError(
                    f"{root} holds no CIFAR-10 binary batches (cifar-10-batches-bin)"
                )
            url = os.environ.get("PAPERCLI_CIFAR10_URL", URL)
            archive = download_verified(
                url, data_cache() / "cifar10" / "cifar-10-binary.tar.gz", MD5
            )
        extract_to = archive.parent
        with tarfile.open(archive) as tar:
            tar.extractall(extract_to, filter="data")  # the 'data' filter refuses unsafe paths
        folder = _batches_dir(extract_to)
        if folder is None:
            raise PapercliError(f"{archive} did not contain the CIFAR-10 binary batches")
    train_x, train_y = _read([folder / f for f in TRAIN])
    test_x, test_y = _read([folder / f for f in TEST])
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
