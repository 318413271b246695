"""`import refs.bib`: BibTeX entries (parsed with pybtex) into the user registry.

arXiv ids are recognised in `eprint`, `url`, `journal`/`volume` ("arXiv preprint arXiv:…",
"CoRR abs/…") and `note`. One work is one paper: entries of the file that share an arXiv id, a
DOI or a normalised title are merged (the first wins, later ones fill its gaps); an entry that
is already in the registry is skipped, or, for a paper of the user's own, gives it the DOI and
citation key it lacks. The BibTeX key is kept as the citation key when it is free.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from papercli import config, paths
from papercli.edits import is_user_paper, set_field, write_checked
from papercli.errors import PapercliError, UsageError, preview
from papercli.library import create_paper, propose_slug, taken_keys
from papercli.registry import (
    CITEKEY_RE,
    DOI_RE,
    Paper,
    Registry,
    arxiv_year_month,
    normalize_arxiv,
)

_ARXIV_IN_TEXT = (
    re.compile(r"arxiv\.org/(?:abs|pdf)/([a-z\-]+/\d{7}|\d{4}\.\d{4,5})", re.I),
    re.compile(r"arxiv[:\s]*([a-z\-]+/\d{7}|\d{4}\.\d{4,5})", re.I),
    re.compile(r"abs/(\d{4}\.\d{4,5})", re.I),
)
_ARXIV_JOURNALS = re.compile(r"^(arxiv|corr)\b", re.I)


@dataclass
class Report:
    added: list[dict[str, str]] = field(default_factory=list)
    merged: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[dict[str, str]]]:
        return {"added": self.added, "merged": self.merged, "skipped": self.skipped}


def _latex(text: str) -> str:
    """'Schr{\\"o}dinger {GAN}s' -> 'Schrödinger GANs'."""
    import latexcodec  # noqa: F401 - registers the "ulatex" codec (a dependency of pybtex)

    try:
        text = codecs.decode(text, "ulatex")
    except ValueError:
        pass  # latexcodec could not read it: keep the raw text, minus braces
    return " ".join(text.replace("{", "").replace("}", "").split())


def _arxiv(fields: dict[str, str]) -> str | None:
    eprint = fields.get("eprint", "")
    if eprint:
        found = normalize_arxiv(eprint)
        if found:
            return found[0]
    for name in ("url", "journal", "volume", "note", "howpublished"):
        for pattern in _ARXIV_IN_TEXT:
            m = pattern.search(fields.get(name, ""))
            if m and normalize_arxiv(m.group(1)):
                return normalize_arxiv(m.group(1))[0]  # type: ignore[index]
    return None


def _person(person: Any) -> str:
    parts = person.first_names + person.middle_names + person.prelast_names + person.last_names
    name = _latex(" ".join(parts))
    return f"{name} {_latex(' '.join(person.lineage_names))}".strip()


def _venue(kind: str, fields: dict[str, str], year: int | None) -> dict[str, Any] | None:
    if fields.get("booktitle"):
        venue = {"kind": "conference", "name": _latex(fields["booktitle"]), "year": year}
    elif fields.get("journal") and not _ARXIV_JOURNALS.match(fields["journal"]):
        venue = {"kind": "journal", "name": _latex(fields["journal"]), "year": year}
        venue |= {"volume": fields.get("volume"), "number": fields.get("number")}
    elif kind == "techreport" and fields.get("institution"):
        return {"kind": "techreport", "name": _latex(fields["institution"])}
    else:
        return None
    venue |= {
        "pages": fields.get("pages", "").replace("--", "–"),
        "publisher": fields.get("publisher"),
    }
    return {k: (_latex(v) if isinstance(v, str) else v) for k, v in venue.items() if v}


def record(key: str, entry: Any, *, field_name: str, tags: list[str]) -> dict[str, Any]:
    """A registry entry (without id) from one pybtex entry; fields it lacks are left out."""
    fields = {k.lower(): str(v) for k, v in entry.fields.items()}
    persons = entry.persons.get("author", [])
    authors = [_person(p) for p in persons]
    et_al = bool(authors) and authors[-1].lower() == "others"
    authors = [a for a in authors if a.lower() != "others"]
    year_text = re.sub(r"\D", "", fields.get("year", ""))[:4]
    year = int(year_text) if year_text else None
    arxiv = _arxiv(fields)
    date = None
    if arxiv:  # the paper's year is its first version's, the venue keeps the published year
        a_year, a_month = arxiv_year_month(arxiv)
        year, date = a_year, f"{a_year}-{a_month:02d}"
    doi = re.sub(
        r"^(?:https?://)?(?:dx\.)?doi\.org/", "", fields.get("doi", "").strip(), flags=re.I
    )
    abstract = _latex(fields.get("abstract", ""))
    return {
        "title": _latex(fields.get("title", "")),
        "authors": authors,
        "et_al": True if et_al else None,
        "year": year,
        "date": date,
        "venue": _venue(entry.type.lower(), fields, int(year_text) if year_text else None),
        "field": field_name,
        "tags": sorted({t.lower() for t in tags}),
        "aliases": [],
        "arxiv": arxiv,
        "doi": doi.lower() if DOI_RE.match(doi) else None,
        "citekey": key if CITEKEY_RE.match(key) else None,
        "summary": f"(BibTeX abstract) {abstract}" if abstract else "(imported from BibTeX)",
        "key_points": [],
        "claims": [],
    }


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def identities(arxiv: str | None, doi: str | None, title: str) -> set[str]:
    """What makes two records the same work: arXiv id, DOI (any case), normalised title."""
    out = {f"title:{_squash(title)}"} if _squash(title) else set()
    if arxiv:
        out.add(f"arxiv:{arxiv}")
    if doi:
        out.add(f"doi:{doi.lower()}")
    return out


def parse(path: Path) -> list[tuple[str, Any]]:
    from pybtex.database import parse_file
    from pybtex.exceptions import PybtexError

    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    try:
        data = parse_file(str(path), bib_format="bibtex")
    except PybtexError as exc:
        raise UsageError(f"{path}: {preview(exc, 300)}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    return list(data.entries.items())


def import_bib(
    path: Path, registry: Registry, *, field_name: str = "general", tags: list[str] | None = None
) -> Report:
    report = Report()
    records: list[tuple[str, dict[str, Any]]] = []
    by_identity: dict[str, dict[str, Any]] = {}
    for key, entry in parse(path):
        rec = record(key, entry, field_name=field_name, tags=tags or [])
        ids = identities(rec["arxiv"], rec["doi"], rec["title"])
        first = next((by_identity[i] for i in ids if i in by_identity), None)
        if first is not None:
            for name, value in rec.items():  # the first entry wins; this one fills its gaps
                if first.get(name) in (None, "", []) and value not in (None, "", []):
                    first[name] = value
            report.merged.append({"key": key, "into": first["_key"], "why": "same work in file"})
        else:
            rec["_key"] = key
            records.append((key, rec))
            first = rec
        for i in ids:
            by_identity.setdefault(i, first)
    known: dict[str, Paper] = {}
    for p in registry.papers:
        for i in identities(p.arxiv, p.doi, p.title):
            known.setdefault(i, p)
    fmt = config.get("citekey_format")
    taken = taken_keys(registry, fmt)
    used_ids = {p.id for p in registry.papers}
    header = f"# Imported by papercli from {path.name}; edit freely.\n"
    for key, rec in records:
        rec.pop("_key")
        ids = identities(rec["arxiv"], rec["doi"], rec["title"])
        existing = next((known[i] for i in sorted(ids) if i in known), None)
        if existing is not None:
            _merge_into(existing, rec, key, report)
            continue
        if rec["citekey"] in taken:
            rec["citekey"] = None  # a key the registry already uses: make a new one
        slug = _free_slug(propose_slug(rec["title"]), used_ids, registry)
        try:
            target = create_paper(
                rec, registry, slug=slug, header=header, what=f"entry '{key}'", taken=taken
            )
        except PapercliError as exc:
            report.skipped.append({"key": key, "why": str(exc)})
            continue
        used_ids.add(target.stem)
        report.added.append({"key": key, "id": target.stem, "file": str(target)})
    return report


def _free_slug(base: str, used: set[str], registry: Registry) -> str:
    """`base`, or base-2, base-3 …: the first that no paper, alias or file uses."""

    def taken(slug: str) -> bool:
        try:
            registry.get(slug)
        except UsageError:
            return slug in used or (paths.user_registry() / f"{slug}.yaml").exists()
        return True

    slug, n = base, 1
    while taken(slug):
        n += 1
        slug = f"{base}-{n}"
    return slug


def _merge_into(paper: Paper, rec: dict[str, Any], key: str, report: Report) -> None:
    """An entry already in the registry: a user paper gains the DOI/key it lacks; else skip."""
    gains = {
        name: rec[name] for name in ("doi", "citekey") if rec[name] and not getattr(paper, name)
    }
    if not gains or not is_user_paper(paper) or paper.source is None:
        report.skipped.append({"key": key, "why": f"already in the registry as '{paper.id}'"})
        return
    text = paper.source.read_text(encoding="utf-8")
    for name, value in gains.items():
        text = set_field(text, name, value)
    try:
        write_checked(paper.source, text)
    except PapercliError as exc:
        report.skipped.append({"key": key, "why": str(exc)})
        return
    report.merged.append({"key": key, "into": paper.id, "why": "added " + ", ".join(gains)})
