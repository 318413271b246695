"""The user's local library: fetching arXiv metadata and PDFs for registry papers, and adding
new papers from arXiv to the user registry. The CLI calls these; they talk to `arxiv.Client`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from papercli import cache, paths
from papercli.arxiv import ArxivError, Client, Entry
from papercli.errors import UsageError, preview
from papercli.registry import (
    ARXIV_EXAMPLES,
    DOI_RE,
    SLUG_RE,
    Paper,
    Registry,
    check_text,
    normalize_arxiv,
)

ProgressFactory = Callable[[str], Callable[[int, int | None], None] | None]


@dataclass
class FetchResult:
    paper: Paper
    metadata: str  # 'updated vN', 'not on arXiv', 'not found', 'skipped'
    pdf: str  # 'downloaded', 'cached', 'no PDF url', 'skipped', 'failed: …'
    ok: bool = True


def fetch_papers(
    papers: list[Paper],
    client: Client,
    *,
    pdf: bool = True,
    force: bool = False,
    progress: ProgressFactory | None = None,
) -> list[FetchResult]:
    """Refresh arXiv metadata for all `papers` in as few API calls as possible (100 ids a call),
    then download the PDFs that are missing (or all, with force)."""
    arxiv_ids = [p.arxiv for p in papers if p.arxiv]
    entries, missing = client.fetch(arxiv_ids) if arxiv_ids else ({}, [])
    results = []
    for paper in papers:
        result = FetchResult(paper, metadata="not on arXiv", pdf="skipped")
        entry = entries.get(paper.arxiv) if paper.arxiv else None
        if paper.arxiv and entry is not None:
            cache.write_metadata(paper.id, entry.to_dict())
            result.metadata = f"updated {entry.version}".strip()
        elif paper.arxiv and paper.arxiv in missing:
            result.metadata, result.ok = "not found on arXiv", False
        if pdf:
            url = client.pdf_url_for(paper.arxiv) if paper.arxiv else paper.urls.get("pdf")
            if not url:
                result.pdf = "no PDF url"
            elif paper.arxiv and entry is None:
                result.pdf = "skipped (no metadata)"
            else:
                try:
                    result.pdf = client.download(
                        url,
                        cache.pdf_path(paper.id),
                        force=force,
                        progress=progress(paper.id) if progress else None,
                    )
                except ArxivError as exc:
                    result.pdf, result.ok = f"failed: {exc}", False
                else:
                    _index_pdf_text(paper.id, fresh=result.pdf == "downloaded")
        results.append(result)
    return results


def _index_pdf_text(paper_id: str, *, fresh: bool) -> None:
    """Extract the PDF's text for `search` once (again when the PDF was downloaded anew)."""
    if fresh or not cache.fulltext_path(paper_id).is_file():
        cache.extract_fulltext(paper_id)


def ensure_pdf(paper: Paper, client: Client, progress: ProgressFactory | None = None) -> Path:
    """The local PDF of a paper, downloading it first when it is not there yet."""
    path = cache.pdf_path(paper.id)
    if path.is_file():
        return path
    results = fetch_papers([paper], client, pdf=True, progress=progress)
    if not path.is_file():
        raise UsageError(f"no PDF for '{paper.id}': {results[0].pdf}")
    return path


# ----------------------------------------------------------------------------- add
_FIELD_BY_CATEGORY = {"cs.CV": "vision", "eess.IV": "vision", "cs.CL": "language"}
_STOPWORDS = {
    "a",
    "an",
    "the",
    "of",
    "for",
    "and",
    "with",
    "on",
    "in",
    "to",
    "is",
    "are",
    "via",
    "by",
}


def propose_slug(title: str, max_words: int = 4) -> str:
    """'Attention Is All You Need' -> 'attention-all-you-need'."""
    words = [w for w in re.findall(r"[a-z0-9]+", title.lower()) if w not in _STOPWORDS]
    return "-".join(words[:max_words]) or "paper"


def parse_arxiv_query(text: str) -> tuple[str, str | None]:
    """Accept 2010.11929, 2010.11929v2, arXiv:…, abs/pdf URLs, old-style hep-ex/0406020.
    Anything else is refused here, before any network call (offline it would cost ~30 s of
    retries to learn that 'abc' is no id)."""
    norm = normalize_arxiv(text)
    if norm is None:
        raise UsageError(f"'{preview(text)}' is not an arXiv id (use {ARXIV_EXAMPLES})")
    return norm


