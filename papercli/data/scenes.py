"""Multi-object scenes from real photos: Fashion-MNIST items (Xiao et al., 2017) pasted onto a
larger canvas at random sizes and places, overlapping, with every object's class, tight box and
visible mask known exactly. No detection data set installs offline; this one is real pixels,
needs no download beyond Fashion-MNIST and is the same on every machine for a given seed.

How a scene is built (`SceneSpec`):
- 1 … `max_objects` items are drawn from the split's own photos (train scenes from the 60,000
  training photos, test scenes from the 10,000 test photos, so no test object was ever seen);
- each is resized to a side of `min_size` … `max_size` pixels with its aspect ratio jittered by
  up to ±25 %, and its mask is the item's silhouette (pixels above 10 % brightness, holes filled);
- it is pasted in front of the earlier ones (painter's order), unless it would hide more than
  `max_occlusion` of an earlier object's visible pixels — then another place is tried, so every
  object stays recognisable and its box is the tight box of what is visible.
`classes` keeps only some item classes (SAM's and Grounding DINO's held-out classes).

`clutter` (0 = none, the default: a black background) puts that many dim fragments of other
photos of the same split behind the objects, like the textured backgrounds of natural images,
where bottom-up grouping (selective search) also proposes background pieces and object parts:
each fragment is a random crop (40-100 % of each side) of a photo resized like an item, scaled to
a brightness of at most `clutter_contrast`, and drawn only where no object is. Fragments come from
their own random stream, so a cluttered scene has exactly the objects, places and pixels of the
same seed's plain scene; only the background differs, and the labels (classes, boxes, masks) too
are unchanged: fragments are background, never objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from papercli.data.instances import InstanceSet

ITEM_THRESHOLD = 0.1  # a pixel above 10 % brightness belongs to the item's silhouette


@dataclass(frozen=True)
class SceneSpec:
    canvas: int = 64
    min_objects: int = 1
    max_objects: int = 4
    min_size: int = 12
    max_size: int = 32
    max_occlusion: float = 0.4
    classes: tuple[int, ...] | None = None  # item classes allowed; None = all
    clutter: int = 0  # background fragments of other photos per scene (0 = black background)
    clutter_contrast: float = 0.5  # the brightest a fragment pixel may be

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self}")
        if not 4 <= self.min_size <= self.max_size <= self.canvas:
            raise ValueError(f"need 4 <= min_size <= max_size <= canvas, got {self}")
        if self.clutter < 0 or not 0 < self.clutter_contrast <= 1:
            raise ValueError(f"need clutter >= 0 and 0 < clutter_contrast <= 1, got {self}")


def _silhouette(item: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_fill_holes(item > ITEM_THRESHOLD)


def _resized(item: np.ndarray, height: int, width: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(item)[None, None]
    return F.interpolate(x, size=(height, width), mode="bilinear", antialias=True)[0, 0].numpy()


def _place(canvas, instances, visible, item, rng, spec) -> bool:
    """Paste `item` at a random place where it hides at most `max_occlusion` of any earlier
    object; False when 20 places were all refused."""
    mask = _silhouette(item)
    if mask.sum() < 4:
        return False
    h, w = item.shape
    for _ in range(20):
        y = int(rng.integers(0, spec.canvas - h + 1))
        x = int(rng.integers(0, spec.canvas - w + 1))
        window = instances[y : y + h, x : x + w]
        hidden = np.bincount(window[mask], minlength=len(visible) + 1)[1:]
        if len(visible) and (hidden > spec.max_occlusion * np.asarray(visible)).any():
            continue
        for k in np.flatnonzero(hidden):
            visible[k] -= int(hidden[k])
        canvas[y : y + h, x : x + w][mask] = item[mask]
        window[mask] = len(visible) + 1
        visible.append(int(mask.sum()))
        return True
    return False


def _clutter(canvas, instances, items, pool, rng, spec) -> None:
    """Draw `spec.clutter` dim photo fragments into the background (where `instances` is 0),
    brightest wins where fragments overlap."""
    background = instances == 0
    for _ in range(spec.clutter):
        j = int(pool[rng.integers(len(pool))])
        side = int(rng.integers(spec.min_size, spec.max_size + 1))
        photo = _resized(items[j].astype(np.float32) / 255.0, side, side)
        h, w = (int(rng.integers(max(2, int(0.4 * side)), side + 1)) for _ in range(2))
        y0, x0 = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
        piece = photo[y0 : y0 + h, x0 : x0 + w] * rng.uniform(0.5, 1.0) * spec.clutter_contrast
        y = int(rng.integers(0, spec.canvas - h + 1))
        x = int(rng.integers(0, spec.canvas - w + 1))
        window, free = canvas[y : y + h, x : x + w], background[y : y + h, x : x + w]
        window[free] = np.maximum(window[free], piece[free])


def make_scenes(
    items: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    count: int,
    spec: SceneSpec = SceneSpec(),
    seed: int = 0,
) -> InstanceSet:
    """`count` scenes built from `items` (M, h, w) uint8 photos and their `labels`."""
    rng = np.random.default_rng(seed)
    pool = np.arange(len(items))
    if spec.classes is not None:
        pool = pool[np.isin(labels, spec.classes)]
    if len(pool) == 0:
        raise ValueError(f"no items of classes {spec.classes}")
    images = np.zeros((count, spec.canvas, spec.canvas), np.float32)
    instances = np.zeros((count, spec.canvas, spec.canvas), np.int16)
    classes = []
    for i in range(count):
        wanted = int(rng.integers(spec.min_objects, spec.max_objects + 1))
        visible: list[int] = []
        scene_classes = []
        for _ in range(4 * wanted):
            if len(visible) == wanted:
                break
            j = int(pool[rng.integers(len(pool))])
            side = int(rng.integers(spec.min_size, spec.max_size + 1))
            aspect = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
            h = int(np.clip(round(side * aspect**0.5), 4, spec.canvas))
            w = int(np.clip(round(side / aspect**0.5), 4, spec.canvas))
            item = _resized(items[j].astype(np.float32) / 255.0, h, w)
            if _place(images[i], instances[i], visible, item, rng, spec):
                scene_classes.append(int(labels[j]))
        classes.append(np.asarray(scene_classes, np.int64))
    if spec.clutter:  # a stream of its own: the objects are those of the plain scenes
        rng_clutter = np.random.default_rng([seed, 1])
        for i in range(count):
            _clutter(images[i], instances[i], items, pool, rng_clutter, spec)
    return InstanceSet(images, instances, classes, class_names)


def item_source(name: str, data_path=None) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """The photos scenes are made of: 'fashion-mnist' (the real thing) or 'digits' (scikit-learn's
    bundled 8x8 digits, for tests on machines without Fashion-MNIST)."""
    from papercli.data import registry as datasets

    data = datasets.get(name).load(data_path)
    if name == "fashion-mnist":
        from papercli.data.fashion_mnist import CLASSES

        return data, CLASSES
    return data, tuple(str(c) for c in range(10))


def load(
    split: str,
    count: int,
    spec: SceneSpec = SceneSpec(),
    items: str = "fashion-mnist",
    seed: int = 0,
    data_path=None,
) -> InstanceSet:
    """`count` scenes of `split` ('train' or 'test'); each split draws only its own photos."""
    data, names = item_source(items, data_path)
    return make_scenes(data[f"{split}_x"], data[f"{split}_y"], names, count, spec, seed)
