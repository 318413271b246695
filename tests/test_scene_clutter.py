"""Cluttered scenes (SceneSpec.clutter): dim photo fragments behind the objects, the objects and
labels those of the plain scene of the same seed, checked on real photos and by hand."""

from __future__ import annotations

import numpy as np
import pytest

from papercli.data import scenes


def test_clutter_changes_only_the_background():
    spec = scenes.SceneSpec(canvas=48, max_size=24)
    plain = scenes.load("train", 20, spec, items="digits", seed=3)
    busy = scenes.load(
        "train",
        20,
        scenes.SceneSpec(canvas=48, max_size=24, clutter=6, clutter_contrast=0.4),
        items="digits",
        seed=3,
    )
    assert np.array_equal(plain.instances, busy.instances)
    assert all(np.array_equal(a, b) for a, b in zip(plain.classes, busy.classes, strict=True))
    objects = plain.instances > 0
    assert np.array_equal(plain.images[objects], busy.images[objects])
    background = busy.images[~objects]
    assert (plain.images[~objects] == 0).all()
    assert background.max() <= 0.4 + 1e-6  # never brighter than clutter_contrast
    assert (background > 0.05).mean() > 0.05  # … but there is a background now


def test_one_fragment_of_a_blank_photo_is_one_flat_rectangle():
    """A white 8x8 'photo' makes every fragment a rectangle of one brightness in [c/2, c]; with
    one fragment per scene, the lit background pixels fill their bounding box except where an
    object stands in front."""
    white = np.full((1, 8, 8), 255, np.uint8)
    spec = scenes.SceneSpec(canvas=32, max_objects=1, max_size=12, clutter=1, clutter_contrast=0.5)
    data = scenes.make_scenes(white, np.zeros(1, np.int64), ("white",), 10, spec, seed=0)
    for image, instances in zip(data.images, data.instances, strict=True):
        lit = (image > 0) & (instances == 0)
        assert lit.any()
        values = np.unique(image[lit].round(4))
        assert len(values) == 1 and 0.25 - 1e-3 <= values[0] <= 0.5 + 1e-3
        ys, xs = np.nonzero(lit)
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        assert (lit[box] | (instances[box] > 0)).all()


def test_clutter_settings_are_checked():
    with pytest.raises(ValueError):
        scenes.SceneSpec(clutter=-1)
    with pytest.raises(ValueError):
        scenes.SceneSpec(clutter=2, clutter_contrast=0.0)
