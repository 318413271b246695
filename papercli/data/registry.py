"""One spec per data set: what it is, its shape and statistics, how to load it, whether it is on
this machine and how to get it. Recipes read their data set's facts from here; `papercli doctor`
asks it what is present. Torch-free: loaders are named as "module:function" and imported on use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from papercli.data import sources
from papercli.errors import UsageError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str  # one line: what it is and where it comes from
    kind: str  # "images" (classification) | "segmentation" | "text" | "translation"
    shape: tuple[int, ...]  # one sample: (channels, height, width) for images
    loader: str  # "module:function", called as loader(data_path)
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None  # per channel, in [0, 1] pixel units
    std: tuple[float, ...] | None = None
    train_size: int | None = None
    test_size: int | None = None
    offline: bool = False  # installs with papercli or a system package: no --data, no download
    how_to_get: str = ""

    def status(self) -> sources.Status:
        check = getattr(sources, self.name.replace("-", "_"), None)
        return check() if check is not None else sources.needs_path(self.name, self.how_to_get)

    def load(self, data_path: Path | None = None) -> Any:
        module, _, function = self.loader.partition(":")
        fn = getattr(importlib.import_module(module), function)
        return fn(data_path)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="nuclei",
            description="DSB 2018 fluorescence nuclei (BBBC038, CC0), 512x512, 125 instances",
            kind="segmentation",
            shape=(1, 512, 512),
            loader="papercli.data.nuclei:load",
            num_classes=2,
            offline=True,
            how_to_get="shipped inside papercli (papercli/data/files/nuclei2d.npz): reinstall",
        ),
        DatasetSpec(
            name="isbi2012",
            description="ISBI 2012 EM segmentation stacks (30 slices of 512x512, membranes)",
            kind="segmentation",
            shape=(1, 512, 512),
            loader="papercli.data.isbi2012:load",
            num_classes=2,
            train_size=30,
            how_to_get="--data PATH to a folder with train-volume.tif and train-labels.tif",
        ),
        DatasetSpec(
            name="fashion-mnist",
            description="Fashion-MNIST, 60k/10k real 28x28 grayscale photos, 10 classes",
            kind="images",
            shape=(1, 28, 28),
            loader="papercli.data.fashion_mnist:load",
            num_classes=10,
            mean=(0.2860,),
            std=(0.3530,),
            train_size=60_000,
            test_size=10_000,
            offline=True,
            how_to_get="apt-get install dataset-fashion-mnist, or python -m papercli.data.fashion_mnist",
        ),
        DatasetSpec(
            name="digits",
            description="scikit-learn digits, 1797 real 8x8 images (1500 train / 297 test)",
            kind="images",
            shape=(1, 8, 8),
            loader="papercli.data.digits:load",
            num_classes=10,
            mean=(0.3,),
            std=(0.4,),
            train_size=1500,
            test_size=297,
            offline=True,
            how_to_get="pip install scikit-learn",
        ),
        DatasetSpec(
            name="cifar10",
            description="CIFAR-10 binary release, 50k/10k 32x32 colour images, 10 classes",
            kind="images",
            shape=(3, 32, 32),
            loader="papercli.data.cifar10:load",
            num_classes=10,
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            train_size=50_000,
            test_size=10_000,
            how_to_get="--data PATH (folder or archive), or downloaded with an MD5 check",
        ),
        DatasetSpec(
            name="imagenet",
            description="ImageNet-1k (ILSVRC 2012) as a folder: train/<class>/…, val/<class>/…",
            kind="images",
            shape=(3, 224, 224),
            loader="papercli.data.imagefolder:ImageFolder",
            num_classes=1000,
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            train_size=1_281_167,
            test_size=50_000,
            how_to_get="--data PATH to an ImageNet-style folder (not downloadable)",
        ),
        DatasetSpec(
            name="image-text",
            description="image-caption pairs from a folder (CLIP's WIT: 400M pairs, unreleased)",
            kind="image-text",
            shape=(3, 224, 224),
            loader="papercli.data.image_text:read_captions",
            mean=(0.485, 0.456, 0.406),  # the normalisation ImageFolder applies
            std=(0.229, 0.224, 0.225),
            train_size=400_000_000,
            how_to_get="--data PATH to a folder with captions.tsv (<image path>\\t<caption> per "
            "line) and the images; val/<class>/ (and train/<class>/) for zero-shot and the probe",
        ),
        DatasetSpec(
            name="plays",
            description="Shakespeare's 38 plays (5.0M characters), 6 held out, one per genre",
            kind="text",
            shape=(),
            loader="papercli.data.plays:corpus",
            train_size=32,
            test_size=6,
            offline=True,
            how_to_get="shipped inside papercli (papercli/data/files/plays.tar.xz): reinstall",
        ),
        DatasetSpec(
            name="numbers",
            description="German/English spelled-out numbers (num2words), 30k pairs, 500 held out",
            kind="translation",
            shape=(),
            loader="papercli.data.translation:load",
            train_size=30_000,
            test_size=500,
            offline=True,
            how_to_get="generated by num2words: pip install 'papercli[train]'",
        ),
        DatasetSpec(
            name="wmt14",
            description="WMT14 English-German, 4.5M sentence pairs, newstest2014 for BLEU",
            kind="translation",
            shape=(),
            loader="papercli.data.translation:wmt14",
            test_size=3003,
            how_to_get="--data DIR with train.en, train.de, newstest2014.en, newstest2014.de",
        ),
        DatasetSpec(
            name="text",
            description="plain text: a folder of .txt files (e.g. OpenWebText), 1% of files held out",
            kind="text",
            shape=(),
            loader="papercli.recipes.gpt2:read_text_folder",
            how_to_get="--data PATH to a folder of .txt files (not downloadable)",
        ),
        DatasetSpec(
            name="ade20k",
            description="ADE20K scene parsing: 20k train / 2k val images, 150 classes",
            kind="segmentation",
            shape=(3, 0, 0),
            loader="papercli.recipes._segmentation:load_paper_data",
            num_classes=150,
            how_to_get="not read yet by papercli (SegFormer and OneFormer run at mini scale)",
        ),
        DatasetSpec(
            name="coco-panoptic",
            description="COCO 2017 panoptic: 118k train / 5k val images, 133 classes",
            kind="segmentation",
            shape=(3, 0, 0),
            loader="papercli.recipes._segmentation:load_paper_data",
            num_classes=133,
            how_to_get="not read yet by papercli (OneFormer runs at mini scale)",
        ),
        DatasetSpec(
            name="coco",
            description="COCO 2017 detection: 118k train / 5k val images, 80 classes, boxes + masks",
            kind="detection",
            shape=(3, 0, 0),
            loader="papercli.data.coco:check_layout",
            num_classes=80,
            train_size=118287,
            test_size=5000,
            how_to_get="--data DIR with annotations/instances_{train,val}2017.json, train2017/, "
            "val2017/ (cocodataset.org; not downloaded by papercli)",
        ),
    )
}


def get(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UsageError(
            f"unknown data set '{name}' (known: {', '.join(sorted(DATASETS))})"
        ) from None
