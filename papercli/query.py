"""The search query language: free words and "quoted phrases" (ranked by the full-text index),
field filters (author:he title:gan tag:gan field:vision year:2017..2020 arxiv:2010.11929), and
negation of either with a leading '-'. A word may end in '*' to match as a prefix."""

from __future__ import annotations

import re
from typing import NamedTuple

from papercli.errors import UsageError, preview
from papercli.registry import Listed, Paper

FILTERS = ("author", "title", "tag", "field", "year", "arxiv")
_WORD = re.compile(r"\w+\*?")
# "a phrase", name:"a phrase", or any run without spaces (a stray quote is just punctuation)
_TOKEN = re.compile(r'-?(?:[A-Za-z]+:)?"[^"]*"|\S+')


# NamedTuples and a plain class, not dataclasses: each dataclass costs ~0.5 ms of start-up
# (it generates and execs its methods), and `search` starts a fresh interpreter every time
class Term(NamedTuple):
    words: tuple[str, ...]  # more than one: a phrase, matched in this order
    negated: bool = False

    def fts(self) -> str:
        """This term in FTS5 syntax, every word quoted so that no input is an operator."""
        parts = []
        for w in self.words:
            stem = w.rstrip("*")
            parts.append(f'"{stem}"' + (" *" if w.endswith("*") else ""))
        return " + ".join(parts) if len(parts) > 1 else parts[0]


class Filter(NamedTuple):
    name: str
    value: str
    negated: bool = False
    years: tuple[int, int] | None = None

    def accepts(self, paper: Paper | Listed) -> bool:
        return self._holds(paper) != self.negated

    def _holds(self, p: Paper | Listed) -> bool:
        v = self.value.lower()
        if self.name == "author":  # whole words of one author's name, in order: 'he', 'kaiming he'
            return any(_has_phrase(a, v) for a in p.authors)
        if self.name == "title":
            return _has_phrase(p.title, v)
        if self.name == "tag":
            return v in (t.lower() for t in p.tags)
        if self.name == "field":
            return p.field == v
        if self.name == "arxiv":  # a prefix: arxiv:2010 is every paper of October 2020
            return bool(p.arxiv) and p.arxiv.lower().startswith(v.removeprefix("arxiv:"))
        lo, hi = self.years  # type: ignore[misc]
        return lo <= p.year <= hi


class Query:
    def __init__(self) -> None:
        self.terms: list[Term] = []
        self.filters: list[Filter] = []

    @property
    def positive(self) -> list[Term]:
        return [t for t in self.terms if not t.negated]

    @property
    def negative(self) -> list[Term]:
        return [t for t in self.terms if t.negated]

    def accepts(self, paper: Paper | Listed) -> bool:
        return all(f.accepts(paper) for f in self.filters)

    def fts(self, *, any_term: bool = False) -> str:
        """The positive terms as one FTS5 query: every term (or, with any_term, any of them)."""
        return (" OR " if any_term else " ").join(t.fts() for t in self.positive)


def _has_phrase(text: str, phrase: str) -> bool:
    low = text.lower()
    first = _WORD.search(phrase)
    if first is None or first.group().rstrip("*") not in low:
        return False  # most texts lack even the first word: skip tokenising them
    words = " ".join(_WORD.findall(low))
    want = " ".join(_WORD.findall(phrase))
    return bool(want) and f" {want} " in f" {words} "


def _years(value: str) -> tuple[int, int]:
    lo, sep, hi = value.partition("..")
    try:
        if not sep:
            return int(value), int(value)
        return (int(lo) if lo else 0), (int(hi) if hi else 9999)
    except ValueError:
        raise UsageError(
            f"year:{preview(value)} is not a year or a range (year:2017, year:2017..2020, "
            "year:2017.., year:..2020)"
        ) from None


def parse(text: str) -> Query:
    """Parse a query; a malformed one is a UsageError that says what is wrong."""
    query = Query()
    for token in _TOKEN.findall(text):
        negated = token.startswith("-") and len(token) > 1
        body = token[1:] if negated else token
        name, colon, value = body.partition(":")
        value = value.strip('"')
        if colon and name.lower() in FILTERS:
            if not value.strip():
                raise UsageError(f"'{preview(token)}' needs a value after the colon")
            name = name.lower()
            years = _years(value) if name == "year" else None
            query.filters.append(Filter(name, value.strip(), negated, years))
            continue
        words = tuple(w.lower() for w in _WORD.findall(body))
        if words:
            query.terms.append(Term(words, negated))
    if not query.terms and not query.filters:
        raise UsageError(f"nothing to search for in '{preview(text)}'")
    return query
