"""What the image-classification recipes (ResNet, ViT) share: the data sets, batches, and a
per-arm evaluation of training loss and test accuracy. The paper-specific parts — which models,
which optimiser and schedule, which comparison decides the verdict — stay in each recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from papercli.data import registry as datasets
from papercli.data.transforms import normalize, pad_crop_flip
from papercli.metrics.classification import correct, cross_entropy_sum
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import Recipe, TrainConfig

Dataset = Literal["fashion-mnist", "digits", "cifar10", "imagenet"]


@dataclass
class ClassificationConfig(TrainConfig):
    dataset: Dataset = "fashion-mnist"
    image_size: int = bounded(0, ge=0)  # 0 = native; else resample (in memory) or crop (folders)
    augment: bool = True
    label_smoothing: float = fraction(0.0)
    eval_train_samples: int = bounded(5000, ge=1)  # fixed training subset for loss curves
    train_samples: int = bounded(0, ge=0)  # 0 = all training images; else a fixed subset
    eval_test_samples: int = bounded(0, ge=0)  # 0 = the whole test set
    workers: int = bounded(8, ge=0)  # DataLoader processes for image folders


def load_in_memory(name: str, data_path) -> dict[str, torch.Tensor]:
    """uint8 images (N, [C,] H, W) and int64 labels of an in-memory data set."""
    d = datasets.get(name).load(data_path)
    return {
        k: torch.from_numpy(np.array(v, dtype=np.int64 if k.endswith("_y") else np.uint8))
        for k, v in d.items()
    }


class ClassificationRecipe(Recipe):
    cfg: ClassificationConfig
    channels_last = True
    unit = "images"

    # --- data -----------------------------------------------------------------------------------
    @property
    def spec(self) -> datasets.DatasetSpec:
        return datasets.get(self.cfg.dataset)

    def data_source(self) -> str:
        where = f" from {self.ctx.data_path}" if self.ctx.data_path else ""
        return f"{self.cfg.dataset}: {self.spec.description}{where}"

    @property
    def in_channels(self) -> int:
        return self.spec.shape[0]

    @property
    def num_classes(self) -> int:
        classes = getattr(self, "classes", None)  # an image folder may hold fewer classes
        return len(classes) if classes else self.spec.num_classes

    @property
    def input_size(self) -> int:
        return self.cfg.image_size or self.spec.shape[-1]

    def setup_data(self) -> None:
        if self.cfg.dataset == "imagenet":
            from papercli.data.imagefolder import ImageFolder
            from papercli.errors import PapercliError

            if self.ctx.data_path is None:
                raise PapercliError(
                    "ImageNet is not downloadable: pass --data PATH (a folder with train/ and val/)"
                )
            self.train_set = ImageFolder(
                self.ctx.data_path / "train", train=True, size=self.input_size, seed=self.ctx.seed
            )
            self.val_set = ImageFolder(
                self.ctx.data_path / "val", train=False, size=self.input_size
            )
            self.classes = self.train_set.classes
            # a fixed training subset, centre-cropped, for training-loss curves (ResNet's Fig. 4)
            train_eval = ImageFolder(
                self.ctx.data_path / "train", train=False, size=self.input_size
            )
            g = torch.Generator().manual_seed(1234)
            n_train = min(self.cfg.eval_train_samples, len(train_eval))
            pick = torch.randperm(len(train_eval), generator=g)[:n_train].tolist()
            self.train_eval_set = torch.utils.data.Subset(train_eval, pick)
            self._loader = None
            return
        d = load_in_memory(self.cfg.dataset, self.ctx.data_path)
        self.train_x, self.train_y, self.test_x, self.test_y = (
            d["train_x"],
            d["train_y"],
            d["test_x"],
            d["test_y"],
        )
        self.mean, self.std = self.spec.mean, self.spec.std
        if self.cfg.train_samples and self.cfg.train_samples < len(self.train_x):
            # a small labelled set (data-efficiency claims), the same images whatever the seed
            keep = torch.randperm(len(self.train_x), generator=torch.Generator().manual_seed(4321))
            keep = keep[: self.cfg.train_samples]
            self.train_x, self.train_y = self.train_x[keep], self.train_y[keep]
        g = torch.Generator().manual_seed(1234)  # the same evaluation subsets in every run
        n_train = min(self.cfg.eval_train_samples, len(self.train_x))
        self.eval_train_idx = torch.randperm(len(self.train_x), generator=g)[:n_train]
        n_test = min(self.cfg.eval_test_samples or len(self.test_x), len(self.test_x))
        self.eval_test_idx = torch.arange(n_test)

    def steps_per_epoch(self) -> int:
        """Steps of one global batch per pass over the training set (known before loading)."""
        if hasattr(self, "train_set"):
            n = len(self.train_set)
        elif hasattr(self, "train_x"):
            n = len(self.train_x)
        else:
            n = min(self.spec.train_size, self.cfg.train_samples or self.spec.train_size)
        return max(1, n // self.cfg.batch_size)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255.0)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if self.cfg.image_size and self.cfg.image_size != x.shape[-1]:
            x = F.interpolate(
                x,
                size=(self.cfg.image_size, self.cfg.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        return normalize(x, self.mean, self.std)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.ctx.device, non_blocking=True)
        return (
            x.contiguous(memory_format=torch.channels_last) if self.ctx.device.type == "cuda" else x
        )

    def train_batch(self, step: int, micro: int = 0):
        if self.cfg.dataset == "imagenet":
            return self._folder_batch(step, micro)
        idx = self.ctx.batch_indices(len(self.train_x), step, micro)
        x = self._prepare(self.train_x[idx])
        if self.cfg.augment:
            x = self.shift_flip(x, self.ctx.generator(step, stream=self.ctx.shard(micro)))
        return self._to_device(x), self.train_y[idx].to(self.ctx.device)

    @staticmethod
    def shift_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`augment`'s random shift and horizontal flip of in-memory images."""
        pad = max(1, x.shape[-1] // 8)  # 4 px at 32 px (ResNet Section 4.2), in proportion
        return pad_crop_flip(x, pad, generator)

    def _folder_batch(self, step: int, micro: int):
        position = (step, micro)
        if self._loader is None or self._next != position:
            from papercli.data.imagefolder import StepBatchSampler

            sampler = StepBatchSampler(self.ctx, len(self.train_set), step, self.cfg.steps)
            self._loader = iter(
                torch.utils.data.DataLoader(
                    self.train_set,
                    batch_sampler=sampler,
                    num_workers=self.cfg.workers,
                    pin_memory=self.ctx.device.type == "cuda",
                    persistent_workers=self.cfg.workers > 0,
                )
            )
        x, y = next(self._loader)
        self._next = (step, micro + 1) if micro + 1 < self.ctx.accum_steps else (step + 1, 0)
        return self._to_device(x), y.to(self.ctx.device, non_blocking=True)

    # --- training and evaluation ----------------------------------------------------------------
    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Each arm's cross-entropy; the arms are independent models, so the backward pass of the
        summed losses gives each arm exactly its own gradients."""
        x, y = batch
        return {
            name: F.cross_entropy(out.float(), y, label_smoothing=self.cfg.label_smoothing)
            for name, out in model(x).items()
        }

    def _score(self, model: nn.Module, batches) -> dict[str, tuple[float, float]]:
        """Mean cross-entropy and accuracy of every arm over (x, y) batches."""
        sums: dict[str, list[float]] = {name: [0.0, 0.0] for name in model}
        count = 0
        for x, y in batches:
            x, y = self._to_device(x), y.to(self.ctx.device)
            count += len(y)
            for name, out in model(x).items():
                sums[name][0] += cross_entropy_sum(out, y)
                sums[name][1] += correct(out, y)
        return {name: (s[0] / max(count, 1), s[1] / max(count, 1)) for name, s in sums.items()}

    def _tensor_batches(self, xs: torch.Tensor, ys: torch.Tensor, size: int = 1000):
        for start in range(0, len(xs), size):
            yield self._prepare(xs[start : start + size]), ys[start : start + size]

    def eval_batches(self, split: str):
        """The evaluated images of `split` ("test" or "train"): an image folder's loader, or the
        in-memory subset `eval_test_idx` / `eval_train_idx` picks."""
        if self.cfg.dataset == "imagenet":
            folder = self.val_set if split == "test" else self.train_eval_set
            return torch.utils.data.DataLoader(folder, batch_size=250, num_workers=self.cfg.workers)
        if split == "test":
            return self._tensor_batches(
                self.test_x[self.eval_test_idx], self.test_y[self.eval_test_idx]
            )
        return self._tensor_batches(
            self.train_x[self.eval_train_idx], self.train_y[self.eval_train_idx]
        )

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        train = self._score(model, self.eval_batches("train"))
        test = self._score(model, self.eval_batches("test"))
        metrics: dict[str, float] = {}
        for name in model:
            if name in train:
                metrics[f"{name}_train_loss"] = train[name][0]
                metrics[f"{name}_train_error"] = 1.0 - train[name][1]
            metrics[f"{name}_test_acc"] = test[name][1]
        return metrics