def add_from_arxiv(
    query: str,
    client: Client,
    registry: Registry,
    *,
    field: str | None = None,
    slug: str | None = None,
    tags: list[str] | None = None,
) -> Path:
    """Create a registry file in the user registry from arXiv's metadata. Refuses collisions."""
    arxiv_id, version = parse_arxiv_query(query)
    for p in registry.papers:
        if p.arxiv and p.arxiv == arxiv_id:
            raise UsageError(f"arXiv {arxiv_id} is already in the registry as '{p.id}'")
    found, _missing = client.fetch([arxiv_id + (version or "")])
    entry = next(iter(found.values()), None)
    if entry is None:
        raise UsageError(f"arXiv has no paper with id '{arxiv_id}{version or ''}'")
    data = registry_data(entry, field=field, tags=tags or [])
    header = f"# Added by papercli from arXiv {entry.arxiv_id}{entry.version}; edit freely.\n"
    if entry.journal_ref:  # free text: the structured venue (docs/guide.md) is for a person to fill
        header += f"# arXiv journal_ref: {' '.join(entry.journal_ref.split())}\n"
    target = create_paper(
        data,
        registry,
        slug=slug,
        header=header,
        what=f"arXiv's record for {arxiv_id}{version or ''}",
    )
    cache.write_metadata(target.stem, entry.to_dict())
    return target


def check_new_id(new_id: str, registry: Registry) -> Path:
    """The user-registry file for a new paper id; refuses a bad slug or one already in use."""
    if not SLUG_RE.match(new_id):
        raise UsageError(
            f"--id '{preview(new_id)}' is not a slug (lowercase letters, digits and '-')"
        )
    try:
        other = registry.get(new_id)
    except UsageError:
        other = None
    if other is not None:
        raise UsageError(
            f"id '{preview(new_id)}' is already used by '{other.id}' ({other.title}); "
            "choose one with --id"
        )
    target = paths.user_registry() / f"{new_id}.yaml"
    if target.exists():
        raise UsageError(f"{target} already exists")
    return target


def taken_keys(registry: Registry, fmt: str) -> set[str]:
    from papercli.bibtex import cite_key

    return {cite_key(p, fmt) for p in registry.papers}


def create_paper(
    data: dict,
    registry: Registry,
    *,
    slug: str | None,
    header: str,
    what: str,
    taken: set[str] | None = None,
) -> Path:
    """Write a new paper to the user registry: its id (`slug`, else from the title), a citation
    key in the configured format unless `data` has one, validated before anything is written."""
    import yaml

    from papercli import config
    from papercli.bibtex import new_key

    target = check_new_id(slug or propose_slug(data["title"]), registry)
    data = {"id": target.stem, **{k: v for k, v in data.items() if k != "id"}}

    def render(values: dict) -> str:
        clean = {k: v for k, v in values.items() if v is not None}
        return header + yaml.safe_dump(clean, sort_keys=False, allow_unicode=True, width=100)

    paper, problems = check_text(render(data), target)  # never write what `validate` rejects
    if problems:
        first = problems[0]
        raise ArxivError(
            f"{what} does not make a valid registry entry "
            f"({first.field + ': ' if first.field else ''}{first.message}); nothing was written"
        )
    assert paper is not None
    if not data.get("citekey"):
        fmt = config.get("citekey_format")
        keys = taken if taken is not None else taken_keys(registry, fmt)
        data["citekey"] = new_key(paper, fmt, keys)
    if taken is not None:
        taken.add(data["citekey"])  # the caller adds more papers: keep their keys unique
    paths.atomic_write_text(target, render(data))
    return target


def registry_data(entry: Entry, *, field: str | None, tags: list[str]) -> dict:
    """A registry entry (without id) from arXiv's record."""
    year = int(entry.published[:4]) if entry.published[:4].isdigit() else 0
    return {
        "title": entry.title,
        "authors": [a.name for a in entry.authors],
        "year": year,
        "date": entry.published[:10],
        "field": field or _FIELD_BY_CATEGORY.get(entry.primary_category, "general"),
        "tags": sorted({t.lower() for t in tags}),
        "aliases": [],
        "arxiv": entry.arxiv_id,
        "arxiv_category": entry.primary_category or None,
        # The abstract stands in until someone writes a summary in their own words.
        "summary": f"(arXiv abstract) {entry.abstract}",
        "key_points": [],
        "claims": [],
        "doi": entry.doi if entry.doi and DOI_RE.match(entry.doi) else None,
    }
