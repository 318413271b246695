"""U-Net: Convolutional Networks for Biomedical Image Segmentation (Ronneberger et al., 2015).

Claim checked at mini scale: trained from very few annotated images with heavy elastic augmentation
and the border-weighted loss, U-Net segments cells it has never seen — foreground IoU >= 0.80 on a
held-out part of a real fluorescence image — in a few minutes on a laptop CPU.

    papercli reproduce unet                       # mini: nuclei image shipped in papercli/data/files
    papercli reproduce unet --gpu --scale paper --data ~/data/isbi2012

The parts of the paper, in the order they appear below:
  Fig. 1        the network (papercli/models/unet.py)
  Section 2     overlap-tile strategy, mirroring at the image border        -> overlap_tile_predict
  Section 3     weighted soft-max cross-entropy, Eq. 1                      -> weighted_cross_entropy
  Section 3     weight map w(x) = w_c(x) + w0·exp(−(d1+d2)²/2σ²), Eq. 2     -> border_weight_map
  Section 3     SGD, batch of one large tile, momentum 0.99                 -> configure_optimizers
  Section 3.1   elastic deformations on a coarse 3x3 grid, σ = 10 px        -> train_batch
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from papercli.data import augment
from papercli.data import registry as datasets
from papercli.metrics.segmentation import foreground_iou, object_f1, rand_error
from papercli.models.unet import UNet, unet
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import Recipe, TrainConfig, run
from papercli.reproduce.optim import warmup_cosine


@dataclass
class UNetTrainConfig(TrainConfig):
    model: Literal["unet-mini", "unet-paper"] = "unet-mini"
    dataset: Literal["nuclei", "isbi2012"] = "nuclei"
    tile: int = bounded(
        96, ge=16
    )  # training *input* tile side (rounded up to a size the net takes)
    lr: float = bounded(0.01, gt=0.0)
    momentum: float = fraction(0.99)  # Section 3: "a high momentum (0.99)"
    w0: float = bounded(10.0, ge=0.0)  # Eq. 2
    sigma: float = bounded(5.0, gt=0.0)  # Eq. 2, "σ ≈ 5 pixels"
    elastic_sigma: float = bounded(10.0, ge=0.0)  # Section 3.1: displacement std in pixels
    elastic_points: int = bounded(3, ge=2)  # Section 3.1: coarse 3x3 grid
    dropout: float = fraction(0.0)
    holdout: float = bounded(0.25, gt=0.0, lt=1.0)  # share of the nuclei image never trained on


MINI = UNetTrainConfig(steps=400, batch_size=8, eval_every=100, tile=96, lr=0.01)
# The paper's configuration: Fig. 1 network (31.0M parameters), 572x572 input tiles (388x388 output),
# batch of one tile, momentum 0.99, drop-out at the end of the contracting path, ISBI 2012 data.
PAPER = UNetTrainConfig(
    model="unet-paper",
    dataset="isbi2012",
    steps=20_000,
    batch_size=1,
    eval_every=1000,
    tile=572,
    lr=0.01,
    dropout=0.5,
    log_every=50,
)


# ----------------------------------------------------------------------------- Eq. 2
def border_weight_map(instances: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """w(x) = w_c(x) + w0 · exp(−(d1(x) + d2(x))² / 2σ²)   (Eq. 2)

    d1, d2: distance to the border of the nearest and second-nearest cell. The second term is large
    only in narrow background gaps between touching cells, which forces the network to learn the
    separating borders. w_c balances the class frequencies."""
    from scipy import ndimage

    foreground = instances > 0
    ids = np.unique(instances[foreground])
    fg_frac = foreground.mean()
    w_c = np.where(foreground, 0.5 / max(fg_frac, 1e-6), 0.5 / max(1 - fg_frac, 1e-6)).astype(
        np.float32
    )
    w_c /= w_c.mean()
    if len(ids) < 2:
        return w_c
    # distance from every pixel to each cell; keep the two smallest (a running top-2 keeps memory flat)
    d1 = np.full(instances.shape, np.inf, dtype=np.float32)
    d2 = np.full(instances.shape, np.inf, dtype=np.float32)
    for i in ids:
        d = ndimage.distance_transform_edt(instances != i).astype(np.float32)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return (w_c + border * ~foreground).astype(np.float32)  # the border term applies between cells


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Eq. 1: pixel-wise soft-max + cross-entropy, each pixel weighted by w(x)."""
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (ce * weights).mean()


