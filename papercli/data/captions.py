"""Generated captions for labelled images — the CLIP mini's stand-in for alt-text.

These captions are GENERATED, not written by people: each names the image's class and describes
three properties measured from its own pixels, in one of several sentence templates, e.g.
"a photo of a dark, wide trouser." The properties, on 28x28 grayscale images whose ink is the
pixels above INK (of 255):

    brightness  mean intensity of the ink          dark < 0.57 ≤ grey < 0.73 ≤ light
    size        share of the image that is ink     small < 0.36 ≤ medium < 0.54 ≤ large
    width       share of columns holding ink       narrow < 0.72 ≤ regular < 0.95 ≤ wide

(thresholds: about the terciles of the Fashion-MNIST training images). A word-level vocabulary
covers every word the templates, properties, class names and the zero-shot prompts can produce;
`Vocabulary.encode` lower-cases, splits words and punctuation and brackets them with [SOS] and
[EOS] (id 0, also the padding).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

INK = 30  # a pixel above this (of 255) is ink, not background
PROPERTIES: dict[str, tuple[tuple[str, str, str], tuple[float, float]]] = {
    "brightness": (("dark", "grey", "light"), (0.57, 0.73)),
    "size": (("small", "medium", "large"), (0.36, 0.54)),
    "width": (("narrow", "regular", "wide"), (0.72, 0.95)),
}
TEMPLATES = (
    "a photo of a {brightness}, {width} {name}.",
    "a {size} {name} in {brightness} tones.",
    "a picture of a {name} that is {width} and {size}.",
    "a {brightness} {size} {name}, {width}.",
)
# Zero-shot prompts (Sec. 3.1.4): the first alone, or all of them ensembled. None is a training
# caption: every training caption also describes the image.
PROMPTS = ("a photo of a {name}.", "a picture of a {name}.", "a {name}.")
SPECIALS = ("<eos>", "<sos>", "<unk>")  # <eos> = 0 pads too
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def measure(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Brightness, ink share and ink width of uint8 images (N, H, W), each in [0, 1]."""
    x = images.float()
    ink = x > INK
    count = ink.sum((1, 2)).clamp(min=1)
    return {
        "brightness": (x * ink).sum((1, 2)) / count / 255.0,
        "size": ink.float().mean((1, 2)),
        "width": ink.any(dim=1).float().mean(1),
    }


def levels(images: torch.Tensor) -> torch.Tensor:
    """(N, 3) level 0/1/2 of each property (PROPERTIES order), from the pixels."""
    values = measure(images)
    return torch.stack(
        [
            torch.bucketize(values[name], torch.tensor(cuts), right=True)
            for name, (_, cuts) in PROPERTIES.items()
        ],
        dim=1,
    )


def caption(name: str, level: Sequence[int], template: int) -> str:
    """The caption of an image of class `name` whose properties are at `level`."""
    words = {prop: PROPERTIES[prop][0][int(i)] for prop, i in zip(PROPERTIES, level, strict=True)}
    return TEMPLATES[template % len(TEMPLATES)].format(name=name.lower(), **words)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Vocabulary:
    """Word-level tokens for the captions and prompts of a set of class names."""

    tokens: tuple[str, ...]
    context: int

    @classmethod
    def for_classes(cls, names: Sequence[str], context: int = 24) -> Vocabulary:
        seen = set(SPECIALS)
        texts = [*TEMPLATES, *PROMPTS, *names]
        texts += [w for choices, _ in PROPERTIES.values() for w in choices]
        for text in texts:
            seen.update(words(re.sub(r"\{\w+\}", " ", text)))
        return cls(SPECIALS + tuple(sorted(seen - set(SPECIALS))), context)

    @property
    def eos_id(self) -> int:
        return 0

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), context) ids: [SOS] words [EOS], padded with [EOS]; too long is an error."""
        index = {t: i for i, t in enumerate(self.tokens)}
        rows = torch.zeros(len(texts), self.context, dtype=torch.long)
        for r, text in enumerate(texts):
            ids = [1, *(index.get(w, 2) for w in words(text)), 0]
            if len(ids) > self.context:
                raise ValueError(
                    f"'{text}' needs {len(ids)} tokens; the context holds {self.context}"
                )
            rows[r, : len(ids)] = torch.tensor(ids)
        return rows


class CaptionTable:
    """Token rows of every (class, property levels, template) caption, encoded once: a batch's
    captions are then a lookup by (label, levels, template)."""

    def __init__(self, names: Sequence[str], vocab: Vocabulary):
        self.names = tuple(names)
        shape = (len(names), 3, 3, 3, len(TEMPLATES))
        texts = [
            caption(names[c], (b, s, w), t)
            for c in range(shape[0])
            for b in range(3)
            for s in range(3)
            for w in range(3)
            for t in range(shape[4])
        ]
        self.rows = vocab.encode(texts).view(*shape, vocab.context)

    def lookup(self, labels: torch.Tensor, level: torch.Tensor, template: torch.Tensor):
        """Token rows (N, context) for labels (N,), levels (N, 3) and template choices (N,)."""
        return self.rows[labels, level[:, 0], level[:, 1], level[:, 2], template]
