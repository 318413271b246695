"""An ImageNet-style folder (`root/train/<class>/*.JPEG`, `root/val/<class>/*`) read with Pillow,
with the standard augmentation in plain torch: random-resized crop (scale 0.08–1, aspect 3/4–4/3)
and horizontal flip for training; resize to 256/224 of the size and centre crop for evaluation.

Sampling stays a pure function of (seed, step): the batch sampler yields, for each step, the indices
`Context.batch_indices` gives, tagged with the step, so crops are seeded per (step, index) and a
resumed run reads exactly what the uninterrupted one would have."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch

from papercli.errors import PapercliError
from papercli.seeding import step_generator

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def scan(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    if not root.is_dir():
        raise PapercliError(
            f"{root} is not a folder (expected <data>/train/<class>/<images> and <data>/val/…)"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    samples = [
        (p, i)
        for i, c in enumerate(classes)
        for p in sorted((root / c).iterdir())
        if p.suffix.lower() in EXTENSIONS
    ]
    if not samples:
        raise PapercliError(f"{root} holds no images in class folders")
    return samples, classes


class ImageFolder(torch.utils.data.Dataset):
    def __init__(self, root: Path, *, train: bool, size: int = 224, seed: int = 0):
        self.samples, self.classes = scan(Path(root))
        self.train, self.size, self.seed = train, size, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        from PIL import Image

        index, step = key if isinstance(key, tuple) else (key, 0)
        path, label = self.samples[index]
        with Image.open(path) as im:
            im = im.convert("RGB")
            if self.train:
                g = step_generator(self.seed, step, stream=index)
                im = self._random_resized_crop(im, g)
                if torch.rand(1, generator=g).item() < 0.5:
                    im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            else:
                short = round(self.size * 256 / 224)
                w, h = im.size
                scale = short / min(w, h)
                im = im.resize(
                    (max(short, round(w * scale)), max(short, round(h * scale))),
                    Image.Resampling.BILINEAR,
                )
                w, h = im.size
                left, top = (w - self.size) // 2, (h - self.size) // 2
                im = im.crop((left, top, left + self.size, top + self.size))
            x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(
                self.size, self.size, 3
            )
        x = x.permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        return (x - mean) / std, label

    def _random_resized_crop(self, im, g: torch.Generator):
        from PIL import Image

        w, h = im.size
        area = w * h
        for _ in range(10):
            target = area * (0.08 + 0.92 * torch.rand(1, generator=g).item())
            log_ratio = (
                math.log(3 / 4)
                + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(1, generator=g).item()
            )
            ratio = math.exp(log_ratio)
            cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
                top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
                return im.resize(
                    (self.size, self.size),
                    Image.Resampling.BILINEAR,
                    box=(left, top, left + cw, top + ch),
                )
        side = min(w, h)  # fallback: centre square
        left, top = (w - side) // 2, (h - side) // 2
        return im.resize(
            (self.size, self.size),
            Image.Resampling.BILINEAR,
            box=(left, top, left + side, top + side),
        )


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields, for each step from `start` on and each of its accumulation micro-steps,
    [(index, step), …] of this process's micro-batch."""

    def __init__(self, ctx, n: int, start: int, total: int):
        self.ctx, self.n, self.start, self.total = ctx, n, start, total

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.total):
            for micro in range(self.ctx.accum_steps):
                yield [(int(i), step) for i in self.ctx.batch_indices(self.n, step, micro)]

    def __len__(self) -> int:
        return (self.total - self.start) * self.ctx.accum_steps
