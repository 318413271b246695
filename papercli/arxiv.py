"""arXiv client: Atom metadata queries (requests + feedparser) and resumable PDF downloads.

Politeness follows arXiv's API terms: one connection at a time, at least 3 s between calls
(PAPERCLI_ARXIV_DELAY), ids batched up to 100 per query, timeouts on every request, and retries
with exponential backoff on 429/5xx/connection errors that honour Retry-After.
Endpoints come from PAPERCLI_ARXIV_API_URL and PAPERCLI_ARXIV_PDF_URL so tests use a local server.
"""

from __future__ import annotations

import email.utils
import os
import re
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import feedparser
import requests

from papercli import __version__
from papercli.errors import PapercliError, UsageError, preview
from papercli.registry import normalize_arxiv

DEFAULT_API_URL = "https://export.arxiv.org/api/query"
DEFAULT_PDF_URL = "https://arxiv.org/pdf"
BATCH_SIZE = 100  # arXiv's documented id_list limit for one call
USER_AGENT = f"papercli/{__version__} (https://github.com/papercli/papercli; paper registry tool)"
ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV_NS = "{http://arxiv.org/schemas/atom}"
MAX_RETRY_AFTER = 300.0  # refuse to sleep longer than this on a server's say-so
PDF_TAIL = 1024  # readers look for a PDF's '%%EOF' in its last 1024 bytes
T = TypeVar("T")
# a transfer that broke off: retried, and a download resumes where it stopped
BROKEN_OFF = (
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class ArxivError(PapercliError):
    """arXiv could not give what was asked (network failure after retries, bad response)."""


class ArxivRejected(UsageError):
    """arXiv answered with its Atom error entry (HTTP 400): the id is malformed."""


class ArxivUnreadable(ArxivError):
    """arXiv answered with something that is not an Atom feed (an HTML error page, garbage).
    Retried like a 5xx: such pages come from overloaded front ends."""


@dataclass
class Settings:
    api_url: str = DEFAULT_API_URL
    pdf_url: str = DEFAULT_PDF_URL
    delay: float = 3.0  # seconds between calls
    timeout: float = 30.0  # seconds, connect and read
    retries: int = 4
    backoff: float = 2.0  # first retry waits this long, then doubles

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ

        def number(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise UsageError(f"{name} must be a number, got '{preview(raw)}'") from None
            if value < 0 or not value < float("inf"):
                raise UsageError(f"{name} must be a finite number >= 0, got '{preview(raw)}'")
            return value

        def url(name: str, default: str) -> str:
            raw = env.get(name) or default
            try:
                parts = urllib.parse.urlsplit(raw)
                ok = parts.scheme in ("http", "https") and bool(parts.hostname)
                parts.port  # noqa: B018 - raises ValueError for a port that is not a number
            except ValueError:
                ok = False
            if not ok:
                raise UsageError(f"{name} must be an http:// or https:// URL, got '{preview(raw)}'")
            return raw

        from papercli import config  # the config file fills in what the environment does not

        return cls(
            api_url=url("PAPERCLI_ARXIV_API_URL", config.get("arxiv_api_url")),
            pdf_url=url("PAPERCLI_ARXIV_PDF_URL", config.get("arxiv_pdf_url")).rstrip("/"),
            delay=number("PAPERCLI_ARXIV_DELAY", 3.0),
            timeout=number("PAPERCLI_ARXIV_TIMEOUT", 30.0),
            retries=int(number("PAPERCLI_ARXIV_RETRIES", 4)),
            backoff=number("PAPERCLI_ARXIV_BACKOFF", 2.0),
        )


@dataclass
class Author:
    name: str
    affiliations: list[str] = field(default_factory=list)


@dataclass
class Entry:
    """One paper as the arXiv API describes it."""

    arxiv_id: str  # without version
    version: str  # 'v2'
    title: str
    authors: list[Author]
    abstract: str
    published: str
    updated: str
    primary_category: str
    categories: list[str]
    doi: str | None = None
    journal_ref: str | None = None
    comment: str | None = None
    abs_url: str = ""
    pdf_url: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean(text: str | None) -> str:
    """arXiv wraps titles and abstracts over several lines: collapse all whitespace."""
    return " ".join((text or "").split())


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Client:
    """A polite arXiv client. One instance spaces all its calls by `settings.delay`."""

    def __init__(
        self,
        settings: Settings | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings or Settings.from_env()
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self._sleep = sleep
        self._last_call: float | None = None
        self.api_calls = 0  # for `fetch` to report, and tests to assert batching

    # ------------------------------------------------------------------ transport
    def _wait_turn(self) -> None:
        if self._last_call is not None:
            wait = self.settings.delay - (time.monotonic() - self._last_call)
            if wait > 0:
                self._sleep(wait)
        self._last_call = time.monotonic()

    def request(
        self,
        url: str,
        *,
        params: dict | None = None,
        headers: dict | None = None,
        stream: bool = False,
        what: str = "arXiv",
    ) -> requests.Response:
        """GET with rate limiting, timeouts and retries. Returns the final response (any status
        that is not retryable); raises ArxivError once retries are spent."""
        return self.request_read(
            url, lambda r: r, params=params, headers=headers, stream=stream, what=what
        )

    def request_read(
        self,
        url: str,
        read: Callable[[requests.Response], T],
        *,
        params: dict | None = None,
        headers: dict | None = None,
        stream: bool = False,
        what: str = "arXiv",
    ) -> T:
        """`request`, then `read` the response inside the same retry loop: a body that breaks
        off or that `read` finds unreadable (ArxivUnreadable) is retried like a 5xx."""
        attempts = self.settings.retries + 1
        last_problem = ""
        for attempt in range(attempts):
            self._wait_turn()
            wait = self.settings.backoff * 2**attempt
            try:
                response = self.session.get(
                    url,
                    params=params,
                    headers=headers,
                    stream=stream,
                    timeout=self.settings.timeout,
                )
            except requests.Timeout:
                last_problem = f"timed out after {self.settings.timeout:g} s"
            except BROKEN_OFF as exc:
                last_problem = f"connection failed ({type(exc).__name__})"
            except requests.RequestException as exc:  # a bad URL, too many redirects: no retry
                raise ArxivError(f"{what}: {preview(exc, 200)}") from None
            else:
                if response.status_code != 429 and response.status_code < 500:
                    try:
                        return read(response)
                    except ArxivUnreadable as exc:
                        last_problem = str(exc)
                    except BROKEN_OFF:
                        last_problem = "connection broke off while reading the response"
                else:
                    last_problem = f"HTTP {response.status_code}"
                    retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
                    response.close()
                    if retry_after is not None:
                        if retry_after > MAX_RETRY_AFTER:
                            raise ArxivError(
                                f"{what} asks to retry after {retry_after:.0f} s "
                                f"({last_problem}); try again later"
                            )
                        wait = max(wait, retry_after)
            if attempt + 1 < attempts:
                self._sleep(wait)
        raise ArxivError(f"{what} failed after {attempts} attempts: {last_problem}")

    # ------------------------------------------------------------------ metadata
    def fetch(self, ids: Iterable[str]) -> tuple[dict[str, Entry], list[str]]:
        """Metadata for many ids, batched. Returns ({id: entry}, ids arXiv had no entry for).

        Ids may carry a version ('2010.11929v2'); results are keyed by the id as asked."""
        asked = list(dict.fromkeys(ids))
        found: dict[str, Entry] = {}
        missing: list[str] = []
        for start in range(0, len(asked), BATCH_SIZE):
            batch = asked[start : start + BATCH_SIZE]
            entries = self._query(batch)
            by_id = {e.arxiv_id: e for e in entries}
            by_versioned = {e.arxiv_id + e.version: e for e in entries}
            for wanted in batch:
                norm = normalize_arxiv(wanted)
                key = norm[0] if norm else wanted
                entry = by_versioned.get(wanted) or by_id.get(key)
                if entry is None:
                    missing.append(wanted)
                else:
                    found[wanted] = entry
        return found, missing

    def _query(self, ids: list[str]) -> list[Entry]:
        params = {"id_list": ",".join(ids), "start": 0, "max_results": len(ids)}
        self.api_calls += 1
        return self.request_read(
            self.settings.api_url,
            lambda r: parse_feed(r.content, r.status_code),
            params=params,
            what="arXiv API",
        )

    # ------------------------------------------------------------------ PDFs
    def pdf_url_for(self, arxiv_id: str) -> str:
        return f"{self.settings.pdf_url}/{arxiv_id}"

    def download(
        self,
        url: str,
        dest: Path,
        *,
        force: bool = False,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> str:
        """Download a PDF to `dest`. Returns 'cached' (already complete) or 'downloaded'.

        Streams into `<dest>.part`, resumes an interrupted transfer with a Range request, checks
        the `%PDF-` signature and completeness (see `_check_complete`), and only then renames
        onto `dest`. An incomplete transfer keeps its `.part` for the next attempt or call."""
        part = dest.with_name(dest.name + ".part")
        if dest.is_file() and not force:
            if _has_trailer(dest):
                return "cached"
            if _is_pdf(dest):  # cut short before completeness was checked: resume it
                os.replace(dest, part)
            else:
                dest.unlink()
        dest.parent.mkdir(parents=True, exist_ok=True)
        if force and part.exists():
            part.unlink()
        attempts = self.settings.retries + 1
        problem = ""
        for attempt in range(attempts):
            try:
                self._download_once(url, part, progress)
            except (*BROKEN_OFF, requests.Timeout, _ShortBody) as exc:
                # keep the .part: the next attempt resumes where this one stopped
                problem = str(exc) or type(exc).__name__
                if attempt + 1 < attempts:
                    self._sleep(self.settings.backoff * 2**attempt)
                continue
            os.replace(part, dest)
            return "downloaded"
        kept = f"; {part.stat().st_size} bytes kept in {part}" if part.exists() else ""
        raise ArxivError(f"download of {url} failed after {attempts} attempts: {problem}{kept}")

    def _download_once(
        self, url: str, part: Path, progress: Callable[[int, int | None], None] | None
    ) -> None:
        """One request: append to `part`; returns when it is complete, else raises."""
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else None
        response = self.request(url, headers=headers, stream=True, what=f"PDF download {url}")
        with response:
            if response.status_code == 416 and have:
                # nothing left to send: the .part may already hold the whole file
                _check_complete(part, url, _range_total(response))
                return
            if response.status_code not in (200, 206):
                raise ArxivError(f"PDF download {url} answered HTTP {response.status_code}")
            if response.status_code == 200:
                have = 0  # the server ignored our Range: start over
            total = _expected_total(response, have)
            mode = "ab" if have else "wb"
            received = have
            first = not have
            with open(part, mode) as fh:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    if first:
                        if chunk.lstrip()[:5] != b"%PDF-":
                            fh.close()
                            part.unlink()
                            kind = response.headers.get("Content-Type", "unknown type")
                            raise ArxivError(
                                f"{url} did not return a PDF (got {kind}); nothing was saved"
                            )
                        first = False
                    fh.write(chunk)
                    received += len(chunk)
                    if progress:
                        progress(received, total)
            if total is not None and received < total:
                raise _ShortBody(f"connection closed after {received} of {total} bytes")
            if received == 0:
                raise _ShortBody("empty response")
        _check_complete(part, url, total)


class _ShortBody(Exception):
    """The server closed the connection before sending the whole file."""


def _range_total(response: requests.Response) -> int | None:
    """The whole file's size from 'Content-Range: bytes 0-9/10' or 'bytes */10'."""
    m = re.match(r"bytes (?:\d+-\d+|\*)/(\d+)", response.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _expected_total(response: requests.Response, offset: int) -> int | None:
    if response.status_code == 206:
        total = _range_total(response)
        if total is not None:
            return total
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _is_pdf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(1024).lstrip()[:5] == b"%PDF-"
    except OSError:
        return False


def _has_trailer(path: Path) -> bool:
    """Whether a PDF ends as only a whole one does: 'startxref', the byte offset of the last
    cross-reference section (inside the file), then '%%EOF' in the last 1024 bytes."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.seek(max(0, size - PDF_TAIL))
            tail = fh.read()
    except OSError:
        return False
    m = re.search(rb"startxref\s+(\d{1,20})\s+%%EOF[\s\x00]*\Z", tail)
    return m is not None and 0 < int(m.group(1)) < size


def _check_complete(part: Path, url: str, declared: int | None) -> None:
    """A PDF is complete when its byte count matches the length the server declared, or, with
    no length declared, when its trailer says so. Otherwise the .part stays to be resumed."""
    if not _is_pdf(part):
        part.unlink(missing_ok=True)
        raise ArxivError(f"{url} did not return a PDF; nothing was saved")
    size = part.stat().st_size
    if declared is not None and size == declared:
        return
    if not _has_trailer(part):
        what = f"{size} of {declared} bytes" if declared else f"{size} bytes with no length given"
        raise _ShortBody(f"incomplete PDF ({what} and no %%EOF/startxref trailer)")


def _unreadable(body: bytes, otherwise: str) -> ArxivUnreadable:
    """What a response that is not an Atom feed looks like, in a few words."""
    head = body[:512].lstrip().lower()
    if not head:
        detail = "an empty response"
    elif head.startswith(b"<!doctype html") or b"<html" in head:
        detail = "an HTML page"
    else:
        detail = otherwise
    return ArxivUnreadable(f"arXiv returned something papercli could not read ({detail})")


def _atom_root(body: bytes) -> ET.Element:
    """The <feed> element of an Atom document; ArxivUnreadable for anything else."""
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, ValueError) as exc:
        raise _unreadable(body, f"malformed XML: {preview(exc, 120)}") from None
    if root.tag != f"{ATOM}feed":
        raise _unreadable(body, f"XML <{preview(root.tag, 60)}>, not an Atom feed")
    return root


def parse_feed(body: bytes, status: int = 200) -> list[Entry]:
    """The entries of an arXiv API response. Raises ArxivRejected for arXiv's Atom error entry,
    ArxivUnreadable for a body that is not an Atom feed, ArxivError for other HTTP errors."""
    try:
        root = _atom_root(body)
    except ArxivUnreadable:
        if status != 200:  # a 4xx page: the status says more than the body
            raise ArxivError(f"arXiv API answered HTTP {status}") from None
        raise
    feed = feedparser.parse(body)
    error = next((e for e in feed.entries if "/api/errors" in e.get("id", "")), None)
    if error is not None:
        raise ArxivRejected(_rejection_message(error.get("id", ""), _clean(error.get("summary"))))
    if status != 200:
        raise ArxivError(f"arXiv API answered HTTP {status}")
    authors = _authors_by_entry(root)
    return [_entry(e, authors.get(_clean(e.get("id", "")), [])) for e in feed.entries]


def _rejection_message(error_id: str, summary: str) -> str:
    """'…/api/errors#incorrect_id_format_for_abc' + 'incorrect id format for abc'
    -> "arXiv rejected id 'abc': incorrect id format"."""
    m = re.search(r"^(.*) for (.+)$", summary)
    if m:
        return f"arXiv rejected id '{preview(m.group(2))}': {preview(m.group(1))}"
    return f"arXiv rejected the request: {preview(summary or error_id, 200)}"


def _split_versioned(url_or_id: str) -> tuple[str, str]:
    text = re.sub(r"^https?://arxiv\.org/abs/", "", url_or_id)
    norm = normalize_arxiv(text)
    if norm:
        return norm[0], norm[1] or ""
    return text, ""


def _authors_by_entry(root: ET.Element) -> dict[str, list[Author]]:
    """Authors in order with their affiliations. feedparser keeps only one affiliation per
    entry, so read them from the XML directly (the same body feedparser saw)."""
    out: dict[str, list[Author]] = {}
    for entry in root.iter(f"{ATOM}entry"):
        entry_id = _clean(entry.findtext(f"{ATOM}id"))
        authors = []
        for a in entry.findall(f"{ATOM}author"):
            name = _clean(a.findtext(f"{ATOM}name"))
            affs = [_clean(x.text) for x in a.findall(f"{ARXIV_NS}affiliation") if _clean(x.text)]
            if name:
                authors.append(Author(name=name, affiliations=affs))
        out[entry_id] = authors
    return out


def _entry(e: Any, authors: list[Author]) -> Entry:
    arxiv_id, version = _split_versioned(e.get("id", ""))
    links = {link.get("title") or link.get("rel"): link.get("href") for link in e.get("links", [])}
    if not authors:  # XML could not be re-read: fall back to feedparser's names
        authors = [Author(name=_clean(a.get("name"))) for a in e.get("authors", [])]
    return Entry(
        arxiv_id=arxiv_id,
        version=version,
        title=_clean(e.get("title")),
        authors=authors,
        abstract=_clean(e.get("summary")),
        published=e.get("published", ""),
        updated=e.get("updated", ""),
        primary_category=(e.get("arxiv_primary_category") or {}).get("term", ""),
        categories=[t["term"] for t in e.get("tags", []) if t.get("term")],
        doi=e.get("arxiv_doi"),
        journal_ref=_clean(e.get("arxiv_journal_ref")) or None,
        comment=_clean(e.get("arxiv_comment")) or None,
        abs_url=links.get("alternate") or f"https://arxiv.org/abs/{arxiv_id}{version}",
        pdf_url=links.get("pdf") or f"https://arxiv.org/pdf/{arxiv_id}{version}",
    )
