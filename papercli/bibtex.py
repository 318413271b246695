"""BibTeX export. arXiv papers become @misc entries with eprint/archivePrefix/primaryClass
(the form arXiv itself recommends); everything else a @misc with a URL."""

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


def cite_key(paper: Paper) -> str:
    """'Dosovitskiy', 2020, 'An Image is Worth…' -> dosovitskiy2020image (Google Scholar style)."""
    first_author = paper.authors[0] if paper.authors else paper.id
    surname = _ascii_word(first_author.split()[-1]) or _ascii_word(paper.id)
    words = [w for w in (_ascii_word(w) for w in paper.title.split()) if w and w not in _STOP]
    return f"{surname}{paper.year}{words[0] if words else ''}"


def entry(paper: Paper, key: str | None = None) -> str:
    fields: list[tuple[str, str]] = [
        ("title", "{" + escape(paper.title) + "}"),  # double braces keep the capitals
        ("author", " and ".join(escape(a) for a in paper.authors)),
        ("year", str(paper.year)),
    ]
    if paper.date and len(paper.date) >= 7:
        fields.append(("month", str(int(paper.date[5:7]))))
    if paper.arxiv:
        fields += [("eprint", paper.arxiv), ("archivePrefix", "arXiv")]
        if paper.arxiv_category:
            fields.append(("primaryClass", paper.arxiv_category))
    url = (
        paper.abs_url
        or paper.urls.get("blog")
        or paper.urls.get("code")
        or paper.urls.get("project")
    )
    if url:
        fields.append(("url", url))  # URLs stay verbatim: \\url and biblatex read them raw
    if paper.venue:
        fields.append(("note", escape(paper.venue)))
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields)
    return f"@misc{{{key or cite_key(paper)},\n{body}\n}}\n"


def bibliography(papers: list[Paper]) -> str:
    """Entries for all papers, with keys made unique (a, b, … suffixes) across the set."""
    seen: dict[str, int] = {}
    out = []
    for p in papers:
        key = cite_key(p)
        n = seen.get(key, 0)
        seen[key] = n + 1
        out.append(entry(p, key + ("" if n == 0 else chr(ord("a") + n))))
    return "\n".join(out)
