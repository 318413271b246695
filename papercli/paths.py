"""Where papercli keeps its state. PAPERCLI_HOME moves all of it (tests point it at a temp dir)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def home() -> Path:
    env = os.environ.get("PAPERCLI_HOME")
    if env:
        return Path(env).expanduser()
    # platformdirs is only needed when no override is set; import it late to keep start-up lean.
    from platformdirs import user_data_dir

    return Path(user_data_dir("papercli", appauthor=False))


def bundled_registry() -> Path:
    """The registry shipped with papercli: inside the wheel, or at the top of a source checkout."""
    in_wheel = PACKAGE_DIR / "_registry" / "papers"
    if in_wheel.is_dir():
        return in_wheel
    return PACKAGE_DIR.parent / "registry" / "papers"


def user_registry() -> Path:
    return home() / "registry" / "papers"


def cache_dir() -> Path:
    return home() / "cache"


def pdf_dir() -> Path:
    return home() / "pdfs"


def runs_dir() -> Path:
    return home() / "runs"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file beside `path`, then rename: a crash never leaves a half file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
