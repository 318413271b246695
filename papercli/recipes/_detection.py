"""What the detection and segmentation recipes (R-CNN family, YOLO, SSD, DETR, Mask R-CNN, SAM …)
share: the instance data sets, batches with their targets, and a per-arm COCO evaluation that
also times inference. Each recipe keeps what makes its paper: the model, the loss, and `detect`,
which turns the model's outputs into scored boxes (and masks) the way its paper does.

Data (`dataset`):
- `scenes`: Fashion-MNIST photos on a `canvas`-pixel canvas (`papercli.data.scenes`), train
  scenes from the training photos, test scenes from the test photos, generated from fixed seeds
  so every run and every arm sees the same scenes;
- `nuclei`: crops of the DSB 2018 nuclei image with its instance masks (U-Net's mini data),
  trained on random crops of the left 75 %, scored on the held-out right 25 % tiled once;
- `coco`: COCO 2017 from `--data DIR` at paper scale (`papercli.data.coco`: RGB, letterboxed to
  `canvas` pixels, the first `test_images` of val2017 scored).
Batches are `(images (B, C, H, W), targets)` with torchvision-style targets per image:
{'boxes' (k, 4) x0 y0 x1 y1 pixel edges, 'labels' (k,) int64[, 'masks' (k, H, W) bool]}.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from papercli.data.instances import InstanceSet
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.recipe import Recipe, TrainConfig

TRAIN_SEED, TEST_SEED = 2024, 7  # scene generation: the same scenes in every run


@dataclass
class DetectionConfig(TrainConfig):
    dataset: Literal["scenes", "nuclei", "coco"] = "scenes"
    items: Literal["fashion-mnist", "digits"] = "fashion-mnist"  # what scenes are made of
    canvas: int = bounded(64, ge=16)  # scene side, nuclei crop side, or COCO's letterbox side
    train_images: int = bounded(4000, ge=1)
    test_images: int = bounded(500, ge=1)  # scenes only: nuclei tile their held-out part
    min_objects: int = bounded(1, ge=1)
    max_objects: int = bounded(4, ge=1)
    min_size: int = bounded(12, ge=4)
    max_size: int = bounded(32, ge=4)
    clutter: int = bounded(0, ge=0)  # scenes: dim photo fragments behind the objects (0 = none)
    clutter_contrast: float = bounded(0.5, gt=0.0, le=1.0)  # … and their brightest pixel
    holdout: float = bounded(0.25, gt=0.0, lt=1.0)  # nuclei: share of the image never trained on
    flip: bool = True  # horizontal flips, as every detector here trains
    score_threshold: float = fraction(0.05)  # detections below are dropped before AP (COCO)
    max_detections: int = bounded(100, ge=1)
    # COCO's small/medium/large split is at 32² and 96² pixels; on these small images the split
    # sits at these sides instead (in pixels), so "small objects" keeps its meaning
    small_side: int = bounded(16, ge=1)
    medium_side: int = bounded(32, ge=1)
    workers: int = bounded(8, ge=0)  # DataLoader processes reading COCO images


class DetectionRecipe(Recipe):
    cfg: DetectionConfig
    unit = "images"
    with_masks = False  # also score instance masks (mask AP), and batch the masks

    # --- data -----------------------------------------------------------------------------------
    def data_source(self) -> str:
        c = self.cfg
        if c.dataset == "coco":
            return f"coco: COCO 2017 from {self.ctx.data_path or '--data DIR (required)'}"
        if c.dataset == "nuclei":
            return (
                f"nuclei: DSB 2018 (BBBC038, CC0) {c.canvas}px crops; right {c.holdout:.0%} "
                "held out"
            )
        return (
            f"scenes: {c.train_images:,} train / {c.test_images:,} test {c.canvas}px canvases of "
            f"{c.min_objects}-{c.max_objects} {c.items} items, {c.min_size}-{c.max_size}px"
            + (f", {c.clutter} background fragments" if c.clutter else "")
        )

    def dataset_name(self) -> str:
        """Scenes are made of `items` photos: that is the data set a machine must have."""
        return self.cfg.items if self.cfg.dataset == "scenes" else self.cfg.dataset

    def scene_classes(self, split: str) -> tuple[int, ...] | None:
        """Item classes a split may show (all by default; SAM holds some out of training)."""
        return None

    @property
    def in_channels(self) -> int:
        return 3 if self.cfg.dataset == "coco" else 1

    def setup_data(self) -> None:
        c = self.cfg
        if c.dataset == "coco":
            from papercli.data import coco

            root = coco.check_layout(self.ctx.data_path)
            self.train_set = coco.CocoDetection(root, "train2017", c.canvas, self.with_masks, True)
            self.test_set = coco.CocoDetection(root, "val2017", c.canvas, self.with_masks)
            self._loader = None
            return
        if c.dataset == "nuclei":
            from papercli.data import nuclei

            self.train_set = nuclei.instance_crops(
                "train", c.canvas, c.train_images, c.holdout, seed=TRAIN_SEED
            )
            self.test_set = nuclei.instance_crops("test", c.canvas, holdout=c.holdout)
            return
        from papercli.data import scenes

        def spec(split: str) -> scenes.SceneSpec:
            return scenes.SceneSpec(
                canvas=c.canvas,
                min_objects=c.min_objects,
                max_objects=c.max_objects,
                min_size=c.min_size,
                max_size=c.max_size,
                classes=self.scene_classes(split),
                clutter=c.clutter,
                clutter_contrast=c.clutter_contrast,
            )

        self.train_set, self.test_set = (
            scenes.load(split, count, spec(split), c.items, seed, self.ctx.data_path)
            for split, count, seed in (
                ("train", c.train_images, TRAIN_SEED),
                ("test", c.test_images, TEST_SEED),
            )
        )

    @property
    def num_classes(self) -> int:
        """Object classes of the data; without a COCO folder, COCO's 80 from the data-set
        registry, so a paper-scale dry run (parameter counts on the meta device) needs no data."""
        from papercli.data import registry as datasets

        if self.cfg.dataset == "coco" and self.ctx.data_path is None:
            return datasets.get("coco").num_classes
        if self.cfg.dataset == "scenes":  # the items' classes: known without making the scenes
            return datasets.get(self.cfg.items).num_classes
        if self.cfg.dataset == "nuclei":
            from papercli.data.nuclei import INSTANCE_CLASSES

            return len(INSTANCE_CLASSES)
        self.ensure_data()
        return len(self.train_set.class_names)

    def steps_per_epoch(self) -> int:
        if self.cfg.dataset == "coco":
            self.ensure_data()
            return max(1, len(self.train_set) // self.cfg.batch_size)
        return max(1, self.cfg.train_images // self.cfg.batch_size)

    def images(self, data: InstanceSet, index) -> torch.Tensor:
        return torch.from_numpy(data.images[np.asarray(index)])[:, None].to(self.ctx.device)

    def train_batch(self, step: int, micro: int = 0):
        """Images and targets of this micro-batch, each image flipped left-right with p = 1/2."""
        if self.cfg.dataset == "coco":
            x, targets = self._coco_batch(step, micro)
        else:
            idx = self.ctx.batch_indices(len(self.train_set), step, micro)
            x = self.images(self.train_set, idx)
            targets = self.train_set.targets(idx, self.ctx.device, with_masks=self.with_masks)
        if self.cfg.flip:
            g = self.ctx.generator(step, stream=self.ctx.shard(micro))
            flips = torch.rand(len(x), generator=g) < 0.5
            width = x.shape[-1]
            for i in flips.nonzero().flatten().tolist():
                x[i] = x[i].flip(-1)
                t = targets[i]
                t["boxes"] = torch.stack(
                    [
                        width - t["boxes"][:, 2],
                        t["boxes"][:, 1],
                        width - t["boxes"][:, 0],
                        t["boxes"][:, 3],
                    ],
                    dim=1,
                )
                if "masks" in t:
                    t["masks"] = t["masks"].flip(-1)
        return x, targets

    def _coco_batch(self, step: int, micro: int):
        """The next micro-batch from a DataLoader that reads exactly the engine's batch indices
        (so a resumed run sees the same images); restarted when a run jumps (resume)."""
        from papercli.data.coco import collate

        if self._loader is None or self._next != (step, micro):
            from papercli.data.imagefolder import StepBatchSampler

            sampler = StepBatchSampler(self.ctx, len(self.train_set), step, self.cfg.steps)
            self._loader = iter(
                torch.utils.data.DataLoader(
                    self.train_set,
                    batch_sampler=sampler,
                    collate_fn=collate,
                    num_workers=self.cfg.workers,
                    pin_memory=self.ctx.device.type == "cuda",
                    persistent_workers=self.cfg.workers > 0,
                )
            )
        x, targets = next(self._loader)
        self._next = (step, micro + 1) if micro + 1 < self.ctx.accum_steps else (step + 1, 0)
        device = self.ctx.device
        return x.to(device), [{k: v.to(device) for k, v in t.items()} for t in targets]

    def _test_batches(self):
        """(images, targets on CPU) over the scored test images, 100 (COCO: 16) at a time."""
        data = self.test_set
        if self.cfg.dataset == "coco":
            from papercli.data.coco import collate

            count = min(self.cfg.test_images, len(data))
            loader = torch.utils.data.DataLoader(
                torch.utils.data.Subset(data, range(count)),
                batch_size=16,
                collate_fn=collate,
                num_workers=self.cfg.workers,
            )
            for x, targets in loader:
                yield x.to(self.ctx.device), targets
            return
        for start in range(0, len(data), 100):
            index = range(start, min(start + 100, len(data)))
            yield self.images(data, index), data.targets(index, with_masks=self.with_masks)

    # --- evaluation -----------------------------------------------------------------------------
    def arms(self, model: nn.Module) -> dict[str, nn.Module]:
        """The detectors to score: every arm of an `Arms` dict, or the one model as 'model'."""
        return dict(model.items()) if isinstance(model, nn.ModuleDict) else {"model": model}

    def detect(self, name: str, model: nn.Module, images: torch.Tensor) -> list[dict]:
        """Scored detections per image: {'boxes', 'scores', 'labels'[, 'masks' (k, H, W) in
        [0, 1]]}, after the paper's own post-processing (NMS or none)."""
        raise NotImplementedError

    def scored_targets(self, name: str, targets: list[dict]) -> list[dict]:
        """The ground truth arm `name` is scored against: all of it (a recipe may score a subset
        of the classes, e.g. only those held out of training)."""
        return targets

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """COCO AP (box, and mask when `with_masks`) and inference time per image of every arm on
        the test images."""
        from papercli.metrics.detection import coco_ap

        arms = self.arms(model)
        found: dict[str, list[dict]] = {name: [] for name in arms}
        targets: dict[str, list[dict]] = {name: [] for name in arms}
        seconds = dict.fromkeys(arms, 0.0)  # model time only, not the data reading
        for images, batch_targets in self._test_batches():  # the test data is read once
            for name, arm in arms.items():
                started = time.perf_counter()
                detections = self.detect(name, arm, images)
                seconds[name] += time.perf_counter() - started
                found[name].extend(self._kept(d) for d in detections)
                targets[name].extend(self.scored_targets(name, batch_targets))
        metrics: dict[str, float] = {}
        areas = (self.cfg.small_side**2, self.cfg.medium_side**2)
        num_classes = len(self.test_set.class_names)
        for name in arms:
            metrics[f"{name}_ms_per_image"] = 1000 * seconds[name] / max(len(targets[name]), 1)
            for iou_type, prefix in (("bbox", ""), ("segm", "mask_")):
                if iou_type == "segm" and not self.with_masks:
                    continue
                scores = coco_ap(
                    found[name],
                    targets[name],
                    num_classes,
                    iou_type,
                    areas,
                    self.cfg.max_detections,
                    image_size=(self.cfg.canvas, self.cfg.canvas),
                )
                metrics.update({f"{name}_{prefix}{k}": v for k, v in scores.items()})
        return metrics

    def _kept(self, found: dict) -> dict:
        """Detections above the score threshold, best first, at most `max_detections`, on CPU."""
        keep = found["scores"] >= self.cfg.score_threshold
        order = found["scores"][keep].argsort(descending=True)[: self.cfg.max_detections]
        return {k: v[keep][order].detach().float().cpu() for k, v in found.items()}

    def plots(self, model: nn.Module, run_dir: Path) -> None:
        """detections.png: eight test images with every arm's boxes above score 0.5."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        arms = self.arms(model)
        images = next(self._test_batches())[0][:8]
        names = self.test_set.class_names
        fig, axes = plt.subplots(len(arms), 8, figsize=(16, 2.2 * len(arms)), squeeze=False)
        with torch.no_grad():
            for row, (name, arm) in enumerate(arms.items()):
                for col, found in enumerate(self.detect(name, arm, images)):
                    ax = axes[row][col]
                    ax.imshow(images[col].float().mean(0).cpu(), cmap="gray")
                    ax.set_axis_off()
                    for box, label, score in zip(
                        found["boxes"], found["labels"], found["scores"], strict=True
                    ):
                        if score < 0.5:
                            continue
                        x0, y0, x1, y1 = box.tolist()
                        ax.add_patch(
                            plt.Rectangle(
                                (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="r"
                            )
                        )
                        ax.text(x0, y0, names[int(label)], color="y", fontsize=6)
                axes[row][0].set_title(name, fontsize=8, loc="left")
        fig.tight_layout()
        fig.savefig(run_dir / "detections.png", dpi=80)
        plt.close(fig)
