"""Sample quality without the internet: the Fréchet distance between real and generated images in
the feature space of a small classifier trained on the same data.

Heusel et al. (2017) compare two image sets by fitting a Gaussian to each set's features and taking
the Fréchet (2-Wasserstein) distance between the Gaussians:

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

Their FID uses Inception-v3 features of 299x299 ImageNet-style photos. Our mini data (28x28
Fashion-MNIST, 8x8 digits) is neither, Inception's weights are a download, and two CPU cores cannot
run it for every evaluation. So the features here come from a small CNN classifier trained once on
the data set's own training images (cached under PAPERCLI_HOME, keyed by a checksum of those
images and labels). The number is therefore named `fd_<data>_classifier` (e.g.
`fd_fmnist_classifier`) and is comparable only between runs on the same data set with the same
classifier — never with published FID values, which live on a different scale.
"""

from __future__ import annotations

import hashlib

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from scipy import linalg
from torch import nn

from papercli import paths

# short data-set tags for metric names (the registry's checks name them)
TAGS = {"fashion-mnist": "fmnist", "digits": "digits", "cifar10": "cifar10"}
FEATURE_VERSION = 1  # bump when the classifier or its training changes: old caches are ignored


def metric_name(dataset: str) -> str:
    return f"fd_{TAGS.get(dataset, dataset.replace('-', ''))}_classifier"


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of feature rows, in float64."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """d² between N(μ₁, Σ₁) and N(μ₂, Σ₂) (the squared 2-Wasserstein distance), as in FID."""
    diff = mu1 - mu2
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # a singular product (fewer samples than dimensions): regularise, as pytorch-fid does
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)  # round-off leaves tiny imaginary parts
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


class FeatureNet(nn.Module):
    """Two strided convolutions and a 64-unit feature layer; a linear head classifies."""

    def __init__(self, channels: int, size: int, classes: int, width: int = 16, dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        side = (size + 3) // 4
        self.features = nn.Linear(2 * width * side * side, dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(dim, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.body(x)))

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch: int = 1000) -> np.ndarray:
        """Pre-activation features of images in [0, 1], shape (N, C, H, W)."""
        self.eval()
        parts = [
            self.features(self.body(x[i : i + batch].float())) for i in range(0, len(x), batch)
        ]
        return torch.cat(parts).double().numpy()


def data_checksum(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (images, labels):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _train(images: torch.Tensor, labels: torch.Tensor, classes: int, steps: int) -> FeatureNet:
    """Adam on cross-entropy, fixed seed: the same data gives the same classifier."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = FeatureNet(images.shape[1], images.shape[-1], classes)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        idx = torch.randint(len(images), (128,), generator=g)
        loss = F.cross_entropy(net(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def feature_net(
    dataset: str, images: np.ndarray, labels: np.ndarray, classes: int, steps: int = 800
) -> FeatureNet:
    """The data set's feature classifier: loaded from the cache when its data checksum matches,
    else trained once (seconds to a minute on a CPU) and cached atomically.

    `images`: uint8 (N, [C,] H, W) training images; `labels`: their classes."""
    key = f"{dataset}-{data_checksum(images, labels)}-v{FEATURE_VERSION}-s{steps}"
    path = paths.cache_dir() / "frechet" / f"{key}.safetensors"
    x = to_unit(images)
    net = FeatureNet(x.shape[1], x.shape[-1], classes)
    if path.is_file():
        try:
            net.load_state_dict(safetensors.torch.load(path.read_bytes()))
            return net.eval()
        except (SafetensorError, RuntimeError, OSError):
            pass  # a damaged cache file is retrained and replaced
    net = _train(x, torch.as_tensor(labels, dtype=torch.long), classes, steps)
    paths.atomic_write_bytes(path, safetensors.torch.save(net.state_dict()))
    return net


def to_unit(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, [C,] H, W) -> float (N, C, H, W) in [0, 1]."""
    x = torch.as_tensor(np.asarray(images)).float().div(255.0)
    return x.unsqueeze(1) if x.dim() == 3 else x


class FrechetScorer:
    """Fréchet distance of generated images to a fixed set of real images (e.g. the test set)."""

    def __init__(self, net: FeatureNet, real: torch.Tensor):
        self.net = net
        self.real_stats = gaussian_stats(net.embed(real))

    def __call__(self, samples: torch.Tensor) -> float:
        """`samples`: (N, C, H, W) in [0, 1]; N should exceed the feature dimension (64)."""
        mu, sigma = gaussian_stats(self.net.embed(samples.detach().cpu().clamp(0, 1)))
        return frechet_distance(mu, sigma, *self.real_stats)
