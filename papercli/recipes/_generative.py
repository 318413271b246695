"""What the image-generation recipes (VAE, GAN, diffusion) share: real images in [0, 1] from the
data-set registry, the Fréchet-distance scorer of their samples, and the sample-grid PNG. The
models, objectives and the comparison that decides each verdict stay in each recipe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from papercli.data import registry as datasets
from papercli.metrics.frechet import FrechetScorer, feature_net, metric_name, to_unit
from papercli.recipes._classification import load_in_memory
from papercli.reproduce.config import bounded
from papercli.reproduce.engine import Recipe, TrainConfig


@dataclass
class GenerativeConfig(TrainConfig):
    dataset: Literal["fashion-mnist", "digits"] = "fashion-mnist"
    fd_samples: int = bounded(2000, ge=100)  # generated (and real test) images per Fréchet score
    fd_classifier_steps: int = bounded(800, ge=1)  # training of the cached feature classifier
    # paper scale: the real FID too, from the Inception weights file given here (see
    # papercli.metrics.inception_fid; needs the `fid` extra)
    inception_weights: str | None = None


class ImageGenerativeRecipe(Recipe):
    """Training images as float (N, C, H, W) in [0, 1]; `self.fd(samples)` scores samples."""

    cfg: GenerativeConfig
    unit = "images"

    @property
    def spec(self) -> datasets.DatasetSpec:
        return datasets.get(self.cfg.dataset)

    @property
    def fd_name(self) -> str:
        return metric_name(self.cfg.dataset)

    def data_source(self) -> str:
        where = f" from {self.ctx.data_path}" if self.ctx.data_path else ""
        return f"{self.cfg.dataset}: {self.spec.description}{where}"

    def setup_data(self) -> None:
        d = load_in_memory(self.cfg.dataset, self.ctx.data_path)
        self.train_x, self.test_x = to_unit(d["train_x"]), to_unit(d["test_x"])
        # trained once per data set and cached: before the clock starts, like loading the data
        net = feature_net(
            self.cfg.dataset,
            d["train_x"].numpy(),
            d["train_y"].numpy(),
            self.spec.num_classes,
            steps=self.cfg.fd_classifier_steps,
        )
        self.fd = FrechetScorer(net, self.test_x[: self.cfg.fd_samples])
        self.fid: FrechetScorer | None = None
        if self.cfg.inception_weights:
            from papercli.metrics.inception_fid import InceptionFeatures

            weights = Path(self.cfg.inception_weights).expanduser()
            inception = InceptionFeatures(weights, self.ctx.device)
            self.fid = FrechetScorer(inception, self.test_x[: self.cfg.fd_samples])

    def sample_quality(self, samples: torch.Tensor, prefix: str = "") -> dict[str, float]:
        """The Fréchet distance of samples (N, C, H, W in [0, 1]) to the test images in the
        classifier's features, and in Inception's when the run has its weights."""
        out = {prefix + self.fd_name: self.fd(samples)}
        if self.fid is not None:
            out[prefix + "inception_fid"] = self.fid(samples)
        return out

    def steps_per_epoch(self) -> int:
        n = len(self.train_x) if hasattr(self, "train_x") else self.spec.train_size
        return max(1, n // self.cfg.batch_size)

    def train_images(self, step: int, micro: int) -> torch.Tensor:
        idx = self.ctx.batch_indices(len(self.train_x), step, micro)
        return self.train_x[idx].to(self.ctx.device)


def save_grid(images: torch.Tensor, path: Path, title: str, nrow: int = 10) -> None:
    """A grid of (N, C, H, W) images in [0, 1] as a PNG (skipped if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    x = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    rows = -(-n // nrow)
    canvas = torch.ones(c, rows * (h + 1) - 1, nrow * (w + 1) - 1)
    for i in range(n):
        r, col = divmod(i, nrow)
        canvas[:, r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = x[i]
    fig, ax = plt.subplots(figsize=(8, 8 * canvas.shape[1] / canvas.shape[2] + 0.4))
    if c == 1:
        ax.imshow(canvas[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(canvas.permute(1, 2, 0))
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
