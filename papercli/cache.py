"""What `fetch` stores under $PAPERCLI_HOME: arXiv metadata (JSON per paper) and PDFs.

Light commands read it to show the abstract and the PDF's path; nothing here talks to the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from papercli import paths
from papercli.registry import Paper


def metadata_dir() -> Path:
    return paths.cache_dir() / "arxiv"


def metadata_path(paper_id: str) -> Path:
    return metadata_dir() / f"{paper_id}.json"


def fulltext_dir() -> Path:
    return paths.cache_dir() / "fulltext"


def fulltext_path(paper_id: str) -> Path:
    """The text extracted from the paper's PDF (what `search` indexes)."""
    return fulltext_dir() / f"{paper_id}.txt"


def read_fulltext(paper_id: str) -> str:
    try:
        return fulltext_path(paper_id).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def extract_fulltext(paper_id: str) -> bool:
    """Extract the text of the paper's downloaded PDF for search; False when it has none
    (scanned pages, or a PDF pypdf cannot read: the download itself stays valid)."""
    from pypdf import PdfReader  # lazily: only fetch needs it
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(pdf_path(paper_id))
        text = "\n".join(page.extract_text() or "" for page in reader.pages)
    except (PyPdfError, OSError, ValueError, KeyError, TypeError, RecursionError):
        return False
    text = " ".join(text.split())  # layout whitespace is noise for search
    if not text:
        return False
    paths.atomic_write_text(fulltext_path(paper_id), text)
    return True


def pdf_path(paper_id: str) -> Path:
    return paths.pdf_dir() / f"{paper_id}.pdf"


def read_metadata(paper_id: str) -> dict[str, Any] | None:
    try:
        text = metadata_path(paper_id).read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None  # not fetched yet, or not UTF-8
    import json  # here: show and summary of a paper never fetched skip the import

    try:
        return json.loads(text)
    except ValueError:
        return None  # a damaged cache file: treat as absent


def write_metadata(paper_id: str, data: dict[str, Any]) -> None:
    import json

    paths.atomic_write_text(metadata_path(paper_id), json.dumps(data, indent=2, ensure_ascii=False))


def extras_for(paper: Paper) -> dict[str, str]:
    """Sections for summary/show: the cached abstract, its version and the local PDF."""
    extras: dict[str, str] = {}
    meta = read_metadata(paper.id)
    if meta:
        if meta.get("abstract"):
            extras["Abstract (arXiv)"] = meta["abstract"]
        if meta.get("version"):
            extras["arXiv version"] = f"{meta['version']} (updated {meta.get('updated', '?')[:10]})"
    pdf = pdf_path(paper.id)
    if pdf.is_file():
        extras["PDF"] = str(pdf)
    return extras
