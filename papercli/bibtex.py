"""BibTeX export: the entry type of the published version, with the arXiv eprint fields kept.

venue kind   -> entry type                      venue field
conference   -> @inproceedings                  booktitle
workshop     -> @inproceedings                  booktitle
journal      -> @article                        journal
techreport   -> @techreport                     institution
blog         -> @misc                           howpublished, url, urldate
arxiv / none -> @misc                           eprint, archivePrefix, primaryClass
"""

from __future__ import annotations

import re
import unicodedata

from papercli.registry import Paper

# Order matters: the backslash first, so the escapes added later are not escaped again.
_LATEX_SPECIALS = [
    ("\\", r"\textbackslash{}"),
    ("&", r"\&"),
    ("%", r"\%"),
    ("$", r"\$"),
    ("#", r"\#"),
    ("_", r"\_"),
    ("{", r"\{"),
    ("}", r"\}"),
    ("~", r"\textasciitilde{}"),
    ("^", r"\textasciicircum{}"),
]

# BibTeX's predefined month macros, written without braces (`month = may`).
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")

ENTRY_TYPES = {
    "conference": "inproceedings",
    "workshop": "inproceedings",
    "journal": "article",
    "techreport": "techreport",
    "blog": "misc",
    "arxiv": "misc",
}
# The field that names the venue in each entry type.
_VENUE_FIELD = {"inproceedings": "booktitle", "article": "journal", "techreport": "institution"}


def escape(text: str) -> str:
    out = []
    for ch in text:
        for special, repl in _LATEX_SPECIALS:
            if ch == special:
                out.append(repl)
                break
        else:
            out.append(ch)
    return "".join(out)


def _ascii_word(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", text.lower())


_STOP = {"a", "an", "the", "on", "of", "for", "in", "is", "to", "and", "with"}


def entry_type(paper: Paper) -> str:
    return ENTRY_TYPES[paper.venue.kind] if paper.venue else "misc"


def citation_year(paper: Paper) -> int:
    """The venue's year when it has one (ResNet: CVPR 2016), else the paper's (arXiv 2015)."""
    if paper.venue and paper.venue.year:
        return paper.venue.year
    return paper.year


def cite_key(paper: Paper) -> str:
    """'He', CVPR 2016, 'Deep Residual Learning…' -> he2016deep (Google Scholar style)."""
    first_author = paper.authors[0] if paper.authors else paper.id
    surname = _ascii_word(first_author.split()[-1]) or _ascii_word(paper.id)
    words = [w for w in (_ascii_word(w) for w in paper.title.split()) if w and w not in _STOP]
    return f"{surname}{citation_year(paper)}{words[0] if words else ''}"


def _venue_fields(paper: Paper, kind: str) -> list[tuple[str, str]]:
    venue = paper.venue
    if venue is None or venue.kind == "arxiv":
        return []
    if kind == "misc":  # a blog post
        return [("howpublished", "{" + escape(venue.name) + "}")]
    name = venue.name
    if venue.short and venue.short not in name and kind == "inproceedings":
        name = f"{name} ({venue.short})"
    fields = [(_VENUE_FIELD[kind], "{" + escape(name) + "}")]
    for key in ("series", "volume", "number", "pages", "publisher"):
        value = getattr(venue, key)
        if value:
            fields.append((key, "{" + escape(value) + "}"))
    return fields


def _month(paper: Paper) -> str | None:
    """The month macro, where `date` is the date of what is cited: not for a venue with a year
    of its own, whose month the registry does not hold (ResNet: arXiv in Dec 2015, CVPR in 2016)."""
    if (paper.venue and paper.venue.year) or len(paper.date) < 7:
        return None
    return MONTHS[int(paper.date[5:7]) - 1]


def _url(paper: Paper) -> str | None:
    return (
        paper.abs_url
        or paper.urls.get("blog")
        or paper.urls.get("code")
        or paper.urls.get("project")
    )


def entry(paper: Paper, key: str | None = None) -> str:
    kind = entry_type(paper)
    authors = " and ".join(escape(a) for a in paper.authors)
    if paper.et_al:
        authors += " and others"  # BibTeX's own word for a truncated list: styles print et al.
    fields: list[tuple[str, str]] = [
        ("title", "{{" + escape(paper.title) + "}}"),  # double braces keep the capitals
        ("author", "{" + authors + "}"),
        *_venue_fields(paper, kind),
        ("year", "{" + str(citation_year(paper)) + "}"),
    ]
    month = _month(paper)
    if month:
        fields.append(("month", month))  # a macro: no braces
    if paper.arxiv:
        fields += [("eprint", "{" + paper.arxiv + "}"), ("archivePrefix", "{arXiv}")]
        if paper.arxiv_category:
            fields.append(("primaryClass", "{" + paper.arxiv_category + "}"))
    url = _url(paper)
    if url:
        fields.append(("url", "{" + url + "}"))  # verbatim: \url and biblatex read URLs raw
    if paper.venue and paper.venue.accessed:
        fields.append(("urldate", "{" + paper.venue.accessed + "}"))
    body = ",\n".join(f"  {name} = {value}" for name, value in fields)
    return f"@{kind}{{{key or cite_key(paper)},\n{body}\n}}\n"


def key_suffix(n: int) -> str:
    """1 -> a, 26 -> z, 27 -> aa, 28 -> ab …: letters only, so the key stays a valid key."""
    letters = ""
    while n > 0:
        n, rest = divmod(n - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return letters


def unique_keys(papers: list[Paper]) -> list[str]:
    """One key per paper: the first with a key keeps it, the next get a, b, … z, aa, ab …"""
    natural = [cite_key(p) for p in papers]
    taken = set(natural)
    seen: set[str] = set()
    keys = []
    for key in natural:
        if key in seen:
            n = 1
            while key + key_suffix(n) in taken:
                n += 1
            key += key_suffix(n)
            taken.add(key)
        seen.add(key)
        keys.append(key)
    return keys


def bibliography(papers: list[Paper]) -> str:
    """Entries for all papers, with keys made unique across the set."""
    return "\n".join(entry(p, k) for p, k in zip(papers, unique_keys(papers), strict=True))
