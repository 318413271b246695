"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): 60,000 + 10,000 real 28x28 grayscale photos of
clothing in 10 classes, the mini-scale data of the ResNet and ViT recipes.

Where it is looked for, in order: $PAPERCLI_FASHION_MNIST, Debian's `dataset-fashion-mnist`
(/usr/share/datasets/fashion-mnist), papercli's data cache. With `download=True` the official files
are fetched into the cache (URL from $PAPERCLI_FASHION_MNIST_URL) and checked against their MD5."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from papercli.data import sources
from papercli.data.download import data_cache, download_verified
from papercli.errors import PapercliError

DEFAULT_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {  # official archives and their MD5 (github.com/zalandoresearch/fashion-mnist)
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not): big-endian magic (type 0x08 = uint8, then ndim), dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise PapercliError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise PapercliError(f"{path} is truncated: {body.size} bytes for shape {tuple(dims)}")
    return body.reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def locate(data_path: Path | None = None, download: bool = False) -> Path:
    candidates = [
        data_path,
        os.environ.get("PAPERCLI_FASHION_MNIST"),
        sources.FASHION_MNIST_DIR,
        data_cache() / "fashion-mnist",
    ]
    for c in candidates:
        if c and all(_find(Path(c), n[: -len(".gz")]) for n in FILES):
            return Path(c)
    if download:
        base = os.environ.get("PAPERCLI_FASHION_MNIST_URL", DEFAULT_URL).rstrip("/") + "/"
        target = data_cache() / "fashion-mnist"
        for name, md5 in FILES.items():
            download_verified(base + name, target / name, md5)
        return target
    raise PapercliError(
        "Fashion-MNIST not found: apt-get install dataset-fashion-mnist, set "
        "PAPERCLI_FASHION_MNIST to a folder with the IDX files, or pass --data PATH"
    )


def load(data_path: Path | None = None, download: bool = False) -> dict[str, np.ndarray]:
    """{'train_x': (60000, 28, 28) uint8, 'train_y', 'test_x', 'test_y'} with shapes checked."""
    folder = locate(data_path, download)
    out = {
        "train_x": read_idx(_find(folder, "train-images-idx3-ubyte")),
        "train_y": read_idx(_find(folder, "train-labels-idx1-ubyte")),
        "test_x": read_idx(_find(folder, "t10k-images-idx3-ubyte")),
        "test_y": read_idx(_find(folder, "t10k-labels-idx1-ubyte")),
    }
    if out["train_x"].shape != (60000, 28, 28) or out["test_x"].shape != (10000, 28, 28):
        raise PapercliError(
            f"unexpected Fashion-MNIST shapes in {folder}: {out['train_x'].shape}, {out['test_x'].shape}"
        )
    return out
