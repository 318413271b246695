"""`papercli search`: filters on the served papers, bm25 ranking of free words over the index's
documents (title, authors, abstract, summary, key points, tags, PDF text), highlighted snippets.

FTS5 ranks in SQLite; where the build lacks it (or PAPERCLI_INDEX_FTS=0) the same documents are
ranked here with the same bm25 formula, so results agree in shape, if not to the last digit.
"""

from __future__ import annotations

import heapq
import math
import os
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import NamedTuple

from papercli import cache, index
from papercli.query import Query, Term, parse
from papercli.registry import Listed, Paper, Registry, load_file, open_index


class Hit(NamedTuple):  # not a dataclass: see query.Term
    paper: Paper | Listed
    score: float
    snippet: str = ""  # with index.HIT_START/HIT_END around the matched words

    def to_dict(self) -> dict:
        return {
            "score": round(self.score, 3),
            "id": self.paper.id,
            "title": self.paper.title,
            "year": self.paper.year,
            "authors": list(self.paper.authors),
            "snippet": self.snippet.replace(index.HIT_START, "").replace(index.HIT_END, ""),
            "highlights": re.findall(f"{index.HIT_START}(.*?){index.HIT_END}", self.snippet),
        }


def document(paper: Paper) -> dict[str, str]:
    """The searchable columns of one paper, with what `fetch` stored beside it."""
    meta = cache.read_metadata(paper.id) or {}
    return {
        "names": " ".join([paper.id, *paper.aliases, paper.arxiv or ""]),
        "title": paper.title,
        "authors": "; ".join(paper.authors),
        "tags": " ".join(paper.tags),
        "summary": paper.summary,
        "key_points": "\n".join(paper.key_points),
        "abstract": str(meta.get("abstract") or ""),
        "fulltext": cache.read_fulltext(paper.id),
    }


def _build(stored: bytes | None, path: str) -> dict[str, str]:
    """A document from the index's stored paper (or the file, where the index holds none)."""
    import marshal

    paper = Paper.from_trusted_dict(marshal.loads(stored)) if stored else load_file(Path(path))
    return document(paper)


def _mtimes(directory: Path) -> dict[str, int]:
    try:
        return {e.name: e.stat().st_mtime_ns for e in os.scandir(directory)}
    except OSError:
        return {}


def _signature(registry: Registry, *mtimes: dict[str, int]) -> bytes | None:
    """Of everything the served papers' documents are made from: the registry's files (where
    a snapshot of them has one) and what fetch stored."""
    if registry.signature is None:
        return None
    import hashlib
    import marshal

    stored = marshal.dumps([sorted(m.items()) for m in mtimes])
    return hashlib.blake2b(registry.signature + stored, digest_size=16).digest()


class _Rows(NamedTuple):
    """The rows a query may rank, and per row its paper and its tie-break (newer, then id)."""

    paper: Callable[[int], Paper | Listed]
    tie: Callable[[int], tuple]
    allowed: Collection[int]
    first: int | None  # the row of the paper the query names, which leads


def search(registry: Registry, text: str, limit: int = 20) -> list[Hit]:
    """Hits for a query over `registry`, best first. A light registry (Listed papers) does:
    filters and hits need only what a listing has; documents come from the index."""
    query = parse(text)
    if not query.terms:
        candidates = sorted(
            (p for p in registry.papers if query.accepts(p)), key=lambda p: (-p.year, p.id)
        )
        return [Hit(p, 0.0) for p in candidates[:limit]]
    idx = open_index() or index.Index.open(0, Path(":memory:"))
    assert idx is not None  # an in-memory database always opens
    # a document is rebuilt when its file's row was replaced or what fetch stored changed
    meta, texts = _mtimes(cache.metadata_dir()), _mtimes(cache.fulltext_dir())
    signature = _signature(registry, meta, texts)
    current = signature is not None and registry.rowids is not None and idx.docs_current(signature)
    rows = _stored_rows(registry, query) if current and not query.filters else None
    if rows is None:
        if current:  # the same files and fetched texts as the last search
            served = (str(p.source) for p in registry.papers)
            rowids = dict(zip(served, registry.rowids, strict=True))  # type: ignore[arg-type]
        else:
            docs = {
                str(p.source): f"{meta.get(p.id + '.json', 0)}:{texts.get(p.id + '.txt', 0)}"
                for p in registry.papers
            }
            rowids = idx.sync_docs(docs, _build, signature)
        rows = _accepted_rows(registry, query, rowids)
    scores = (_rank_fts if idx.fts else _rank_plain)(idx, query, rows.allowed)
    best = heapq.nsmallest(
        limit, scores.items(), key=lambda rs: (rs[0] != rows.first, -rs[1], rows.tie(rs[0]))
    )
    # snippets only for what is shown: FTS5 builds each one from the document's text
    snippets = _snippets_fts(idx, query, best) if idx.fts else _snippets_plain(idx, query, best)
    return [Hit(rows.paper(r), s, snippets.get(r, "")) for r, s in best]


def _stored_rows(registry: Registry, query: Query) -> _Rows | None:
    """Every served row of a snapshot's registry, with each paper's year and id from the
    snapshot: only the records shown get built (a word query at 10,000 papers)."""
    stored, rowids = registry.stored, registry.rowids
    if stored is None or rowids is None:
        return None
    at = {r: i for i, r in enumerate(rowids)}
    named = registry.position(_words(query))
    return _Rows(
        lambda r: stored[at[r]],
        lambda r: (-stored.years[at[r]], stored.ids[at[r]]),
        at,
        rowids[named] if named is not None else None,
    )


