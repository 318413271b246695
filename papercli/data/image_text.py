"""Image-caption pairs from a folder: CLIP's training data at paper scale. WIT, the paper's 400M
pairs (Sec. 2.2), was never released; any folder in this layout stands in for it (LAION, CC12M …):

    PATH/captions.tsv        one pair per line: <image path, relative to PATH> TAB <caption>
    PATH/<images>            any format Pillow reads
    PATH/val/<class>/<img>   optional: labelled held-out images (ImageNet's layout) for zero-shot
                             classification; the folder names are the class names in the prompts
    PATH/train/<class>/<img> optional: labelled images for the linear probe (Sec. 3.2)

Captions are tokenised by a lower-cased byte-level BPE (Sec. 2.5) of the paper's 49,408 tokens,
trained on the captions with Hugging Face `tokenizers` the first time and cached under
PAPERCLI_HOME, keyed by the caption file's checksum.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from papercli import paths
from papercli.data.imagefolder import ImageFolder
from papercli.errors import PapercliError

CAPTIONS = "captions.tsv"


def read_captions(root: Path) -> tuple[list[Path], list[str]]:
    """Image paths and their captions, in file order; a malformed line is an error naming it."""
    file = Path(root) / CAPTIONS
    if not file.is_file():
        raise PapercliError(
            f"{file} not found: image-text data is a folder with {CAPTIONS} "
            "(<image path>\\t<caption> per line) and the images"
        )
    images, captions = [], []
    with file.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            image, tab, text = line.rstrip("\n").partition("\t")
            if not tab or not image or not text.strip():
                raise PapercliError(f"{file}:{number}: expected <image path>\\t<caption>")
            images.append(Path(root) / image)
            captions.append(text.strip())
    if not images:
        raise PapercliError(f"{file} holds no image-caption pairs")
    return images, captions


class CaptionedImages(ImageFolder):
    """The pairs as a dataset of (image, pair index): ImageFolder's crops and normalisation; the
    recipe looks the caption up by index."""

    def __init__(self, root: Path, *, train: bool, size: int = 224, seed: int = 0):
        images, self.captions = read_captions(root)
        self.samples = [(path, i) for i, path in enumerate(images)]
        self.classes: list[str] = []
        self.train, self.size, self.seed = train, size, seed


class CaptionTokenizer:
    """BPE ids bracketed by <|startoftext|> (the last id) and <|endoftext|> (id 0, also the
    padding), cut to the context length as the paper caps captions at 76 tokens + [EOS]."""

    def __init__(self, captions: list[str], vocab_size: int, context: int):
        from tokenizers import Tokenizer

        from papercli.data.plays import train_bpe

        digest = hashlib.sha256("\n".join(captions).encode("utf-8")).hexdigest()[:12]
        cache = paths.cache_dir() / "tokenizers" / f"captions-bpe{vocab_size}-{digest}.json"
        if cache.is_file():
            self.tok = Tokenizer.from_file(str(cache))
        else:
            self.tok = train_bpe([c.lower() for c in captions], vocab_size - 1)
            self.tok.add_special_tokens(["<|startoftext|>"])
            paths.atomic_write_text(cache, self.tok.to_str())
        self.sos, self.eos, self.context = self.tok.token_to_id("<|startoftext|>"), 0, context

    def encode(self, texts: list[str]) -> torch.Tensor:
        rows = torch.full((len(texts), self.context), self.eos, dtype=torch.long)
        for r, enc in enumerate(self.tok.encode_batch([t.lower() for t in texts])):
            ids = [self.sos, *enc.ids[: self.context - 2], self.eos]
            rows[r, : len(ids)] = torch.tensor(ids)
        return rows
