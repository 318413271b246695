"""Real fluorescence nuclei with instance masks, offline: the 2D example image of the stardist
wheel (a 512x512 crop from the 2018 Data Science Bowl, 125 labelled nuclei). We read the two TIFF
files through the wheel's file list; stardist itself (and TensorFlow) is never imported."""

from __future__ import annotations

import numpy as np

from papercli.data import sources
from papercli.errors import PapercliError


def load(data_path=None) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 in [0, 1] after 1–99.8 percentile normalisation, instance labels int32)."""
    import tifffile

    status = sources.nuclei()
    if not status.present:
        raise PapercliError(f"U-Net mini data {status.detail}")
    from pathlib import Path

    folder = Path(status.detail)
    image = tifffile.imread(folder / "img2d.tif").astype(np.float32)
    labels = tifffile.imread(folder / "mask2d.tif").astype(np.int32)
    lo, hi = np.percentile(image, (1.0, 99.8))
    image = np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    return image, labels
