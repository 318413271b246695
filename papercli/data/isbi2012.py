"""The ISBI 2012 EM segmentation challenge training data (U-Net's paper-scale data set):
30 serial-section TEM slices of the Drosophila ventral nerve cord, 512x512, with membrane labels.

Not downloadable without an account, so it is read from --data PATH: a folder holding
`train-volume.tif` and `train-labels.tif` (multi-page TIFF stacks, as the challenge ships them).
Label convention of the challenge: 255 = cell interior, 0 = membrane."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from papercli.errors import PapercliError

VOLUME, LABELS = "train-volume.tif", "train-labels.tif"


def load(folder: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 in [0, 1], cell-instance labels int32), both (slices, H, W)."""
    import tifffile
    from scipy import ndimage

    if folder is None:
        raise PapercliError(
            f"the ISBI 2012 data is not downloadable: pass --data PATH, a folder with {VOLUME} and {LABELS}"
        )
    folder = Path(folder).expanduser()
    missing = [n for n in (VOLUME, LABELS) if not (folder / n).is_file()]
    if missing:
        raise PapercliError(f"{folder} lacks {', '.join(missing)} (the ISBI 2012 training stacks)")
    volume = tifffile.imread(folder / VOLUME)
    labels = tifffile.imread(folder / LABELS)
    if volume.ndim != 3 or volume.shape != labels.shape:
        raise PapercliError(
            f"expected two stacks of the same shape (slices, H, W); got {volume.shape} and {labels.shape}"
        )
    images = volume.astype(np.float32) / max(float(volume.max()), 1.0)
    cells = labels > 127
    # instances = connected cell interiors in each slice (needed for the border weight map, Eq. 2)
    instances = np.stack([ndimage.label(s)[0] for s in cells]).astype(np.int32)
    return images, instances