# ----------------------------------------------------------------------------- Section 2
@torch.no_grad()
def overlap_tile_predict(
    model: UNet, image: torch.Tensor, out_tile: int, context: int = 16
) -> torch.Tensor:
    """Segment an image of any size (Section 2, Fig. 2): cut it into output tiles, give each tile
    its surrounding context (the border the valid convolutions consume, or `context` pixels for a
    padded net), mirror the image beyond its edges, and stitch the tile predictions.

    image: (C, H, W). Returns class probabilities (num_classes, H, W)."""
    device = next(model.parameters()).device
    in_tile = model.valid_input_size(out_tile + 2 * context if model.cfg.padding else out_tile)
    if not model.cfg.padding:
        out_tile = model.output_size(in_tile)
    margin = (in_tile - out_tile) // 2
    _, h, w = image.shape
    ny, nx = -(-h // out_tile), -(-w // out_tile)
    pad_b, pad_r = ny * out_tile - h + margin, nx * out_tile - w + margin
    padded = _mirror_pad(image, margin, pad_b, margin, pad_r)
    probs = torch.zeros(model.cfg.num_classes, ny * out_tile, nx * out_tile)
    tiles, where = [], []
    for ty in range(ny):
        for tx in range(nx):
            y, x = ty * out_tile, tx * out_tile
            tiles.append(padded[:, y : y + in_tile, x : x + in_tile])
            where.append((y, x))
    for start in range(0, len(tiles), 8):
        batch = torch.stack(tiles[start : start + 8]).to(device)
        out = model(batch).float().softmax(1).cpu()
        crop = (out.shape[-1] - out_tile) // 2
        for (y, x), o in zip(where[start : start + 8], out, strict=True):
            probs[:, y : y + out_tile, x : x + out_tile] = o[
                :, crop : crop + out_tile, crop : crop + out_tile
            ]
    return probs[:, :h, :w]


def _mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect-pad, repeating the reflection when the pad is wider than the image."""
    while top or bottom or left or right:
        _, h, w = x.shape
        t, b, lf, r = min(top, h - 1), min(bottom, h - 1), min(left, w - 1), min(right, w - 1)
        x = F.pad(x[None], (lf, r, t, b), mode="reflect")[0]
        top, bottom, left, right = top - t, bottom - b, left - lf, right - r
    return x


# ----------------------------------------------------------------------------- the recipe
class UNetRecipe(Recipe):
    paper = "unet"
    config_class = UNetTrainConfig
    scales = {"mini": MINI, "paper": PAPER}
    channels_last = True
    unit = "tiles"
    cfg: UNetTrainConfig

    def data_source(self) -> str:
        spec = datasets.get(self.cfg.dataset)
        if self.cfg.dataset == "nuclei":
            return f"nuclei: {spec.description}; right {self.cfg.holdout:.0%} held out"
        where = self.ctx.data_path or "--data PATH (required)"
        return f"isbi2012: {spec.description} from {where}; last 5 slices held out"

    def build_model(self) -> UNet:
        return unet(self.cfg.model, dropout=self.cfg.dropout)

    def setup_data(self) -> None:
        # Training images / instance masks / weight maps as lists of 2D arrays; evaluation likewise.
        if self.cfg.dataset == "nuclei":
            from papercli.data import nuclei

            image, labels = nuclei.load()
            cut = round(image.shape[1] * (1 - self.cfg.holdout))
            train_sets = [(image[:, :cut], labels[:, :cut])]
            test_sets = [(image[:, cut:], labels[:, cut:])]
        else:
            from papercli.data import isbi2012

            images, labels = isbi2012.load(self.ctx.data_path)
            train_sets = list(zip(images[:-5], labels[:-5], strict=True))
            test_sets = list(zip(images[-5:], labels[-5:], strict=True))
        probe = unet(self.cfg.model)
        self.in_size = probe.valid_input_size(self.cfg.tile)
        self.out_size = probe.output_size(self.in_size)
        # Mirror-pad each training image once by half a tile, so tiles can be centred anywhere
        # (Section 2: "the missing input data is extrapolated by mirroring").
        half = self.in_size // 2

        def padded(a: np.ndarray) -> torch.Tensor:
            return _mirror_pad(
                torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None],
                half,
                half,
                half,
                half,
            )[0]

        self.train_images = [padded(img) for img, _ in train_sets]
        self.train_targets = [padded(lab > 0) for _, lab in train_sets]
        self.train_weights = [
            padded(border_weight_map(lab, self.cfg.w0, self.cfg.sigma)) for _, lab in train_sets
        ]
        self.test_sets = test_sets

    def configure_optimizers(self, model: nn.Module):
        # Section 3: stochastic gradient descent with momentum 0.99 ("a large number of the previously
        # seen training samples determine the update in the current optimization step"). The paper
        # gives no learning-rate schedule; we warm up linearly (5% of steps) so the high momentum does
        # not blow up early, then decay with a cosine so the final weights are not a noisy snapshot.
        opt = torch.optim.SGD(model.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum)
        return opt, warmup_cosine(opt, warmup=max(1, self.cfg.steps // 20), total=self.cfg.steps)

    def steps_per_epoch(self) -> int:
        self.ensure_data()  # an epoch is measured in tiles of the loaded images
        pixels = sum(
            (i.shape[0] - self.in_size) * (i.shape[1] - self.in_size) for i in self.train_images
        )
        return max(1, pixels // (self.out_size**2 * self.cfg.batch_size))

    def train_batch(self, step: int, micro: int = 0):
        """Random tiles of the training part, elastically deformed (Section 3.1); the labels and
        weights are deformed with the same field and cropped to the network's output size."""
        g = self.ctx.generator(step, stream=self.ctx.shard(micro))
        n, size = self.ctx.micro_batch, self.in_size
        xs, ys, ws = [], [], []
        for _ in range(n):
            k = int(torch.randint(len(self.train_images), (1,), generator=g))
            img, tgt, wgt = self.train_images[k], self.train_targets[k], self.train_weights[k]
            h, w = img.shape
            y = int(torch.randint(0, h - size + 1, (1,), generator=g))
            x = int(torch.randint(0, w - size + 1, (1,), generator=g))
            crop = [t[y : y + size, x : x + size] for t in (img, tgt, wgt)]
            crop = augment.flip_rotate([c[None] for c in crop], g)
            xs.append(crop[0])
            ys.append(crop[1])
            ws.append(crop[2])
        # Random numbers come from the CPU generator (reproducible); the warping itself runs on the
        # training device, where it is cheap next to the network.
        dev = self.ctx.device
        grid = augment.elastic_grid(n, size, self.cfg.elastic_sigma, self.cfg.elastic_points, g).to(
            dev
        )
        gain = (0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)).to(dev)
        shift = (0.1 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)).to(dev)
        x, y, w = (torch.stack(t).to(dev, non_blocking=True) for t in (xs, ys, ws))
        x = augment.warp(x, grid, "bilinear") * gain + shift  # + gray-value variation per tile
        y = augment.warp(y, grid, "nearest")
        w = augment.warp(w, grid, "nearest")
        c = (size - self.out_size) // 2
        y = y[:, 0, c : c + self.out_size, c : c + self.out_size].round().long()
        w = w[:, 0, c : c + self.out_size, c : c + self.out_size]
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y, w

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y, w = batch
        return weighted_cross_entropy(model(x), y, w)

    def _predict(self, model: UNet, image: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        probs = overlap_tile_predict(model, tensor, self.out_size)
        return (probs[1] > 0.5).numpy()

    def evaluate(self, model: UNet) -> dict[str, float]:
        preds = [self._predict(model, img) for img, _ in self.test_sets]
        truths = [lab for _, lab in self.test_sets]
        pred_all = np.concatenate([p.ravel() for p in preds])
        true_all = np.concatenate([t.ravel() > 0 for t in truths])
        metrics = {
            "foreground_iou": foreground_iou(pred_all, true_all),
            "pixel_error": float((pred_all != true_all).mean()),
            "object_f1": float(
                np.mean([object_f1(p, t) for p, t in zip(preds, truths, strict=True)])
            ),
        }
        if self.cfg.dataset == "isbi2012":
            metrics["rand_error"] = float(
                np.mean([rand_error(p, t) for p, t in zip(preds, truths, strict=True)])
            )
        return metrics

    def plots(self, model: UNet, run_dir: Path) -> None:
        """Input / truth / prediction / weight map of the held-out part (Fig. 3-style panel)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        image, labels = self.test_sets[0]
        model.eval()
        pred = self._predict(model, image)
        weights = border_weight_map(labels, self.cfg.w0, self.cfg.sigma)
        panels = [
            ("input", image, "gray"),
            ("truth", labels > 0, "gray"),
            ("prediction", pred, "gray"),
            ("weight map (Eq. 2)", weights, "jet"),
        ]
        fig, axes = plt.subplots(1, 4, figsize=(14, 14 * image.shape[0] / image.shape[1] / 4 + 0.6))
        for ax, (title, data, cmap) in zip(axes, panels, strict=True):
            ax.imshow(data, cmap=cmap)
            ax.set_title(title)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(run_dir / "samples.png", dpi=100)
        plt.close(fig)


if __name__ == "__main__":
    run(UNetRecipe)
