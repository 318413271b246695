"""`export`: papers as BibTeX, BibLaTeX, CSL-JSON (what pandoc and Zotero read) or JSON.

Every format uses the same unique citation keys (`bibtex.unique_keys`): a stored key, else the
configured format, with a, b, … aa appended to repeats.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from papercli import bibtex
from papercli.bibtex import (
    citation_year,
    entry,
    entry_url,
    escape,
    render_entry,
    title_author,
    unique_keys,
)
from papercli.registry import Paper

# venue kind -> (BibLaTeX type, the field that names the venue)
_BIBLATEX = {
    "conference": ("inproceedings", "booktitle"),
    "workshop": ("inproceedings", "booktitle"),
    "journal": ("article", "journaltitle"),
    "techreport": ("report", "institution"),
    "blog": ("online", "organization"),
}
# venue kind -> CSL type
_CSL = {
    "conference": "paper-conference",
    "workshop": "paper-conference",
    "journal": "article-journal",
    "techreport": "report",
    "blog": "post-weblog",
}


def split_name(name: str) -> dict[str, str]:
    """'Laurens van der Maaten' -> family 'van der Maaten', given 'Laurens' (BibTeX's rules)."""
    from pybtex.database import Person

    person = Person(name)
    family = " ".join(person.prelast_names + person.last_names)
    given = " ".join(person.first_names + person.middle_names)
    return {"family": family, "given": given} if given else {"family": family}


def _biblatex_entry(paper: Paper, key: str) -> str:
    venue = paper.venue if paper.venue and paper.venue.kind != "arxiv" else None
    kind, venue_field = _BIBLATEX.get(venue.kind, ("online", "")) if venue else ("online", "")
    fields = title_author(paper)
    if venue:
        name = venue.name + (
            f" ({venue.short})" if venue.short and venue.short not in venue.name else ""
        )
        fields.append((venue_field, "{" + escape(name) + "}"))
        for key_name in ("volume", "number", "pages", "series", "publisher"):
            value = getattr(venue, key_name)
            if value:
                fields.append((key_name, "{" + escape(value) + "}"))
    date = str(citation_year(paper)) if venue and venue.year else paper.date or str(paper.year)
    fields.append(("date", "{" + date + "}"))  # BibLaTeX's ISO date replaces year and month
    if paper.doi:
        fields.append(("doi", "{" + paper.doi + "}"))
    if paper.arxiv:
        fields += [("eprint", "{" + paper.arxiv + "}"), ("eprinttype", "{arxiv}")]
        if paper.arxiv_category:
            fields.append(("eprintclass", "{" + paper.arxiv_category + "}"))
    url = entry_url(paper)
    if url:
        fields.append(("url", "{" + url + "}"))
    if venue and venue.accessed:
        fields.append(("urldate", "{" + venue.accessed + "}"))
    return render_entry(kind, key, fields)


def csl_item(paper: Paper, key: str) -> dict:
    """One CSL-JSON item (citeproc's input: pandoc --citeproc, Zotero)."""
    venue = paper.venue if paper.venue and paper.venue.kind != "arxiv" else None
    item: dict = {
        "id": key,
        "type": _CSL.get(venue.kind, "article") if venue else "article",
        "title": paper.title,
        "author": [split_name(a) for a in paper.authors],
    }
    if venue:
        item["issued"] = {"date-parts": [[citation_year(paper)]]}
        item["container-title"] = venue.name
        for csl, attr in (("volume", "volume"), ("issue", "number"), ("page", "pages")):
            if getattr(venue, attr):
                item[csl] = getattr(venue, attr)
        if venue.publisher:
            item["publisher"] = venue.publisher
    else:
        parts = [int(x) for x in paper.date.split("-")[:3]] if paper.date else [paper.year]
        item["issued"] = {"date-parts": [parts]}
    if paper.doi:
        item["DOI"] = paper.doi
    if paper.arxiv:
        item["number"] = f"arXiv:{paper.arxiv}"
        if not venue:
            item["publisher"] = "arXiv"
    if paper.abs_url:
        item["URL"] = paper.abs_url
    return item


def _json_item(paper: Paper, key: str) -> dict:
    data = paper.to_dict()
    data.pop("citekey")  # the stored one, maybe empty: the key used is the one that counts
    return {"citekey": key, **data}


def _joined(make: Callable[[Paper, str], str]) -> Callable[[list[Paper], list[str]], str]:
    return lambda papers, keys: "\n".join(make(p, k) for p, k in zip(papers, keys, strict=True))


def _dumped(make: Callable[[Paper, str], dict]) -> Callable[[list[Paper], list[str]], str]:
    def render(papers: list[Paper], keys: list[str]) -> str:
        items = [make(p, k) for p, k in zip(papers, keys, strict=True)]
        return json.dumps(items, indent=2, ensure_ascii=False) + "\n"

    return render


FORMATS: dict[str, Callable[[list[Paper], list[str]], str]] = {
    "bibtex": _joined(entry),
    "biblatex": _joined(_biblatex_entry),
    "csl-json": _dumped(csl_item),
    "json": _dumped(_json_item),
}


def export(papers: list[Paper], fmt: str, key_format: str = bibtex.DEFAULT_KEY_FORMAT) -> str:
    return FORMATS[fmt](papers, unique_keys(papers, key_format))