def _accepted_rows(registry: Registry, query: Query, rowids: dict[str, int]) -> _Rows:
    """The rows (`rowids`: a file's path -> its row) of the papers the query's filters accept."""
    by_row = {
        rowids[str(p.source)]: p
        for p in registry.papers
        if query.accepts(p) and str(p.source) in rowids
    }
    # a query that is a paper's id or alias ('flash attention', 'resnet') puts that paper first
    named = registry.find(_words(query))
    first = next((r for r, p in by_row.items() if p is named), None) if named else None
    return _Rows(by_row.__getitem__, lambda r: (-by_row[r].year, by_row[r].id), by_row, first)


def _words(query: Query) -> str:
    return " ".join(w for t in query.positive for w in t.words)


def _rank_fts(idx: index.Index, query: Query, rows: Collection[int]) -> dict[int, float]:
    """bm25 score of every candidate that matches (all positive terms, or any when none has
    them all), less those matching a negated term."""
    excluded = {r for t in query.negative for r, _ in idx.match(t.fts())}
    if not query.positive:
        return {r: 0.0 for r in rows if r not in excluded}
    for any_term in (False, True):  # every word first; any word when no paper has them all
        scores = {
            r: s
            for r, s in idx.match(query.fts(any_term=any_term))
            if r in rows and r not in excluded
        }
        if scores or len(query.positive) == 1:
            break
    return scores


def _snippets_fts(idx: index.Index, query: Query, best: list[tuple[int, float]]) -> dict:
    if not query.positive or not best:
        return {}
    return idx.snippets(query.fts(any_term=True), [r for r, _ in best])


# ----------------------------------------------------------------------------- the fallback
_TOKEN = re.compile(r"\w+")
K1, B = 1.2, 0.75  # FTS5's bm25 constants


def _fold(text: str) -> str:
    """Lowercase without diacritics, as FTS5's 'unicode61 remove_diacritics 2' tokenizer does."""
    import unicodedata  # only the fallback ranker needs it

    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _hits(tokens: list[str], term: Term) -> list[int]:
    """Positions in `tokens` where `term` (a word, a prefix* or a phrase) starts."""
    words = term.words
    n = len(words)

    def ok(tok: str, w: str) -> bool:
        return tok.startswith(w[:-1]) if w.endswith("*") else tok == w

    return [
        i for i in range(len(tokens) - n + 1) if all(ok(tokens[i + j], words[j]) for j in range(n))
    ]


def _rank_plain(idx: index.Index, query: Query, rows: Collection[int]) -> dict[int, float]:
    docs = idx.documents(rows)
    toks = {
        r: {c: _TOKEN.findall(_fold(v or "")) for c, v in cols.items()} for r, cols in docs.items()
    }
    weights = dict(index.COLUMNS)
    kept = [r for r in toks if not any(_in(toks[r], t) for t in query.negative)]
    if not query.positive:
        return {r: 0.0 for r in kept}
    avg = {c: sum(len(toks[r][c]) for r in kept) / max(len(kept), 1) or 1.0 for c in weights}
    n_docs = len(kept)
    for any_term in (False, True):
        scores: dict[int, float] = {}
        df = {t: sum(1 for r in kept if _in(toks[r], t)) for t in query.positive}
        for r in kept:
            found = [t for t in query.positive if _in(toks[r], t)]
            if not found or (not any_term and len(found) < len(query.positive)):
                continue
            score = 0.0
            for t in found:  # FTS5's bm25: per column, weighted, summed over the terms
                idf = max(math.log((n_docs - df[t] + 0.5) / (df[t] + 0.5)), 1e-6)
                for c, w in weights.items():
                    tf = len(_hits(toks[r][c], t))
                    norm = K1 * (1 - B + B * len(toks[r][c]) / avg[c])
                    score += w * idf * tf * (K1 + 1) / (tf + norm)
            scores[r] = score
        if scores or len(query.positive) == 1:
            break
    return scores


def _snippets_plain(idx: index.Index, query: Query, best: list[tuple[int, float]]) -> dict:
    if not query.positive:
        return {}
    docs = idx.documents(r for r, _ in best)
    return {r: _snippet(docs[r], query.positive) for r, _ in best if r in docs}


def _in(columns: dict[str, list[str]], term: Term) -> bool:
    return any(_hits(tokens, term) for tokens in columns.values())


def _snippet(cols: dict[str, str], terms: list[Term], words: int = 12) -> str:
    """Up to `words` words of the column with most hits, around the first, hits marked."""

    def count(text: str) -> int:
        tokens = _TOKEN.findall(_fold(text))
        return sum(len(_hits(tokens, t)) for t in terms)

    text = max((v or "" for v in cols.values()), key=count)
    spans = [m.span() for m in _TOKEN.finditer(text)]
    tokens = [_fold(text[a:b]) for a, b in spans]
    marked = {i + j for t in terms for i in _hits(tokens, t) for j in range(len(t.words))}
    first = min(marked, default=0)
    start = max(0, min(first - words // 4, len(spans) - words))
    out = []
    for i in range(start, min(start + words, len(spans))):
        a, b = spans[i]
        word = text[a:b]
        out.append(f"{index.HIT_START}{word}{index.HIT_END}" if i in marked else word)
    return ("…" if start else "") + " ".join(out) + ("…" if start + words < len(spans) else "")
