"""`add --doi`: a work's metadata from the Crossref REST API, as a registry entry.

GET {crossref_url}/{doi} (default https://api.crossref.org/works, setting `crossref_url` or
PAPERCLI_CROSSREF_URL) with a User-Agent that names papercli and, when set, a contact address
(setting `mailto`): Crossref serves such "polite" clients from a more reliable pool. Transport
(timeouts, retries with backoff, Retry-After) is the arXiv client's, without arXiv's 3 s spacing.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from typing import Any

from papercli import __version__, config
from papercli.arxiv import ArxivError, ArxivUnreadable, Client, Settings
from papercli.errors import UsageError, preview
from papercli.registry import DOI_RE

# Crossref work types -> registry venue kinds
_VENUE_KIND = {
    "proceedings-article": "conference",
    "journal-article": "journal",
    "report": "techreport",
}
_FIELD_BY_WORD = (("vision", "vision"), ("image", "vision"), ("language", "language"))


def normalize_doi(text: str) -> str:
    """'https://doi.org/10.1109/CVPR.2016.90', 'doi:10.…' -> '10.1109/cvpr.2016.90' (DOIs are
    case-insensitive; lowercase lets duplicates meet)."""
    t = text.strip()
    t = re.sub(r"^(?:https?://)?(?:dx\.)?doi\.org/", "", t, flags=re.I)
    t = re.sub(r"^doi:\s*", "", t, flags=re.I)
    if not DOI_RE.match(t):
        raise UsageError(f"'{preview(text)}' is not a DOI (10.NNNN/…, doi:…, or a doi.org URL)")
    return t.lower()


def user_agent() -> str:
    mailto = config.get("mailto")
    contact = f"; mailto:{mailto}" if mailto else ""
    return f"papercli/{__version__} (https://github.com/papercli/papercli{contact})"


def client() -> Client:
    settings = dataclasses.replace(Settings.from_env(), delay=0.0)
    c = Client(settings)
    c.session.headers["User-Agent"] = user_agent()
    return c


def fetch_work(doi: str, http: Client | None = None) -> dict[str, Any]:
    """Crossref's `message` for one DOI; a DOI Crossref does not know is a UsageError."""
    http = http or client()
    base = config.get("crossref_url").rstrip("/")
    url = f"{base}/{urllib.parse.quote(doi, safe='/:;()')}"

    def read(response) -> dict[str, Any]:
        if response.status_code == 404:
            raise UsageError(f"Crossref has no work with DOI {doi}")
        if response.status_code != 200:
            raise ArxivError(f"Crossref answered HTTP {response.status_code} for DOI {doi}")
        try:
            data = response.json()
            message = data["message"]
        except (ValueError, KeyError, TypeError):
            raise ArxivUnreadable("Crossref returned something papercli could not read") from None
        if not isinstance(message, dict):
            raise ArxivUnreadable("Crossref returned a record without a work")
        return message

    return http.request_read(url, read, headers={"Accept": "application/json"}, what="Crossref")


def _first(value: Any) -> str:
    """Crossref gives most strings as one-element lists."""
    if isinstance(value, list):
        value = value[0] if value else ""
    return " ".join(str(value or "").split())


def _date(work: dict[str, Any]) -> tuple[int | None, str]:
    for key in ("published-print", "published-online", "issued", "created"):
        parts = (work.get(key) or {}).get("date-parts") or [[]]
        nums = [int(n) for n in parts[0] if isinstance(n, int)] if parts and parts[0] else []
        if nums:
            date = f"{nums[0]:04d}" + "".join(f"-{n:02d}" for n in nums[1:3])
            return nums[0], date if len(nums) > 1 else ""
    return None, ""


def _text(jats: str) -> str:
    """Crossref abstracts are JATS XML: keep the words."""
    return " ".join(re.sub(r"<[^>]+>", " ", jats).split())


def registry_data(work: dict[str, Any], *, field: str | None, tags: list[str]) -> dict:
    """A registry entry (without id) from a Crossref work."""
    year, date = _date(work)
    authors = [
        " ".join(filter(None, [a.get("given", ""), a.get("family", "")])) or a.get("name", "")
        for a in work.get("author") or []
        if isinstance(a, dict)
    ]
    title = _first(work.get("title"))
    kind = _VENUE_KIND.get(str(work.get("type", "")))
    container = _first(work.get("container-title"))
    publisher = _first(work.get("publisher"))
    venue = None
    if kind == "techreport" and (container or publisher):
        venue = {"kind": kind, "name": container or publisher}  # the institution
    elif kind and container:
        venue = {"kind": kind, "name": container, "year": year, "publisher": publisher}
        if kind == "journal":
            venue |= {"volume": _first(work.get("volume")), "number": _first(work.get("issue"))}
        venue["pages"] = _first(work.get("page"))
        venue = {k: v for k, v in venue.items() if v}
    lowered = (title + " " + container).lower()
    guessed = next((f for word, f in _FIELD_BY_WORD if word in lowered), "general")
    abstract = _text(str(work.get("abstract") or ""))
    return {
        "title": title,
        "authors": authors,
        "year": year,
        "date": date or None,
        "venue": venue,
        "field": field or guessed,
        "tags": sorted({t.lower() for t in tags}),
        "aliases": [],
        "doi": str(work.get("DOI") or "").lower() or None,
        "urls": {"abs": work["URL"]} if isinstance(work.get("URL"), str) else None,
        "summary": f"(Crossref abstract) {abstract}" if abstract else "(no summary yet)",
        "key_points": [],
        "claims": [],
    }
