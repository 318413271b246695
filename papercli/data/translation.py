"""Parallel text for the translation recipes: a generated number-translation corpus for the mini
scale, WMT14 English-German from `--data` for the paper scale, and a shared source/target BPE.

- `numbers()`: German ↔ English spellings of the same numbers, written by `num2words` (LGPL, a real
  grammar of both languages, installs offline). No parallel corpus ships inside a pip package with a
  licence that allows it, so the corpus is generated, deterministically from a seed. German needs
  reordering and segmentation: "einundzwanzig" is "twenty-one" (units before tens, one compound
  word), "dreihundertfünfundvierzigtausend" is "three hundred and forty-five thousand". Cardinals
  and ordinals ("einundzwanzigste" / "twenty-first"); the held-out numbers never occur in training,
  in either form, so a model must generalise the grammar rather than recall pairs. Other pairs by
  `source` / `target` (num2words codes): Japanese ("ja") and Korean ("ko") group digits by 10^4
  (十二万三千 = 12·10^4 + 3·10^3, "one hundred and twenty-three thousand"), French ("fr") counts
  in twenties from 60 to 99 (quatre-vingt-dix-sept = 4·20 + 17).
- `wmt14(folder)`: the paper's data (Vaswani et al., Sec. 5.1) as plain text, one sentence per
  line, line-aligned: `train.en`, `train.de`, `newstest2014.en`, `newstest2014.de`.
- `shared_bpe()`: one byte-level BPE for both languages (Sec. 5.1: "a shared source-target
  vocabulary"), trained with Hugging Face `tokenizers`, plus `<pad>` and `<s>`; `<|endoftext|>`
  ends a sentence.
- `Encoded`: a corpus side as one flat int32 array with offsets (4.5M WMT sentences fit in memory),
  cut into padded batches.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from papercli import paths
from papercli.errors import PapercliError

PAD, BOS, EOS = "<pad>", "<s>", "<|endoftext|>"
WMT14_FILES = ("train.en", "train.de", "newstest2014.en", "newstest2014.de")
WMT14_LAYOUT = (
    "--data DIR with train.en, train.de, newstest2014.en, newstest2014.de "
    "(plain UTF-8 text, one sentence per line, line-aligned)"
)


@dataclass(frozen=True)
class Parallel:
    """Line-aligned sentence pairs: train and test, each (source sentences, target sentences)."""

    train: tuple[list[str], list[str]]
    test: tuple[list[str], list[str]]
    source: str  # language codes, e.g. "de"
    target: str


@functools.cache  # sentences repeat numbers: each spelling is worked out once
def _spell(number: int, lang: str, ordinal: bool) -> str:
    from num2words import num2words

    return num2words(number, lang=lang, to="ordinal" if ordinal else "cardinal")


def _spells(number: int, lang: str) -> bool:
    """Whether num2words spells `number` in `lang`, as a cardinal and as an ordinal."""
    try:
        _spell(number, lang, False), _spell(number, lang, True)
    except (KeyError, NotImplementedError, IndexError, ValueError):
        return False
    return True


def numbers(
    train_size: int = 30_000,
    test_size: int = 500,
    *,
    high: int = 999_999,
    per_sentence: int = 1,
    ordinal_share: float = 0.25,
    seed: int = 0,
    source: str = "de",
    target: str = "en",
) -> Parallel:
    """Sentences of 1 … `per_sentence` spelled-out numbers in 1 … `high` ("A, B und C" / "A, B
    and C"), in two languages. The test sentences are built from `test_size` numbers that no
    training sentence contains. Cached as JSON under PAPERCLI_HOME (num2words spells ~10k numbers
    a second)."""
    if train_size + test_size > high:
        raise PapercliError(f"cannot draw {train_size + test_size} distinct numbers below {high}")
    key = f"{train_size}-{test_size}-{high}-{per_sentence}-{ordinal_share}-{seed}-{source}-{target}"
    cache = paths.cache_dir() / "translation" / f"numbers-{key}.json"
    if cache.is_file():
        train, test = json.loads(cache.read_text(encoding="utf-8"))
        return Parallel(tuple(train), tuple(test), source, target)
    rng = random.Random(seed)
    drawn = rng.sample(range(1, high + 1), train_size + test_size)
    # num2words cannot spell a few numbers in some languages (Korean: every multiple of 10,000);
    # they are left out of the pools (no draw of the random stream changes, so pairs whose
    # languages spell every number, de/en among them, are unaffected)
    drawn = [n for n in drawn if _spells(n, source) and _spells(n, target)]
    pools = {"test": drawn[:test_size], "train": drawn[test_size:]}
    joiner = {"de": "und", "en": "and", "fr": "et", "ja": "と", "ko": "그리고"}

    def sentences(pool: list[int], count: int) -> tuple[list[str], list[str]]:
        sides: tuple[list[str], list[str]] = ([], [])
        for _ in range(count):
            items = [(rng.choice(pool), rng.random() < ordinal_share)]
            items += [(rng.choice(pool), False) for _ in range(rng.randint(1, per_sentence) - 1)]
            for side, lang in zip(sides, (source, target), strict=True):
                words = [_spell(n, lang, o) for n, o in items]
                last = f" {joiner.get(lang, '&')} {words[-1]}" if len(words) > 1 else words[-1]
                side.append(", ".join(words[:-1]) + last if len(words) > 1 else last)
        return sides

    corpus = Parallel(
        sentences(pools["train"], train_size), sentences(pools["test"], test_size), source, target
    )
    paths.atomic_write_text(cache, json.dumps([corpus.train, corpus.test], ensure_ascii=False))
    return corpus


def load(data_path: Path | None = None) -> Parallel:
    """The data-set registry's loader for `numbers` (generated; no path needed)."""
    return numbers()


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def wmt14(folder: Path | None, source: str = "en", target: str = "de") -> Parallel:
    """WMT14 English-German from a folder (the layout of WMT14_LAYOUT)."""
    if folder is None:
        raise PapercliError(f"the Transformer's paper scale reads WMT14 En-De: pass {WMT14_LAYOUT}")
    missing = [name for name in WMT14_FILES if not (folder / name).is_file()]
    if missing:
        raise PapercliError(f"{folder}: missing {', '.join(missing)}; expected {WMT14_LAYOUT}")
    split = {}
    for part in ("train", "newstest2014"):
        src, tgt = _lines(folder / f"{part}.{source}"), _lines(folder / f"{part}.{target}")
        if len(src) != len(tgt):
            raise PapercliError(
                f"{folder}: {part}.{source} has {len(src)} lines, {part}.{target} {len(tgt)}; "
                "the two sides must be line-aligned"
            )
        split[part] = (src, tgt)
    return Parallel(split["train"], split["newstest2014"], source, target)


def shared_bpe(texts: list[str], vocab_size: int):
    """One byte-level BPE over both languages' training text (cached under PAPERCLI_HOME, keyed by
    the text and the size), with `<pad>` and `<s>` added after `<|endoftext|>`."""
    from tokenizers import Tokenizer

    from papercli.data.plays import train_bpe

    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode("utf-8"))
        digest.update(b"\n")
    cache = paths.cache_dir() / "tokenizers" / f"shared-bpe{vocab_size}-{digest.hexdigest()[:12]}"
    cache = cache.with_suffix(".json")
    if cache.is_file():
        return Tokenizer.from_file(str(cache))
    tok = train_bpe(texts, vocab_size)
    tok.add_special_tokens([PAD, BOS])
    paths.atomic_write_text(cache, tok.to_str())
    return tok


