"""COCO 2017 detection data for the detection recipes at paper scale, read with pycocotools.

Expected layout of `--data DIR` (the official archives unpacked side by side):
    DIR/annotations/instances_train2017.json   DIR/train2017/*.jpg
    DIR/annotations/instances_val2017.json     DIR/val2017/*.jpg
Every image is letterboxed: resized so its longer side is `size` pixels, then padded to a
`size`×`size` square at the bottom and right, so a batch stacks without per-batch padding and
boxes only scale. (Faster R-CNN resizes the shorter side to 600–800 instead; a fixed square is
what YOLO (448) and SSD (300) use and keeps one data path for every recipe.) Crowd regions are
left out of training and scoring; category ids are renumbered 0…79 in id order.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch

from papercli.errors import PapercliError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet statistics of the backbones
LAYOUT = "a COCO 2017 folder: annotations/instances_{train2017,val2017}.json with train2017/ and val2017/"


def annotation_file(root: Path, split: str) -> Path:
    path = Path(root) / "annotations" / f"instances_{split}.json"
    if not path.is_file() or not (Path(root) / split).is_dir():
        raise PapercliError(f"{root} is not {LAYOUT} (missing {path.name} or {split}/)")
    return path


def check_layout(root: Path | None) -> Path:
    """`root` when it holds both splits of the layout above (the data-set registry's loader)."""
    if root is None:
        raise PapercliError(f"COCO is not downloadable: pass --data DIR, {LAYOUT}")
    for split in ("train2017", "val2017"):
        annotation_file(root, split)
    return Path(root)


class CocoDetection(torch.utils.data.Dataset):
    """(image (3, size, size) normalised, target) pairs; a target holds 'boxes' (k, 4) xyxy in
    the letterboxed pixels, 'labels' (k,) int64 and, with `with_masks`, 'masks' (k, size, size)."""

    def __init__(
        self, root: Path, split: str, size: int, with_masks: bool = False, train: bool = False
    ):
        from pycocotools.coco import COCO

        path = annotation_file(root, split)
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(str(path))
        self.folder = Path(root) / split
        self.size, self.with_masks, self.train = size, with_masks, train
        categories = sorted(self.coco.getCatIds())
        self.label_of = {cat: i for i, cat in enumerate(categories)}
        self.class_names = tuple(c["name"] for c in self.coco.loadCats(categories))
        ids = sorted(self.coco.getImgIds())
        if train:  # images with nothing to learn from are skipped in training, as the papers do
            ids = [i for i in ids if self.coco.getAnnIds(imgIds=i, iscrowd=False)]
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: int | tuple[int, int]):
        from PIL import Image

        index = key[0] if isinstance(key, tuple) else key
        info = self.coco.loadImgs(self.ids[index])[0]
        with Image.open(self.folder / info["file_name"]) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = self.size / max(w, h)
            new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
            im = im.resize((new_w, new_h), Image.Resampling.BILINEAR)
            pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        image = torch.zeros(3, self.size, self.size)
        image[:, :new_h, :new_w] = pixels.view(new_h, new_w, 3).permute(2, 0, 1).float() / 255.0
        image[:, :new_h, :new_w] -= torch.tensor(MEAN).view(3, 1, 1)
        image[:, :new_h, :new_w] /= torch.tensor(STD).view(3, 1, 1)
        anns = [
            a
            for a in self.coco.loadAnns(self.coco.getAnnIds(imgIds=info["id"], iscrowd=False))
            if a["bbox"][2] > 0 and a["bbox"][3] > 0
        ]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh → xyxy
        target = {
            "boxes": boxes * scale,
            "labels": torch.tensor(
                [self.label_of[a["category_id"]] for a in anns], dtype=torch.int64
            ),
        }
        if self.with_masks:
            masks = torch.zeros(len(anns), self.size, self.size, dtype=torch.bool)
            for k, a in enumerate(anns):
                full = torch.from_numpy(self.coco.annToMask(a).astype(np.float32))[None, None]
                small = torch.nn.functional.interpolate(full, size=(new_h, new_w), mode="nearest")
                masks[k, :new_h, :new_w] = small[0, 0] > 0.5
            target["masks"] = masks
        return image, target


def collate(batch):
    """Stack the (equal-sized) images; keep the targets a list."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)
