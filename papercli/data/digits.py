"""scikit-learn's bundled handwritten digits (1797 real 8x8 images, 10 classes), as uint8 images:
the smallest real image set, used by fast tests. The first 1500 train, the last 297 test."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load(data_path: Path | None = None) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * 255.0 / 16.0).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    return {
        "train_x": images[:1500],
        "train_y": labels[:1500],
        "test_x": images[1500:],
        "test_y": labels[1500:],
    }