class Encoded:
    """One side of a corpus as token ids: a flat array and each sentence's start offset."""

    def __init__(self, tokenizer, sentences: list[str], max_tokens: int, chunk: int = 100_000):
        lengths, pieces = [], []
        for i in range(0, len(sentences), chunk):  # bounded memory on 4.5M sentences
            for enc in tokenizer.encode_batch(sentences[i : i + chunk]):
                ids = enc.ids[:max_tokens]  # over-long sentences are cut (WMT has a few)
                lengths.append(len(ids))
                pieces.append(np.asarray(ids, dtype=np.int32))
        self.tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self, index: np.ndarray, pad: int, bos: int | None = None, eos: int | None = None):
        """Sentences `index` as a (B, T) int64 array padded with `pad`, optionally between
        `bos` and `eos`."""
        extra = (bos is not None) + (eos is not None)
        width = int(self.lengths[index].max()) + extra
        out = np.full((len(index), width), pad, dtype=np.int64)
        for row, i in enumerate(index):
            ids = self.tokens[self.offsets[i] : self.offsets[i] + self.lengths[i]]
            start = int(bos is not None)
            if bos is not None:
                out[row, 0] = bos
            out[row, start : start + len(ids)] = ids
            if eos is not None:
                out[row, start + len(ids)] = eos
        return out
