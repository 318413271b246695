"""Real fluorescence nuclei with instance masks, offline: a 512x512 image from the 2018 Data
Science Bowl (BBBC038, CC0) with its 125 labelled nuclei, as prepared by stardist (BSD-3) and
shipped inside papercli as `files/nuclei2d.npz` (licence and provenance: `files/NOTICE.md`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from papercli.data import sources
from papercli.errors import PapercliError


def load(data_path=None) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 in [0, 1] after 1–99.8 percentile normalisation, instance labels int32)."""
    status = sources.nuclei()
    if not status.present:
        raise PapercliError(f"U-Net mini data {status.detail}")
    with np.load(Path(status.detail), allow_pickle=False) as arrays:
        image = arrays["image"].astype(np.float32)
        labels = arrays["labels"].astype(np.int32)
    lo, hi = np.percentile(image, (1.0, 99.8))
    image = np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    return image, labels
