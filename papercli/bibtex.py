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

from papercli.errors import UsageError, preview
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


DEFAULT_KEY_FORMAT = "{author}{year}{title_word}"
# The placeholders a citation-key format may use (docs/guide.md, "Citation keys").
KEY_FIELDS = {
    "author": lambda p: _surname(p).lower(),  # he
    "Author": lambda p: _surname(p).capitalize(),  # He
    "authors": lambda p: "".join(s.capitalize() for s in _surnames(p)[:3]),  # HeZhangRen
    "year": lambda p: str(citation_year(p)),  # 2016
    "title_word": lambda p: (_title_words(p) or [""])[0],  # deep
    "Title_word": lambda p: (_title_words(p) or [""])[0].capitalize(),  # Deep
    "id": lambda p: p.id,  # resnet
}
_KEY_JUNK = re.compile(r"[^A-Za-z0-9_:.+-]")


def _surnames(paper: Paper) -> list[str]:
    names = [_ascii_word(a.split()[-1]) for a in paper.authors if a.split()]
    return [n for n in names if n]


def _surname(paper: Paper) -> str:
    return (_surnames(paper) or [_ascii_word(paper.id)])[0]


def _title_words(paper: Paper) -> list[str]:
    return [w for w in (_ascii_word(w) for w in paper.title.split()) if w and w not in _STOP]


def check_key_format(fmt: str) -> str:
    """The format itself, or a UsageError naming the placeholder it does not know."""
    import string

    try:
        names = [name for _, name, _, _ in string.Formatter().parse(fmt) if name is not None]
    except ValueError as exc:
        raise UsageError(f"citation-key format '{preview(fmt)}': {exc}") from None
    for name in names:
        if name not in KEY_FIELDS:
            known = ", ".join("{" + k + "}" for k in KEY_FIELDS)
            raise UsageError(
                f"citation-key format '{preview(fmt)}' has unknown field {{{preview(name)}}} "
                f"(known: {known})"
            )
    return fmt


def format_key(paper: Paper, fmt: str = DEFAULT_KEY_FORMAT) -> str:
    """A key in `fmt`; characters BibTeX does not allow in a key are dropped."""
    values = {name: get(paper) for name, get in KEY_FIELDS.items()}
    key = _KEY_JUNK.sub("", check_key_format(fmt).format(**values))
    return key or _KEY_JUNK.sub("", paper.id)


def cite_key(paper: Paper, fmt: str = DEFAULT_KEY_FORMAT) -> str:
    """The stored key, else 'He', CVPR 2016, 'Deep Residual…' -> he2016deep by default."""
    return paper.citekey or format_key(paper, fmt)


def new_key(paper: Paper, fmt: str, taken: set[str]) -> str:
    """A key for a paper being added: `fmt`, with a, b, … aa appended until it is free."""
    key = base = format_key(paper, fmt)
    n = 0
    while key in taken:
        n += 1
        key = base + key_suffix(n)
    return key


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


def entry_url(paper: Paper) -> str | None:
    return (
        paper.abs_url
        or paper.urls.get("blog")
        or paper.urls.get("code")
        or paper.urls.get("project")
    )


def entry(paper: Paper, key: str | None = None) -> str:
    kind = entry_type(paper)
    fields: list[tuple[str, str]] = [
        *title_author(paper),
        *_venue_fields(paper, kind),
        ("year", "{" + str(citation_year(paper)) + "}"),
    ]
    month = _month(paper)
    if month:
        fields.append(("month", month))  # a macro: no braces
    if paper.doi:
        fields.append(("doi", "{" + paper.doi + "}"))
    if paper.arxiv:
        fields += [("eprint", "{" + paper.arxiv + "}"), ("archivePrefix", "{arXiv}")]
        if paper.arxiv_category:
            fields.append(("primaryClass", "{" + paper.arxiv_category + "}"))
    url = entry_url(paper)
    if url:
        fields.append(("url", "{" + url + "}"))  # verbatim: \url and biblatex read URLs raw
    if paper.venue and paper.venue.accessed:
        fields.append(("urldate", "{" + paper.venue.accessed + "}"))
    return render_entry(kind, key or cite_key(paper), fields)


def title_author(paper: Paper) -> list[tuple[str, str]]:
    """The title and author fields, as BibTeX and BibLaTeX both write them."""
    authors = " and ".join(escape(a) for a in paper.authors)
    if paper.et_al:
        authors += " and others"  # BibTeX's own word for a truncated list: styles print et al.
    # double braces keep the title's capitals
    return [("title", "{{" + escape(paper.title) + "}}"), ("author", "{" + authors + "}")]


def render_entry(kind: str, key: str, fields: list[tuple[str, str]]) -> str:
    body = ",\n".join(f"  {name} = {value}" for name, value in fields)
    return f"@{kind}{{{key},\n{body}\n}}\n"


def key_suffix(n: int) -> str:
    """1 -> a, 26 -> z, 27 -> aa, 28 -> ab …: letters only, so the key stays a valid key."""
    letters = ""
    while n > 0:
        n, rest = divmod(n - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return letters


def unique_keys(papers: list[Paper], fmt: str = DEFAULT_KEY_FORMAT) -> list[str]:
    """One key per paper: the first with a key keeps it, the next get a, b, … z, aa, ab …"""
    natural = [cite_key(p, fmt) for p in papers]
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


def bibliography(papers: list[Paper], fmt: str = DEFAULT_KEY_FORMAT) -> str:
    """Entries for all papers, with keys made unique across the set."""
    return "\n".join(entry(p, k) for p, k in zip(papers, unique_keys(papers, fmt), strict=True))
