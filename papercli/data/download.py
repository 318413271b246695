"""Download a data file once, verified by checksum, into papercli's cache (atomic: .part, then rename)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from papercli import __version__, paths
from papercli.errors import PapercliError


def data_cache() -> Path:
    return paths.cache_dir() / "data"


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_verified(url: str, dest: Path, md5: str, *, timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest` unless a file with the right checksum is already there."""
    import requests

    if dest.is_file() and md5sum(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with requests.get(
            url, stream=True, timeout=timeout, headers={"User-Agent": f"papercli/{__version__}"}
        ) as response:
            if response.status_code != 200:
                raise PapercliError(f"download of {url} failed: HTTP {response.status_code}")
            with open(part, "wb") as fh:
                for chunk in response.iter_content(1 << 20):
                    fh.write(chunk)
    except requests.RequestException as exc:
        part.unlink(missing_ok=True)
        raise PapercliError(f"download of {url} failed: {type(exc).__name__}") from None
    got = md5sum(part)
    if got != md5:
        part.unlink()
        raise PapercliError(
            f"{url}: checksum mismatch (md5 {got}, expected {md5}); nothing was kept"
        )
    os.replace(part, dest)
    return dest
