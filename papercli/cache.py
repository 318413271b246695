"""What `fetch` stores under $PAPERCLI_HOME: arXiv metadata (JSON per paper) and PDFs.

Light commands read it to show the abstract and the PDF's path; nothing here talks to the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from papercli import paths
from papercli.registry import Paper


def metadata_path(paper_id: str) -> Path:
    return paths.cache_dir() / "arxiv" / f"{paper_id}.json"


def pdf_path(paper_id: str) -> Path:
    return paths.pdf_dir() / f"{paper_id}.pdf"


def read_metadata(paper_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(metadata_path(paper_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not fetched yet, or a damaged cache file: treat as absent


def write_metadata(paper_id: str, data: dict[str, Any]) -> None:
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
