"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): 60,000 + 10,000 real 28x28 grayscale photos of
clothing in 10 classes, the mini-scale data of the ResNet and ViT recipes.

Where it is looked for: --data PATH, then $PAPERCLI_FASHION_MNIST when set, else Debian's
`dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist) and papercli's data cache. With
`download=True` (`python -m papercli.data.fashion_mnist`) the official files are fetched into
$PAPERCLI_FASHION_MNIST or the cache (URL from $PAPERCLI_FASHION_MNIST_URL), checked by MD5."""

from __future__ import annotations

import gzip
import os
import shlex
import sys
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


def get_command() -> str:
    """The exact command that puts the official files where `locate` looks (needs internet)."""
    return f"{shlex.quote(sys.executable)} -m papercli.data.fashion_mnist"


def _folders() -> list[Path]:
    # $PAPERCLI_FASHION_MNIST, when set, is the one place (downloads go there too); otherwise
    # Debian's package folder, then papercli's data cache.
    env = os.environ.get("PAPERCLI_FASHION_MNIST")
    return [Path(env)] if env else [sources.FASHION_MNIST_DIR, data_cache() / "fashion-mnist"]


def locate(data_path: Path | None = None, download: bool = False) -> Path:
    candidates = [data_path, *_folders()] if data_path else _folders()
    for c in candidates:
        if all(_find(Path(c), n[: -len(".gz")]) for n in FILES):
            return Path(c)
    if download:
        base = os.environ.get("PAPERCLI_FASHION_MNIST_URL", DEFAULT_URL).rstrip("/") + "/"
        target = _folders()[-1]
        for name, md5 in FILES.items():
            download_verified(base + name, target / name, md5)
        return target
    raise PapercliError(
        f"Fashion-MNIST not found in {', '.join(map(str, candidates))}; get it with: "
        f"{get_command()}  (downloads the official files, MD5-checked; on Debian/Ubuntu "
        "`sudo apt-get install dataset-fashion-mnist` also works)"
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


if __name__ == "__main__":  # the command `get_command()` names
    try:
        sys.stdout.write(f"Fashion-MNIST is in {locate(download=True)}\n")
    except PapercliError as exc:
        sys.exit(f"papercli: error: {exc}")
