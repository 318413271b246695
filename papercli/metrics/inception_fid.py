"""The real FID (Heusel et al. 2017) for paper-scale runs: Inception-v3 pool features (2048-d) from
torch-fidelity's `inception-v3-compat` extractor — a port of the TensorFlow graph behind the
reference FID that matches it to machine precision — then `frechet.frechet_distance`, the same
formula as the offline classifier metric.

The weights are never downloaded by papercli: the user points `--set inception_weights=PATH` at the
extractor's file (torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`). torch-fidelity is
an optional extra (`pip install 'papercli[fid]'`) because it needs torchvision, which the CPU test
machines cannot install; without it the run stops with that instruction before training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from papercli.errors import PapercliError

METRIC = "inception_fid"


class InceptionFeatures:
    """`embed(images)`: images (N, C, H, W) in [0, 1] -> Inception pool features (N, 2048)."""

    def __init__(self, weights: Path, device: torch.device, batch: int = 100):
        if not weights.is_file():
            raise PapercliError(f"{weights}: no such Inception weights file (inception_weights)")
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise PapercliError(
                "the Inception FID needs torch-fidelity: pip install 'papercli[fid]' "
                "(it brings torchvision)"
            ) from None
        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights)
        )
        self.net = self.net.to(device).eval()
        self.device, self.batch = device, batch

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> np.ndarray:
        out = []
        for chunk in images.split(self.batch):
            # the extractor takes uint8 RGB at any size and resizes to 299 as the TF graph did
            x = (chunk.clamp(0, 1) * 255).round().to(torch.uint8)
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            out.append(self.net(x.to(self.device))[0].double().cpu())
        return torch.cat(out).numpy()
